package io.tether

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import java.time.Duration

class ShutdownTest {
    @Test
    fun `shutdown closes every open session, and a later open starts afresh`() {
        TestServer().use { server ->
            val listener = RecordingListener()
            val first = Tether.sessions().principal("control").password("password").listener(listener).open(server.url)
            assertEquals(SessionState.CONNECTED_ACTIVE, listener.next().newState)

            Tether.shutdown(Duration.ofSeconds(10))
            assertEquals(SessionState.CLOSED_BY_CLIENT, first.state)
            assertEquals(CloseReason.CLOSED_BY_CLIENT, first.closeReason)
            val e = org.junit.jupiter.api.assertThrows<TetherException.Closed> { first.publish("shutdown/x", "x") }
            assertEquals(CloseReason.CLOSED_BY_CLIENT, e.reason)

            Tether.sessions().principal("control").password("password").open(server.url).use { second ->
                assertEquals(SessionState.CONNECTED_ACTIVE, second.state)
                second.publish("shutdown/again", "works")
            }
        }
    }
}
