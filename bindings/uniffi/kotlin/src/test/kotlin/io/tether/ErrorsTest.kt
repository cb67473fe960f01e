package io.tether

import io.tether.SessionState.CLOSED_FAILED
import io.tether.SessionState.CONNECTING
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import java.net.ServerSocket
import java.time.Duration

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ErrorsTest {
    private lateinit var server: TestServer

    @BeforeAll
    fun start() {
        server = TestServer()
    }

    @AfterAll
    fun stop() {
        server.close()
    }

    @Test
    fun `wrong credentials fail the open with a typed reason, and the listener sees CONNECTING to CLOSED_FAILED`() {
        val listener = RecordingListener()
        val e = assertThrows<TetherException.Open> {
            Tether.sessions().principal("control").password("wrong").listener(listener).open(server.url)
        }
        assertEquals(CloseReason.AUTHENTICATION_FAILED, e.reason)
        assertEquals("authentication_failed", e.reason.toString())
        assertFalse(e.reason.allowsReconnect())
        assertEquals(change(CONNECTING, CLOSED_FAILED, CloseReason.AUTHENTICATION_FAILED), listener.next())
    }

    @Test
    fun `an unreachable server is a connection error`() {
        val port = ServerSocket(0).use { it.localPort } // free, and nobody listens there now
        val e = assertThrows<TetherException.Open> {
            Tether.sessions().connectTimeout(Duration.ofSeconds(5)).open("ws://127.0.0.1:$port")
        }
        assertEquals(CloseReason.CONNECTION_ERROR, e.reason)
        assertTrue(e.reason.allowsReconnect())
    }

    @Test
    fun `bad arguments are typed errors, raised before anything is sent`() {
        assertThrows<TetherException.InvalidUrl> { Tether.sessions().open("http://127.0.0.1:1") }
        assertThrows<TetherException.InvalidArgument> { Tether.sessions().reconnectionTimeout(-1) }
        assertThrows<TetherException.InvalidArgument> { Tether.sessions().credentials("pw").open(server.url) }
        assertThrows<TetherException.InvalidArgument> { Tether.sessions().sendQueue(0, 1024).open(server.url) }
        assertThrows<TetherException.InvalidArgument> { Tether.sessions().connectTimeout(0).open(server.url) }
        assertThrows<TetherException.InvalidArgument> { Strategies.exponentialBackoff(multiplier = 0.5) }
        assertThrows<TetherException.InvalidArgument> { Strategies.exponentialBackoff(multiplier = Double.NaN) }
        assertThrows<TetherException.InvalidArgument> {
            Strategies.exponentialBackoff(initial = Duration.ofSeconds(2), maxDelay = Duration.ofSeconds(1))
        }
        assertThrows<TetherException.InvalidArgument> { Strategies.constantDelay(Duration.ofMillis(1), -1) }

        Tether.sessions().principal("control").password("password").open(server.url).use { session ->
            val e = assertThrows<TetherException.InvalidTopic> { session.publish("bad/*/topic", "x") }
            assertTrue(e.detail.isNotEmpty())
            assertThrows<TetherException.InvalidTopic> { session.subscribe("a/**/b") { } }
            session.publish("errors/fine", "the session is unharmed")
        }
    }

    @Test
    fun `a closed session refuses work with the reason it closed`() {
        val session = Tether.sessions().principal("control").password("password").open(server.url)
        session.close()
        assertEquals(CloseReason.CLOSED_BY_CLIENT, session.closeReason)
        val e = assertThrows<TetherException.Closed> { session.publish("errors/after", "x") }
        assertEquals(CloseReason.CLOSED_BY_CLIENT, e.reason)
        assertThrows<TetherException.Closed> { session.subscribe("errors/after") { } }
        assertEquals(SessionState.CLOSED_BY_CLIENT, session.waitForState(SessionState.CONNECTED_ACTIVE, GUARD))
    }
}
