package io.tether

import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.time.Duration
import java.util.concurrent.BlockingQueue
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

/** Failure guard for anything a test waits for (never a synchronisation device). */
val GUARD: Duration = Duration.ofSeconds(30)

private val bin: File = File(System.getProperty("tether.bin") ?: error("tether.bin is not set"))
private val work: File = File(System.getProperty("tether.work") ?: "target/test-work").also { it.mkdirs() }

/** Starts a child process and reads its first stdout line (the JSON line the Tether tools print). */
private fun startTool(name: String, vararg args: String): Pair<Process, String> {
    val exe = File(bin, name)
    check(exe.canExecute()) { "$exe is missing: build it with cargo build -p tether-server -p tether-testkit" }
    val process = ProcessBuilder(listOf(exe.path) + args)
        .redirectError(ProcessBuilder.Redirect.appendTo(File(work, "$name.log")))
        .start()
    val line = BufferedReader(InputStreamReader(process.inputStream)).readLine()
        ?: error("$name exited before printing its address (see ${File(work, "$name.log")})")
    return process to line
}

private fun jsonField(json: String, field: String): String =
    Regex("\"$field\"\\s*:\\s*\"([^\"]+)\"").find(json)?.groupValues?.get(1)
        ?: error("no $field in $json")

private fun jsonNumber(json: String, field: String): Long =
    Regex("\"$field\"\\s*:\\s*(\\d+)").find(json)?.groupValues?.get(1)?.toLong()
        ?: error("no $field in $json")

/** The real server on a free loopback port, principal `control` / `password`: in development
 * mode, or with [metrics] from a configuration that also serves Prometheus metrics. */
class TestServer(metrics: Boolean = false) : AutoCloseable {
    private val process: Process
    val address: String
    private val metricsAddress: String?

    init {
        val (p, line) = if (metrics) {
            startTool("tether-server", "--config", metricsConfig().path, "--listen", "127.0.0.1:0")
        } else {
            startTool("tether-server", "--dev", "--listen", "127.0.0.1:0")
        }
        process = p
        address = jsonField(line, "listen")
        metricsAddress = if (metrics) jsonField(line, "metrics") else null
    }

    val url: String get() = "ws://$address"

    /** The sessions the server keeps, by state (`connected`, `disconnected`); needs [metrics]. */
    fun sessions(): Map<String, Long> {
        val address = metricsAddress ?: error("start the server with metrics = true")
        val request = HttpRequest.newBuilder(URI.create("http://$address/metrics")).timeout(GUARD).build()
        val body = HttpClient.newHttpClient().send(request, HttpResponse.BodyHandlers.ofString()).body()
        val kept = mutableMapOf("connected" to 0L, "disconnected" to 0L)
        Regex("^tether_sessions\\{state=\"(\\w+)\"\\} (\\d+)$", RegexOption.MULTILINE).findAll(body).forEach {
            kept[it.groupValues[1]] = it.groupValues[2].toLong()
        }
        return kept
    }

    override fun close() {
        process.destroy()
        process.waitFor(10, TimeUnit.SECONDS)
    }

    private fun metricsConfig(): File {
        val hash = passwordHash()
        return File.createTempFile("tether-server-", ".toml", work).apply {
            deleteOnExit()
            writeText(
                """
                listen = "127.0.0.1:0"
                metrics_listen = "127.0.0.1:0"
                [[principals]]
                name = "control"
                password_hash = "$hash"
                subscribe = ["**"]
                publish = ["**"]
                """.trimIndent() + "\n",
            )
        }
    }
}

/** The argon2 hash of `password`, for configuration files. */
private fun passwordHash(): String =
    ProcessBuilder(File(bin, "tether-server").path, "hash-password").start().run {
        outputStream.use { it.write("password".toByteArray()) }
        inputStream.bufferedReader().readText().trim().also { check(waitFor() == 0) { "hash-password failed" } }
    }

/**
 * A server (principal `control` / `password`) with a state directory, that [restart] restarts
 * in place as `systemctl restart` does: SIGTERM (the server drains: every session is sent away
 * with reason `server_draining` and the retry-after hint [retryAfterMs], and saved to the state
 * directory), then the same server again on the same address once it has exited.
 */
class RestartableServer(retryAfterMs: Long) : AutoCloseable {
    private val dir: File = java.nio.file.Files.createTempDirectory(work.toPath(), "tether-state-").toFile()
    private val config: File = File(dir, "server.toml").apply {
        writeText(
            """
            listen = "127.0.0.1:0"
            state_dir = "${dir.path}"
            [drain]
            retry_after_ms = $retryAfterMs
            [[principals]]
            name = "control"
            password_hash = "${passwordHash()}"
            subscribe = ["**"]
            publish = ["**"]
            """.trimIndent() + "\n",
        )
    }
    private var process: Process
    val address: String

    init {
        val (p, line) = startTool("tether-server", "--config", config.path, "--listen", "127.0.0.1:0")
        process = p
        address = jsonField(line, "listen")
    }

    val url: String get() = "ws://$address"

    fun restart() {
        stop()
        process = startTool("tether-server", "--config", config.path, "--listen", address).first
    }

    private fun stop() {
        process.destroy() // SIGTERM: the server drains
        check(process.waitFor(30, TimeUnit.SECONDS)) { "the server did not exit after its drain" }
    }

    override fun close() {
        stop()
        dir.deleteRecursively()
    }
}

/** The fault proxy in front of a server, driven over its HTTP control API. */
class FaultProxy(upstream: String) : AutoCloseable {
    private val process: Process
    private val control: String
    val url: String
    private val http = HttpClient.newHttpClient()

    init {
        val (p, line) = startTool("tether-faultproxy", "--upstream", upstream, "--exit-on-stdin-close")
        process = p
        control = jsonField(line, "control")
        url = "ws://" + jsonField(line, "proxy")
    }

    private fun call(method: String, path: String): String {
        val request = HttpRequest.newBuilder(URI.create("http://$control$path"))
            .method(method, HttpRequest.BodyPublishers.noBody())
            .timeout(GUARD.plusSeconds(5))
            .build()
        val response = http.send(request, HttpResponse.BodyHandlers.ofString())
        check(response.statusCode() == 200) { "$method $path: ${response.statusCode()} ${response.body()}" }
        return response.body()
    }

    /** Stalls every current connection (nothing is forwarded, nothing closed); returns how
     * many. */
    fun stall(): Long = jsonNumber(call("POST", "/stall"), "stalled")

    /** Cuts every current connection; returns how many were cut. */
    fun cut(mode: String = "rst"): Long = jsonNumber(call("POST", "/cut?mode=$mode"), "cut")

    /** Waits until at least [n] connections in all have been forwarded to the server. */
    fun waitForwarded(n: Int) {
        call("GET", "/wait?forwarded=$n&timeout_ms=${GUARD.toMillis()}")
    }

    fun forwarded(): Long = jsonNumber(call("GET", "/status"), "forwarded_total")

    /** Resets every new connection until [heal]. */
    fun refuse() {
        call("POST", "/refuse")
    }

    /** Stops refusing. */
    fun heal() {
        call("POST", "/heal")
    }

    override fun close() {
        process.outputStream.close()
        if (!process.waitFor(10, TimeUnit.SECONDS)) process.destroy()
    }
}

/** A listener that queues every state change, for the test thread to take in order. */
class RecordingListener : SessionListener {
    val changes: BlockingQueue<StateChange> = LinkedBlockingQueue()
    val threads: BlockingQueue<Thread> = LinkedBlockingQueue()

    override fun onStateChanged(change: StateChange) {
        threads.add(Thread.currentThread())
        changes.add(change)
    }

    /** The next change, failing the test if none comes within the guard. */
    fun next(): StateChange = changes.poll(GUARD.toMillis(), TimeUnit.MILLISECONDS)
        ?: throw AssertionError("no state change within $GUARD")
}

fun change(old: SessionState, new: SessionState, reason: CloseReason? = null) = StateChange(old, new, reason)

/** Polls a queue with the guard. */
fun <T> BlockingQueue<T>.take(what: String): T =
    poll(GUARD.toMillis(), TimeUnit.MILLISECONDS) ?: throw AssertionError("no $what within $GUARD")

private fun codeSource(c: Class<*>) = File(c.protectionDomain.codeSource.location.toURI())

/** The class path of this test run (Tether's classes with the native library under
 * linux-x86-64/, JNA, kotlin-stdlib), from the code sources of classes known to be on it. */
fun classPath(vararg extra: File): String =
    (extra.toList() + listOf(Tether::class.java, com.sun.jna.Native::class.java, Unit::class.java).map(::codeSource))
        .distinct().joinToString(File.pathSeparator) { it.path }

/** Tether packaged as a jar, as `mvn package` makes it: the compiled classes and the native
 * library, nothing else. */
fun tetherJar(): File {
    val classes = codeSource(Tether::class.java)
    val jar = File(work, "tether.jar")
    java.util.jar.JarOutputStream(jar.outputStream()).use { out ->
        out.setLevel(java.util.zip.Deflater.NO_COMPRESSION) // a debug build's library is large
        classes.walkTopDown().filter { it.isFile }.forEach { f ->
            out.putNextEntry(java.util.jar.JarEntry(f.relativeTo(classes).invariantSeparatorsPath))
            f.inputStream().use { it.copyTo(out) }
            out.closeEntry()
        }
    }
    return jar
}

/** Only [jars]/dirs, JNA and kotlin-stdlib: what a user puts beside their program. */
fun minimalClassPath(vararg entries: File): String =
    (entries.toList() + listOf(com.sun.jna.Native::class.java, Unit::class.java).map(::codeSource))
        .joinToString(File.pathSeparator) { it.path }

/** A child JVM running [mainClass] with [classPath], stdin and stdout piped. */
fun startJvm(classPath: String, mainClass: String, vararg args: String, logName: String): Process {
    val java = File(System.getProperty("java.home"), "bin/java").path
    return ProcessBuilder(listOf(java, "-cp", classPath, mainClass) + args)
        .redirectError(ProcessBuilder.Redirect.appendTo(File(work, "$logName.stderr.log")))
        .start()
}

/** Reads a child's stdout lines on a daemon thread into a queue (and a transcript). */
class Lines(process: Process) {
    val queue: BlockingQueue<String> = LinkedBlockingQueue()
    val all: MutableList<String> = java.util.Collections.synchronizedList(mutableListOf())

    init {
        val reader = BufferedReader(InputStreamReader(process.inputStream))
        Thread({
            reader.lineSequence().forEach { all.add(it); queue.add(it) }
        }, "child-stdout").apply { isDaemon = true }.start()
    }

    fun transcript(): String = synchronized(all) { all.joinToString("\n") }

    /** Takes lines until one contains [text]; returns it. */
    fun waitFor(text: String): String {
        while (true) {
            val line = queue.poll(GUARD.toMillis(), TimeUnit.MILLISECONDS)
                ?: throw AssertionError("no line with \"$text\" within $GUARD; output so far:\n${transcript()}")
            if (line.contains(text)) return line
        }
    }
}

val workDir: File get() = work
