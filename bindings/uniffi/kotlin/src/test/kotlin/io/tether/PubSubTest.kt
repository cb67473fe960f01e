package io.tether

import io.tether.SessionState.CONNECTED_ACTIVE
import io.tether.SessionState.RECOVERING_RECONNECT
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import java.time.Duration
import java.util.UUID
import java.util.concurrent.CountDownLatch
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class PubSubTest {
    private lateinit var server: TestServer

    @BeforeAll
    fun start() {
        server = TestServer()
    }

    @AfterAll
    fun stop() {
        server.close()
    }

    private fun factory() = Tether.sessions().principal("control").password("password")

    /** Collects updates on the callback thread; the test thread reads them. */
    private class Collector(total: Int) : TopicListener {
        val values = LinkedBlockingQueue<String>()
        val snapshots = LinkedBlockingQueue<String>()
        val half = CountDownLatch(total / 2)
        val all = CountDownLatch(total)

        override fun onUpdate(update: TopicUpdate) {
            if (update.snapshot) {
                snapshots.add(update.text)
                return
            }
            values.add(update.text)
            half.countDown()
            all.countDown()
        }
    }

    @Test
    fun `subscribe and publish in both directions across a cut, nothing lost or repeated and in order`() {
        val base = "pubsub/${UUID.randomUUID()}"
        val n = 100
        val gaps = LinkedBlockingQueue<GapReport>()
        FaultProxy(server.address).use { proxy ->
            val listener = RecordingListener()
            // `cut` goes through the proxy; `direct` is connected straight to the server.
            val cut = factory()
                .reconnectionStrategy(Strategies.constantDelay(Duration.ofMillis(50)))
                .listener(listener)
                .gapListener { gaps.add(it) }
                .open(proxy.url)
            val direct = factory().open(server.url)
            try {
                val intoCut = Collector(n)
                val fromCut = Collector(n)
                cut.subscribe("$base/in", intoCut)
                direct.subscribe("$base/out", fromCut)
                proxy.waitForwarded(1)
                assertEquals(CONNECTED_ACTIVE, listener.next().newState)

                // Half the values each way while connected...
                for (i in 1..n / 2) direct.publish("$base/in", "$i")
                for (i in 1..n / 2) cut.publish("$base/out", "$i")
                assertTrue(intoCut.half.await(GUARD.toMillis(), TimeUnit.MILLISECONDS), "half the values arrived")
                assertEquals(1, proxy.cut())
                // ...and the rest while the cut session is disconnected or recovering: the
                // server keeps what it sends, and the cut session's publish waits for the resume.
                for (i in n / 2 + 1..n) direct.publish("$base/in", "$i")
                for (i in n / 2 + 1..n) cut.publish("$base/out", "$i")

                assertTrue(intoCut.all.await(GUARD.toMillis(), TimeUnit.MILLISECONDS), "all values reached the cut session")
                assertTrue(fromCut.all.await(GUARD.toMillis(), TimeUnit.MILLISECONDS), "all values left the cut session")

                val expected = (1..n).map { "$it" }
                assertEquals(expected, intoCut.values.toList(), "into the cut session: exactly once, in order")
                assertEquals(expected, fromCut.values.toList(), "from the cut session: exactly once, in order")
                assertTrue(intoCut.snapshots.isEmpty() && fromCut.snapshots.isEmpty(), "no snapshots: nothing was lost")
                assertTrue(gaps.isEmpty(), "no gap report")

                // The cut really happened and was recovered, with the same session.
                assertEquals(RECOVERING_RECONNECT, listener.next().newState)
                assertEquals(CONNECTED_ACTIVE, listener.next().newState)
                assertEquals(2L, proxy.forwarded())
            } finally {
                cut.close()
                direct.close()
            }
        }
    }

    @Test
    fun `a new subscription gets the current value as a snapshot, then live updates, until unsubscribed`() {
        val topic = "pubsub/${UUID.randomUUID()}/value"
        factory().open(server.url).use { session ->
            session.publish(topic, "first")
            val updates = LinkedBlockingQueue<TopicUpdate>()
            session.subscribe(topic) { updates.add(it) }
            val snapshot = updates.take("snapshot")
            assertTrue(snapshot.snapshot)
            assertEquals("first", snapshot.text)
            assertEquals(topic, snapshot.topic)

            session.publish(topic, "second".toByteArray())
            val live = updates.take("update")
            assertFalse(live.snapshot)
            assertEquals("second", live.text)
            assertTrue(live.offset > snapshot.offset)

            session.unsubscribe(topic)
            val e = assertThrows<TetherException.Rejected> { session.unsubscribe(topic) }
            assertEquals(RequestErrorKind.NOT_SUBSCRIBED, e.kind)
            // A round trip after the unsubscribe: had the listener still been called, the
            // update published before it would be queued ahead of this one.
            session.publish(topic, "third")
            val marker = LinkedBlockingQueue<TopicUpdate>()
            session.subscribe(topic) { marker.add(it) }
            assertEquals("third", marker.take("snapshot").text)
            assertTrue(updates.isEmpty(), "no update after unsubscribe: $updates")
        }
    }

    @Test
    fun `blocking calls work from inside callbacks`() {
        val base = "pubsub/${UUID.randomUUID()}"
        factory().open(server.url).use { session ->
            val failures = LinkedBlockingQueue<Throwable>()
            // Each update of `ping` is answered, from the callback thread, with a blocking publish.
            session.subscribe("$base/ping") { update ->
                try {
                    session.publish("$base/pong", "re: ${update.text}")
                } catch (e: Throwable) {
                    failures.add(e)
                }
            }
            val pongs = LinkedBlockingQueue<String>()
            session.subscribe("$base/pong") { pongs.add(it.text) }
            for (i in 1..3) session.publish("$base/ping", "$i")
            assertEquals(listOf("re: 1", "re: 2", "re: 3"), List(3) { pongs.take("pong") })
            assertTrue(failures.isEmpty(), "$failures")
        }
    }
}
