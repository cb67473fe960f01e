package io.tether

import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit

/**
 * Run in a child JVM by [ProcessTest]: opens a session through the fault proxy, waits for the
 * test to cut it and for the reconnection (so Tether's threads have called into this JVM as
 * strategy, listener and subscriber), then closes it and returns from main without
 * System.exit: the JVM must then end by itself.
 *
 * Arguments: url, then `shutdown` (call Tether.shutdown() after close) or `close-only`.
 */
object ExitProbe {
    @JvmStatic
    fun main(args: Array<String>) {
        val url = args[0]
        val reconnected = CountDownLatch(1)
        val received = CountDownLatch(1)
        val session = Tether.sessions()
            .principal("control").password("password")
            .reconnectionStrategy { attempt -> attempt.startAfter(java.time.Duration.ofMillis(10)) }
            .listener { change ->
                if (change.oldState == SessionState.RECOVERING_RECONNECT && change.newState == SessionState.CONNECTED_ACTIVE) {
                    reconnected.countDown()
                }
            }
            .open(url)
        session.subscribe("probe/value") { received.countDown() }
        println("open ${session.sessionId}")
        check(reconnected.await(60, TimeUnit.SECONDS)) { "no reconnection" }
        session.publish("probe/value", "after the cut")
        check(received.await(60, TimeUnit.SECONDS)) { "no update" }
        println("reconnected ${session.sessionId}")
        session.close()
        if (args.getOrNull(1) == "shutdown") Tether.shutdown()
        println("closed ${session.state}")
    }
}
