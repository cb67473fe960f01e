package io.tether

import io.tether.SessionState.CLOSED_BY_CLIENT
import io.tether.SessionState.CLOSED_FAILED
import io.tether.SessionState.CONNECTED_ACTIVE
import io.tether.SessionState.CONNECTING
import io.tether.SessionState.RECOVERING_RECONNECT
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import java.time.Duration
import java.util.concurrent.Executors
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.ScheduledExecutorService
import java.util.concurrent.TimeUnit

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ReconnectionTest {
    private lateinit var server: TestServer
    private lateinit var scheduler: ScheduledExecutorService

    @BeforeAll
    fun start() {
        server = TestServer()
        scheduler = Executors.newSingleThreadScheduledExecutor { r -> Thread(r, "java-scheduler").apply { isDaemon = true } }
    }

    @AfterAll
    fun stop() {
        scheduler.shutdownNow()
        server.close()
    }

    private fun factory() = Tether.sessions().principal("control").password("password")

    /** A strategy that records where it runs and starts each attempt later from the scheduler. */
    private inner class SchedulingStrategy(private val action: (ReconnectionAttempt) -> Boolean) : ReconnectionStrategy {
        val calledOn = LinkedBlockingQueue<Thread>()
        val attempts = LinkedBlockingQueue<ReconnectionAttempt>()
        val decisions = LinkedBlockingQueue<Pair<Thread, Boolean>>()

        override fun performReconnection(attempt: ReconnectionAttempt) {
            calledOn.add(Thread.currentThread())
            attempts.add(attempt)
            scheduler.schedule({ decisions.add(Thread.currentThread() to action(attempt)) }, 50, TimeUnit.MILLISECONDS)
        }

        override fun onSuccess(attempt: AttemptInfo) {}
        override fun onFailure(attempt: AttemptInfo, reason: CloseReason) {}
    }

    @Test
    fun `onFailure then onSuccess reach the strategy with each attempt's facts, and the granted ping period is told`() {
        FaultProxy(server.address).use { proxy ->
            val events = LinkedBlockingQueue<Triple<String, Int, CloseReason>>()
            val strategy = object : ReconnectionStrategy {
                override fun performReconnection(attempt: ReconnectionAttempt) {
                    events.add(Triple("attempt", attempt.number(), attempt.lastReason()))
                    // The first attempt meets a refusing proxy and fails; the second succeeds.
                    if (attempt.number() == 1) proxy.refuse() else proxy.heal()
                    attempt.start()
                }
                override fun onSuccess(attempt: AttemptInfo) {
                    events.add(Triple("success", attempt.number, attempt.lastReason))
                }
                override fun onFailure(attempt: AttemptInfo, reason: CloseReason) {
                    events.add(Triple("failure", attempt.number, reason))
                }
            }
            val session = factory()
                .reconnectionTimeout(Duration.ofSeconds(30))
                .reconnectionStrategy(strategy)
                .pingPeriod(Duration.ofMillis(1500))
                .deliveryLimit(100)
                .open(proxy.url)
            assertEquals(Duration.ofMillis(1500), session.pingPeriod)
            proxy.waitForwarded(1)
            assertEquals(1, proxy.cut())
            val got = (1..4).map { events.take("hook or attempt $it") }
            assertEquals(
                listOf(
                    Triple("attempt", 1, CloseReason.TRANSPORT_ERROR),
                    Triple("failure", 1, CloseReason.CONNECTION_ERROR),
                    Triple("attempt", 2, CloseReason.CONNECTION_ERROR),
                    Triple("success", 2, CloseReason.CONNECTION_ERROR),
                ),
                got,
            )
            assertEquals(CONNECTED_ACTIVE, session.waitForState(CONNECTED_ACTIVE, Duration.ofSeconds(20)))
            assertEquals(Duration.ofMillis(1500), session.pingPeriod)
            session.close()
            assertNull(session.pingPeriod, "no ping period once closed")
        }
    }

    @Test
    fun `start from a Java scheduler thread resumes the same session, twice, with every transition in order`() {
        FaultProxy(server.address).use { proxy ->
            val strategy = SchedulingStrategy { it.start() }
            val listener = RecordingListener()
            val session = factory()
                .reconnectionTimeout(Duration.ofSeconds(30))
                .reconnectionStrategy(strategy)
                .listener(listener)
                .open(proxy.url)
            val id = session.sessionId
            assertEquals(32, id.length)
            assertEquals(change(CONNECTING, CONNECTED_ACTIVE), listener.next())
            proxy.waitForwarded(1)

            for (outage in 1..2) {
                assertEquals(1, proxy.cut())
                val lost = listener.next()
                assertEquals(CONNECTED_ACTIVE, lost.oldState)
                assertEquals(RECOVERING_RECONNECT, lost.newState)
                assertEquals(CloseReason.TRANSPORT_ERROR, lost.reason)
                assertEquals(change(RECOVERING_RECONNECT, CONNECTED_ACTIVE), listener.next())

                // The strategy ran on a Tether (Rust) thread: neither the test's nor the scheduler's.
                val strategyThread = strategy.calledOn.take("strategy call")
                assertNotEquals(Thread.currentThread(), strategyThread)
                assertNotEquals("java-scheduler", strategyThread.name)
                // start() was called on the scheduler thread and decided the attempt.
                val (startThread, decided) = strategy.decisions.take("start()")
                assertEquals("java-scheduler", startThread.name)
                assertTrue(decided, "start() from the scheduler decided the attempt")

                val attempt = strategy.attempts.take("attempt")
                assertEquals(1, attempt.number(), "each outage starts again at attempt 1")
                assertEquals(CloseReason.TRANSPORT_ERROR, attempt.lastReason())
                assertTrue(attempt.isDecided())
                assertFalse(attempt.start(), "a second decision is ignored")
                assertFalse(attempt.abort(), "a second decision is ignored")

                assertEquals(id, session.sessionId, "same session after reconnection")
                assertEquals(CONNECTED_ACTIVE, session.state)
                assertEquals(outage + 1L, proxy.forwarded())
            }
            session.publish("reconnection/after", "still working")

            session.close()
            assertEquals(change(CONNECTED_ACTIVE, CLOSED_BY_CLIENT, CloseReason.CLOSED_BY_CLIENT), listener.next())
            assertEquals(CLOSED_BY_CLIENT, session.state)
            assertTrue(session.isClosed)
            session.close() // a second close does nothing
            assertTrue(listener.changes.isEmpty(), "no transition after the closed state: ${listener.changes}")
            // Every listener call ran on a Tether thread.
            listener.threads.forEach { assertNotEquals(Thread.currentThread(), it) }
        }
    }

    @Test
    fun `abort from a Java scheduler thread closes the session CLOSED_FAILED`() {
        FaultProxy(server.address).use { proxy ->
            val strategy = SchedulingStrategy { it.abort() }
            val listener = RecordingListener()
            val session = factory().reconnectionStrategy(strategy).listener(listener).open(proxy.url)
            assertEquals(change(CONNECTING, CONNECTED_ACTIVE), listener.next())
            proxy.waitForwarded(1)
            proxy.cut("fin")

            assertEquals(RECOVERING_RECONNECT, listener.next().newState)
            assertEquals(change(RECOVERING_RECONNECT, CLOSED_FAILED, CloseReason.RECONNECT_ABORTED), listener.next())
            val (thread, decided) = strategy.decisions.take("abort()")
            assertEquals("java-scheduler", thread.name)
            assertTrue(decided)
            assertEquals(CLOSED_FAILED, session.state)
            assertEquals(CloseReason.RECONNECT_ABORTED, session.closeReason)
            assertEquals(CloseReason.RECONNECT_ABORTED, session.awaitClosed(GUARD))
            assertFalse(strategy.attempts.take("attempt").start(), "start() after abort is ignored")

            val e = assertThrows<TetherException.Closed> { session.publish("reconnection/after", "x") }
            assertEquals(CloseReason.RECONNECT_ABORTED, e.reason)
            assertEquals(1L, proxy.forwarded(), "an aborted recovery makes no connection")
            session.close()
            assertTrue(listener.changes.isEmpty())
        }
    }

    @Test
    fun `built-in abortImmediately and disabled reconnection close at the first loss`() {
        FaultProxy(server.address).use { proxy ->
            val aborting = RecordingListener()
            val a = factory().reconnectionStrategy(Strategies.abortImmediately()).listener(aborting).open(proxy.url)
            val none = RecordingListener()
            val b = factory().noReconnection().listener(none).open(proxy.url)
            proxy.waitForwarded(2)
            assertEquals(2, proxy.cut())

            assertEquals(CloseReason.RECONNECT_ABORTED, a.awaitClosed(GUARD))
            assertEquals(
                listOf(CONNECTED_ACTIVE, RECOVERING_RECONNECT, CLOSED_FAILED),
                List(3) { aborting.next().newState },
            )
            assertEquals(CloseReason.TRANSPORT_ERROR, b.awaitClosed(GUARD))
            assertEquals(listOf(CONNECTED_ACTIVE, CLOSED_FAILED), List(2) { none.next().newState })
            assertEquals(Duration.ZERO, b.reconnectionTimeout)
        }
    }

    @Test
    fun `the reconnection timeout closes a session whose strategy never decides`() {
        FaultProxy(server.address).use { proxy ->
            val undecided = LinkedBlockingQueue<ReconnectionAttempt>()
            val listener = RecordingListener()
            val session = factory()
                .reconnectionTimeout(300)
                .reconnectionStrategy { attempt -> undecided.add(attempt) }
                .listener(listener)
                .open(proxy.url)
            proxy.waitForwarded(1)
            proxy.cut()
            assertEquals(CloseReason.RECONNECT_TIMEOUT, session.awaitClosed(GUARD))
            val attempt = undecided.take("attempt")
            assertTrue(attempt.remaining() <= Duration.ofMillis(300))
            assertFalse(attempt.start(), "start() after the session closed is ignored")
            assertEquals(
                listOf(CONNECTED_ACTIVE, RECOVERING_RECONNECT, CLOSED_FAILED),
                List(3) { listener.next().newState },
            )
        }
    }

    @Test
    fun `a strategy that throws falls back to the default strategy and the session recovers`() {
        FaultProxy(server.address).use { proxy ->
            val calls = LinkedBlockingQueue<Int>()
            val listener = object : SessionListener {
                val states = LinkedBlockingQueue<SessionState>()
                override fun onStateChanged(change: StateChange) {
                    states.add(change.newState)
                    throw IllegalStateException("a listener bug") // must not stop later callbacks
                }
            }
            val session = factory()
                .reconnectionStrategy { attempt ->
                    calls.add(attempt.number())
                    throw IllegalStateException("a strategy bug")
                }
                .listener(listener)
                .open(proxy.url)
            val id = session.sessionId
            proxy.waitForwarded(1)
            proxy.cut()
            assertEquals(CONNECTED_ACTIVE, listener.states.take("state"))
            assertEquals(RECOVERING_RECONNECT, listener.states.take("state"))
            assertEquals(CONNECTED_ACTIVE, listener.states.take("state"))
            assertEquals(1, calls.take("strategy call"))
            assertEquals(id, session.sessionId)
            session.close()
            assertEquals(CLOSED_BY_CLIENT, listener.states.take("state"))
            assertNull(listener.states.poll())
        }
    }

    @Test
    fun `startAfter and built-in constant delay reconnect`() {
        FaultProxy(server.address).use { proxy ->
            val viaStartAfter = factory()
                .reconnectionStrategy { attempt -> attempt.startAfter(Duration.ofMillis(20)) }
                .open(proxy.url)
            val viaConstant = factory()
                .reconnectionStrategy(Strategies.constantDelay(Duration.ofMillis(20), 3))
                .open(proxy.url)
            proxy.waitForwarded(2)
            assertEquals(2, proxy.cut())
            proxy.waitForwarded(4)
            for (s in listOf(viaStartAfter, viaConstant)) {
                assertEquals(CONNECTED_ACTIVE, s.waitForState(CONNECTED_ACTIVE, GUARD))
                s.publish("reconnection/after", "ok") // the resumed session works
                s.close()
            }
        }
    }
}
