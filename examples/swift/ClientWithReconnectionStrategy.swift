// The seed's Swift reconnection example, ported to Tether (the `Tether` package in
// bindings/uniffi/swift). NOT compiled in this repository's CI: there is no Swift toolchain
// there. See examples/swift/README.md for how to build and run it on macOS or Linux.
//
// An exponential backoff strategy that schedules `attempt.start()` on the main queue, a listener
// that prints state changes, and a configuration with a 10-minute reconnection timeout.

import Foundation
import Tether

final class ExponentialBackoffReconnectionStrategy: ReconnectionStrategy, @unchecked Sendable {

    // Strategies are called on a Tether thread; the count is guarded because `onSuccess` comes
    // on another call.
    private let lock = NSLock()
    private var attemptCount: Int = 0

    func performReconnection(attempt: ReconnectionAttempt) {

        // limit the maximum delay time between reconnection attempts to 60 seconds
        let maximumAttemptInterval = 60.0

        // compute delay for exponential backoff on the number of attempts so far
        lock.lock()
        attemptCount += 1
        let count = attemptCount
        lock.unlock()
        let delay = min(pow(2.0, Double(count)) * 0.1, maximumAttemptInterval)

        // schedule asynchronous execution
        DispatchQueue.main.asyncAfter(deadline: .now() + delay) {
            print("Attempting to reconnect now")
            _ = attempt.start()
        }
    }

    // Reconnected: the next outage starts from the first delay again.
    func onSuccess(attempt: AttemptInfo) {
        lock.lock()
        attemptCount = 0
        lock.unlock()
    }

    // `performReconnection` follows (while time remains) and counts the attempt.
    func onFailure(attempt: AttemptInfo, reason: CloseReason) {}
}

final class PrintingListener: SessionListener, @unchecked Sendable {
    let strategy: ExponentialBackoffReconnectionStrategy

    init(strategy: ExponentialBackoffReconnectionStrategy) {
        self.strategy = strategy
    }

    func onStateChanged(change: StateChange) {
        let reason = change.reason.map { " (\($0))" } ?? ""
        print("Session state changed from \(change.oldState) to \(change.newState)\(reason)")
    }
}

// Opens a session off the main thread (opening blocks until connected) and hands the result to
// `completion` on the main queue, like the seed's `PTDiffusionSession.open(with:configuration:)`.
func openSession(url: String, configuration: SessionConfiguration,
          completion: @escaping (Session?, Error?) -> Void) {
    DispatchQueue.global().async {
        do {
            let session = try Session.open(url: url, configuration: configuration)
            DispatchQueue.main.async { completion(session, nil) }
        } catch {
            DispatchQueue.main.async { completion(nil, error) }
        }
    }
}

var session: Session?

func connectToServer(url: String) {
    let strategy = ExponentialBackoffReconnectionStrategy()
    var configuration = SessionConfiguration()
    configuration.principal = "control"
    configuration.credentials = "password"

    // Set the maximum amount of time we'll try and reconnect for to 10 minutes
    configuration.reconnectionTimeout = 10.0 * 60.0

    // Set the reconnection strategy to be used
    configuration.reconnectionStrategy = strategy
    configuration.listener = PrintingListener(strategy: strategy)

    // Use the configuration to open a new session...
    openSession(url: url, configuration: configuration) { (newSession, error) in

        // Check error is `nil`, then use session as required.
        // Ensure to maintain a strong reference to the session beyond the lifetime
        // of this callback, for example by assigning it to a variable.
        guard let newSession = newSession else {
            print("Failed to open session: \(error.map { "\($0)" } ?? "unknown error")")
            exit(1)
        }
        session = newSession

        // At this point we now have a connected session.
        print("Session created (state=\(newSession.state()), id=\(newSession.sessionId()))")
    }
}

let url = CommandLine.arguments.dropFirst().first ?? "ws://127.0.0.1:8080"
let seconds = Double(CommandLine.arguments.dropFirst(2).first ?? "") ?? 60

connectToServer(url: url)

// Run for a while, then close the session and stop Tether's threads.
DispatchQueue.main.asyncAfter(deadline: .now() + seconds) {
    session?.close()
    _ = shutdown(timeout: 5)
    exit(0)
}
dispatchMain()
