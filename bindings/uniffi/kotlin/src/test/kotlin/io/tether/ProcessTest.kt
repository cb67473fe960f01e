package io.tether

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.params.ParameterizedTest
import org.junit.jupiter.params.provider.ValueSource
import java.io.File
import java.util.concurrent.TimeUnit
import javax.tools.ToolProvider

/** Whole programs in child JVMs: the examples, and a JVM that must exit by itself. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ProcessTest {
    private lateinit var server: TestServer

    @BeforeAll
    fun start() {
        server = TestServer()
    }

    @AfterAll
    fun stop() {
        server.close()
    }

    private fun assertExitsByItself(process: Process, lines: Lines) {
        val exited = process.waitFor(GUARD.toMillis(), TimeUnit.MILLISECONDS)
        if (!exited) {
            process.destroyForcibly()
            throw AssertionError("the JVM did not exit by itself; output:\n${lines.transcript()}")
        }
        assertEquals(0, process.exitValue(), "exit status; output:\n${lines.transcript()}")
    }

    @ParameterizedTest
    @ValueSource(strings = ["shutdown", "close-only"])
    fun `the JVM exits by itself after close, with or without shutdown`(mode: String) {
        FaultProxy(server.address).use { proxy ->
            val testClasses = File(ExitProbe::class.java.protectionDomain.codeSource.location.toURI())
            val process = startJvm(classPath(testClasses), "io.tether.ExitProbe", proxy.url, mode, logName = "exit-probe-$mode")
            val lines = Lines(process)
            val id = lines.waitFor("open ").removePrefix("open ")
            proxy.waitForwarded(1)
            assertEquals(1, proxy.cut())
            assertEquals("reconnected $id", lines.waitFor("reconnected"))
            assertEquals("closed CLOSED_BY_CLIENT", lines.waitFor("closed"))
            assertExitsByItself(process, lines)
        }
    }

    @Test
    fun `the Java example compiles with javac and survives a cut`() {
        val source = File(System.getProperty("tether.examples"), "java/ClientWithReconnectionStrategy.java")
        val out = File(workDir, "java-example").apply { deleteRecursively(); mkdirs() }
        val javac = ToolProvider.getSystemJavaCompiler() ?: throw AssertionError("no Java compiler in this JDK")
        val status = javac.run(null, null, null, "-Xlint:all", "-Werror", "-cp", classPath(), "-d", out.path, source.path)
        assertEquals(0, status, "javac failed")

        // Run it against Tether as a jar (classes and native library), with only JNA and the
        // Kotlin standard library beside it: JNA must find the library inside the jar.
        val jar = tetherJar()
        assertTrue(java.util.jar.JarFile(jar).use { it.getEntry("linux-x86-64/libtether_uniffi.so") != null })
        FaultProxy(server.address).use { proxy ->
            val process = startJvm(minimalClassPath(out, jar), "ClientWithReconnectionStrategy", proxy.url, logName = "java-example")
            val lines = Lines(process)
            val created = lines.waitFor("Session created")
            assertTrue(created.contains("state=CONNECTED_ACTIVE"), created)
            val id = Regex("id=([0-9a-f]{32})").find(created)?.groupValues?.get(1) ?: throw AssertionError(created)
            lines.waitFor("Press Enter")
            proxy.waitForwarded(1)
            assertEquals(1, proxy.cut())

            lines.waitFor("from CONNECTED_ACTIVE to RECOVERING_RECONNECT (transport_error)")
            lines.waitFor("The session has been disconnected.")
            lines.waitFor("Attempting to reconnect in 1 s (retry 1 of 5, last reason transport_error)")
            lines.waitFor("from RECOVERING_RECONNECT to CONNECTED_ACTIVE")
            assertEquals("The session has reconnected (id=$id)", lines.waitFor("The session has reconnected"))
            assertEquals(2L, proxy.forwarded())

            process.outputStream.close() // "press Enter"
            lines.waitFor("from CONNECTED_ACTIVE to CLOSED_BY_CLIENT (closed_by_client)")
            lines.waitFor("The session has been closed.")
            lines.waitFor("Done.") // main waits for the listener's closed state before this
            assertExitsByItself(process, lines)
        }
    }

    @Test
    fun `the Kotlin example publishes and receives across a cut`() {
        FaultProxy(server.address).use { proxy ->
            val testClasses = File(ExitProbe::class.java.protectionDomain.codeSource.location.toURI())
            val process = startJvm(classPath(testClasses), "ClientWithReconnectionStrategyKt", proxy.url, logName = "kotlin-example")
            val lines = Lines(process)
            // The listener prints on Tether's thread, main on its own: only each one's own
            // lines come in a fixed order, so wait for main's.
            lines.waitFor("is CONNECTED_ACTIVE")
            lines.waitFor("type lines to publish them")
            val stdin = process.outputStream.bufferedWriter()
            stdin.write("before the cut\n")
            stdin.flush()
            lines.waitFor("update examples/kotlin/chat = before the cut")

            proxy.waitForwarded(1)
            assertEquals(1, proxy.cut())
            lines.waitFor("state CONNECTED_ACTIVE -> RECOVERING_RECONNECT (transport_error)")
            stdin.write("after the cut\n") // published while recovering, delivered once resumed
            stdin.flush()
            lines.waitFor("reconnected")
            lines.waitFor("update examples/kotlin/chat = after the cut")

            stdin.close()
            lines.waitFor("closed: closed_by_client")
            assertExitsByItself(process, lines)
        }
    }
}
