package io.tether

import io.tether.SessionState.CONNECTED_ACTIVE
import io.tether.SessionState.CONNECTING
import io.tether.SessionState.RECOVERING_RECONNECT
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import java.net.ServerSocket
import java.time.Duration
import java.util.concurrent.LinkedBlockingQueue

/** Drains and restarts of a real server (SIGTERM) reach strategies with the reason and the
 * server's retry-after hint; fallback URLs for opening and resuming. */
class DrainTest {
    private fun factory() = Tether.sessions().principal("control").password("password")

    /** What a strategy was told about an attempt. */
    private data class Facts(val number: Int, val reason: CloseReason, val retryAfter: Duration?)

    private fun ReconnectionAttempt.facts() = Facts(number(), lastReason(), retryAfter())

    @Test
    fun `a drain reaches strategies with server_draining and the hint, a built-in handed the attempt honours it, both sessions come back`() {
        val hint = Duration.ofMillis(700) // not the server's default (1 s)
        RestartableServer(hint.toMillis()).use { server ->
            // A strategy of our own: waits what the server asked for (a little when it asked nothing).
            val own = LinkedBlockingQueue<Facts>()
            val ownStrategy = object : ReconnectionStrategy {
                override fun performReconnection(attempt: ReconnectionAttempt) {
                    own.add(attempt.facts())
                    attempt.startAfter(attempt.retryAfter() ?: Duration.ofMillis(50))
                }
                override fun onSuccess(attempt: AttemptInfo) {}
                override fun onFailure(attempt: AttemptInfo, reason: CloseReason) {}
            }
            // One that only looks, and hands the decision to the default strategy.
            val delegated = LinkedBlockingQueue<Facts>()
            val builtIn = Strategies.defaultStrategy()
            val delegating = object : ReconnectionStrategy {
                override fun performReconnection(attempt: ReconnectionAttempt) {
                    delegated.add(attempt.facts())
                    builtIn.performReconnection(attempt)
                }
                override fun onSuccess(attempt: AttemptInfo) = builtIn.onSuccess(attempt)
                override fun onFailure(attempt: AttemptInfo, reason: CloseReason) = builtIn.onFailure(attempt, reason)
            }
            val ownListener = RecordingListener()
            val delegatingListener = RecordingListener()
            val a = factory().reconnectionStrategy(ownStrategy).listener(ownListener).open(server.url)
            val b = factory().reconnectionStrategy(delegating).listener(delegatingListener).open(server.url)
            val ids = a.sessionId to b.sessionId

            server.restart()

            for (listener in listOf(ownListener, delegatingListener)) {
                assertEquals(change(CONNECTING, CONNECTED_ACTIVE), listener.next())
                assertEquals(change(CONNECTED_ACTIVE, RECOVERING_RECONNECT, CloseReason.SERVER_DRAINING), listener.next())
                assertEquals(change(RECOVERING_RECONNECT, CONNECTED_ACTIVE), listener.next())
            }
            assertEquals(Facts(1, CloseReason.SERVER_DRAINING, hint), own.take("the own strategy's first attempt"))
            assertEquals(Facts(1, CloseReason.SERVER_DRAINING, hint), delegated.take("the delegating strategy's first attempt"))
            assertEquals(ids, a.sessionId to b.sessionId, "the same sessions after the restart")
            a.publish("kotlin/drain/a", "after")
            b.publish("kotlin/drain/b", "after")
            a.close()
            b.close()
        }
    }

    @Test
    fun `a cut gives attempts without a hint`() {
        TestServer().use { server ->
            FaultProxy(server.address).use { proxy ->
                val seen = LinkedBlockingQueue<Facts>()
                val listener = RecordingListener()
                factory().reconnectionStrategy { attempt -> seen.add(attempt.facts()); attempt.start() }
                    .listener(listener).open(proxy.url).use {
                        assertEquals(change(CONNECTING, CONNECTED_ACTIVE), listener.next())
                        proxy.waitForwarded(1)
                        assertEquals(1, proxy.cut())
                        listener.next()
                        assertEquals(change(RECOVERING_RECONNECT, CONNECTED_ACTIVE), listener.next())
                        val facts = seen.take("the attempt")
                        assertEquals(CloseReason.TRANSPORT_ERROR, facts.reason)
                        assertNull(facts.retryAfter)
                    }
            }
        }
    }

    @Test
    fun `fallbackUrl - open uses the first URL that answers, a resume goes to the fallback when the first refuses`() {
        TestServer().use { server ->
            val dead = ServerSocket(0).use { "ws://127.0.0.1:${it.localPort}" }
            factory().fallbackUrl(server.url).open(dead).use { assertEquals(CONNECTED_ACTIVE, it.state) }

            FaultProxy(server.address).use { first ->
                FaultProxy(server.address).use { second ->
                    val numbers = LinkedBlockingQueue<Int>()
                    val listener = RecordingListener()
                    val session = factory()
                        .reconnectionStrategy { attempt ->
                            numbers.add(attempt.number())
                            attempt.startAfter(Duration.ofMillis(20))
                        }
                        .fallbackUrl(second.url)
                        .listener(listener)
                        .open(first.url)
                    session.use {
                        val id = it.sessionId
                        assertEquals(change(CONNECTING, CONNECTED_ACTIVE), listener.next())
                        assertEquals(0, second.forwarded(), "opened on the first URL")
                        first.refuse()
                        assertEquals(1, first.cut())
                        listener.next()
                        assertEquals(change(RECOVERING_RECONNECT, CONNECTED_ACTIVE), listener.next())
                        assertEquals(listOf(1, 2), numbers.toList(), "attempt 1 went back to the first URL (refused), attempt 2 to the fallback")
                        assertEquals(1, second.forwarded(), "resumed through the fallback")
                        assertEquals(id, it.sessionId)
                        it.publish("kotlin/fallback", "after")
                    }
                }
            }
            assertThrows<TetherException.InvalidUrl> { factory().fallbackUrl("http://x").open(server.url) }
        }
    }
}
