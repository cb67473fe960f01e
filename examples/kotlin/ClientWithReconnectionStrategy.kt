// Tether from Kotlin: a session that survives lost connections, with a built-in exponential
// backoff, a state listener and a subscription as lambdas. Every line typed on standard input
// is published to `examples/kotlin/chat` and comes back through the subscription, also across a
// reconnection; end of input closes the session.
//
// Build and run: see examples/kotlin/README.md. The class is `ClientWithReconnectionStrategyKt`.
//   java -cp <tether.jar>:<jna.jar>:<kotlin-stdlib.jar>:. ClientWithReconnectionStrategyKt ws://127.0.0.1:8080

import io.tether.SessionState
import io.tether.Strategies
import io.tether.Tether
import io.tether.text
import java.time.Duration

fun main(args: Array<String>) {
    val url = args.firstOrNull() ?: "ws://127.0.0.1:8080"

    val session = Tether.sessions()
        .principal("control")
        .password("password")
        .reconnectionTimeout(Duration.ofMinutes(10))
        .reconnectionStrategy(
            Strategies.exponentialBackoff(
                initial = Duration.ofMillis(100),
                maxDelay = Duration.ofSeconds(60),
                maxAttempts = 25,
            ),
        )
        .listener { change ->
            val reason = change.reason?.let { " ($it)" } ?: ""
            println("state ${change.oldState} -> ${change.newState}$reason")
            if (change.oldState == SessionState.RECOVERING_RECONNECT && change.newState == SessionState.CONNECTED_ACTIVE) {
                println("reconnected")
            }
        }
        .open(url)

    session.use {
        println("session ${it.sessionId} is ${it.state}")
        it.subscribe("examples/kotlin/chat") { update ->
            println("update ${update.topic} = ${update.text}${if (update.snapshot) " (snapshot)" else ""}")
        }
        println("type lines to publish them; end of input closes the session")
        generateSequence(::readlnOrNull).forEach { line -> it.publish("examples/kotlin/chat", line) }
    }
    println("closed: ${session.closeReason}")
    Tether.shutdown()
}
