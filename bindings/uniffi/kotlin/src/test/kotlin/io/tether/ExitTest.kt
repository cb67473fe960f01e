package io.tether

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import java.io.File
import java.util.concurrent.TimeUnit

/**
 * JVMs that end with publishes in flight and no close() ([ExitInFlight], in child JVMs), each
 * scenario `TETHER_EXIT_RUNS` times (default 3; `cargo xtask soak` sets 50). Every run must exit
 * with the expected status, by itself (no hang), with no crash report; Tether's exit hook must
 * have closed its sessions as close() does (the server freed them) and every publish queued
 * before the exit must have been applied.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ExitTest {
    private val runs: Int = System.getenv("TETHER_EXIT_RUNS").let { value ->
        value?.toIntOrNull()?.takeIf { it > 0 } ?: if (value == null) 3 else error("TETHER_EXIT_RUNS must be a positive integer, not $value")
    }
    private lateinit var server: TestServer
    private lateinit var observer: Session

    @BeforeAll
    fun start() {
        server = TestServer(metrics = true)
        observer = Tether.sessions().principal("control").password("password").open(server.url)
    }

    @AfterAll
    fun stop() {
        observer.close()
        server.close()
    }

    /** The last value the server holds for each load topic of a run (the snapshots a new
     * subscription gets first). */
    private fun lastValues(base: String): Map<String, String> {
        val values = java.util.concurrent.ConcurrentHashMap<String, String>()
        val all = java.util.concurrent.CountDownLatch(ExitInFlight.TOPICS)
        val selector = "$base/load/*"
        observer.subscribe(selector) { update ->
            if (values.put(update.topic.removePrefix("$base/"), update.text) == null) all.countDown()
        }
        all.await(GUARD.toMillis(), TimeUnit.MILLISECONDS)
        observer.unsubscribe(selector)
        return values.toMap()
    }

    /** What a crash leaves behind: the JVM's fatal error report, a signal, a Rust panic, an
     * exception nobody caught. */
    private val crash = Regex("fatal error|SIGSEGV|SIGABRT|hs_err|panicked|Exception in thread|Segmentation fault")

    private fun scenario(mode: String, expectedStatus: Int) {
        val testClasses = File(ExitInFlight::class.java.protectionDomain.codeSource.location.toURI())
        repeat(runs) { run ->
            val what = "$mode, run ${run + 1} of $runs"
            val stderr = File(workDir, "exit-$mode.stderr.log")
            val java = File(System.getProperty("java.home"), "bin/java").path
            val process = ProcessBuilder(
                java, "-XX:ErrorFile=${File(workDir, "hs_err_exit_%p.log").path}",
                "-cp", classPath(testClasses), "io.tether.ExitInFlight", server.url, mode,
            ).redirectError(stderr).start()
            val lines = Lines(process)
            val base = lines.waitFor("base ").removePrefix("base ")
            if (!process.waitFor(GUARD.toMillis(), TimeUnit.MILLISECONDS)) {
                process.destroyForcibly()
                throw AssertionError("$what: the JVM hung; output:\n${lines.transcript()}\nstderr:\n${stderr.readText()}")
            }
            val report = "$what; output:\n${lines.transcript()}\nstderr:\n${stderr.readText()}"
            assertEquals(expectedStatus, process.exitValue(), "exit status; $report")
            assertFalse(crash.containsMatchIn(lines.transcript() + stderr.readText()), "a crash; $report")
            // Only the observer's session is left: the child's were closed, not dropped.
            assertEquals(mapOf("connected" to 1L, "disconnected" to 0L), server.sessions(), "sessions kept; $report")
            // Publishes are applied in order: the last one of each topic applied means all were.
            val expected = (0 until ExitInFlight.TOPICS).associate { k ->
                "load/$k" to (ExitInFlight.PUBLISHES - ExitInFlight.TOPICS + k).toString()
            }
            assertEquals(expected, lastValues(base), "the last values; $report")
        }
    }

    @Test
    fun `main returns with publishes in flight`() = scenario("return", 0)

    @Test
    fun `System exit from main with publishes in flight`() = scenario("exit-main", 5)

    @Test
    fun `System exit from a topic listener with publishes in flight`() = scenario("exit-topic", 3)

    @Test
    fun `System exit from a session listener with publishes in flight`() = scenario("exit-state", 4)
}
