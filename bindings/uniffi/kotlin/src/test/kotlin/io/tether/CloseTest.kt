package io.tether

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import java.time.Duration
import java.util.concurrent.BlockingQueue
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CountDownLatch
import java.util.concurrent.ExecutionException
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

/**
 * close() and the requests made before it: they are sent and confirmed first, so a request the
 * server applied is never reported failed; requests made after close() fail at once and are not
 * applied; a request the server never confirmed says its outcome is unknown.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class CloseTest {
    private lateinit var server: TestServer
    private lateinit var observer: Session

    /** What the server applied, per topic, as a second session sees it. */
    private val received = ConcurrentHashMap<String, BlockingQueue<String>>()

    private fun factory() = Tether.sessions().principal("control").password("password")

    private fun values(topic: String) = received.computeIfAbsent(topic) { LinkedBlockingQueue() }

    /** The next [n] values the observer received on [topic]. */
    private fun observed(topic: String, n: Int): List<String> = List(n) { values(topic).take("value ${it + 1} of $topic") }

    @BeforeAll
    fun start() {
        server = TestServer()
        observer = factory().open(server.url)
        observer.subscribe("close/**") { update -> values(update.topic).add(update.text) }
    }

    @AfterAll
    fun stop() {
        observer.close()
        server.close()
    }

    @Test
    fun `five publishAsync calls not waited for, then close, every one is applied and reported applied (30 rounds)`() {
        val sent = listOf("1", "2", "3", "4", "5")
        repeat(30) { round ->
            val topic = "close/queued/$round"
            val session = factory().open(server.url)
            val futures = sent.map { session.publishAsync(topic, it) }
            session.close()
            assertEquals(SessionState.CLOSED_BY_CLIENT, session.state)
            val outcomes = futures.map { f ->
                try {
                    f.get(GUARD.toMillis(), TimeUnit.MILLISECONDS)
                    "applied"
                } catch (e: ExecutionException) {
                    e.cause.toString()
                }
            }
            assertEquals(sent.map { "applied" }, outcomes, "round $round")
            assertEquals(sent, observed(topic, sent.size), "round $round: what the server applied")
        }
    }

    @Test
    fun `publishing from threads while another closes, every publish the server applied is reported applied, the others Closed`() {
        val session = factory().open(server.url)
        val outcomes = ConcurrentHashMap<String, String>()
        val going = CountDownLatch(20)
        val threads = (0 until 4).map { t ->
            Thread {
                var i = 0
                while (true) {
                    val value = "$t-${i++}"
                    try {
                        session.publish("close/threads/$t", value)
                        outcomes[value] = "applied"
                        going.countDown()
                    } catch (e: TetherException.Closed) {
                        outcomes[value] = "closed"
                        break
                    } catch (e: TetherException) {
                        outcomes[value] = e.toString()
                        break
                    }
                }
            }.apply { start() }
        }
        assertTrue(going.await(GUARD.toMillis(), TimeUnit.MILLISECONDS), "the threads publish")
        session.close()
        threads.forEach { it.join(GUARD.toMillis()) }
        for (t in 0 until 4) {
            val mine = outcomes.filterKeys { it.startsWith("$t-") }
            val applied = mine.filterValues { it == "applied" }.keys.sortedBy { it.substringAfter('-').toInt() }
            assertTrue(mine.values.all { it == "applied" || it == "closed" }, "thread $t: $mine")
            assertEquals(1, mine.values.count { it == "closed" }, "thread $t: $mine")
            // Everything the server applied from this thread, in order, then this marker.
            observer.publish("close/threads/$t", "marker")
            val got = generateSequence { values("close/threads/$t").take("thread $t's values") }
                .takeWhile { it != "marker" }.toList()
            assertEquals(applied, got, "thread $t")
        }
    }

    @Test
    fun `after close() publishing fails at once with Closed and nothing is applied`() {
        val topic = "close/after"
        val session = factory().open(server.url)
        val before = session.publishAsync(topic, "before")
        session.close()
        before.get(GUARD.toMillis(), TimeUnit.MILLISECONDS)
        val e = assertThrows<TetherException.Closed> { session.publishAsync(topic, "after") }
        assertEquals(CloseReason.CLOSED_BY_CLIENT, e.reason)
        assertThrows<TetherException.Closed> { session.publish(topic, "after, blocking") }
        observer.publish(topic, "marker")
        assertEquals(listOf("before", "marker"), observed(topic, 2))
    }

    @Test
    fun `a publish sent but never confirmed before the close timeout fails with OutcomeUnknown`() {
        FaultProxy(server.address).use { proxy ->
            val session = factory().noReconnection().closeTimeout(Duration.ofSeconds(1)).open(proxy.url)
            assertEquals(1, proxy.stall()) // bytes still leave the client, nothing comes back
            val pending = session.publishAsync("close/unknown", "maybe")
            val blocking = LinkedBlockingQueue<Result<Unit>>()
            Thread { blocking.add(runCatching { session.publish("close/unknown", "maybe too") }) }.start()
            session.close()
            assertEquals(SessionState.CLOSED_BY_CLIENT, session.state)
            val e = assertThrows<ExecutionException> { pending.get(GUARD.toMillis(), TimeUnit.MILLISECONDS) }
            val cause = e.cause
            assertTrue(cause is TetherException.OutcomeUnknown, "$cause")
            assertEquals(CloseReason.CLOSED_BY_CLIENT, (cause as TetherException.OutcomeUnknown).reason)
            val other = blocking.take("the blocking publish's outcome").exceptionOrNull()
            // Queued after or before close(): not sent (Closed) or sent and unconfirmed.
            assertTrue(other is TetherException.OutcomeUnknown || other is TetherException.Closed, "$other")
        }
    }
}
