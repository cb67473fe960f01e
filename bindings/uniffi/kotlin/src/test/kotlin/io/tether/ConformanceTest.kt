package io.tether

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assumptions
import org.junit.jupiter.api.DynamicTest
import org.junit.jupiter.api.TestFactory
import org.junit.jupiter.api.TestInstance
import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.net.URI
import java.net.URLEncoder
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.time.Duration
import java.util.concurrent.CompletableFuture
import java.util.concurrent.CountDownLatch
import java.util.concurrent.ExecutionException
import java.util.concurrent.TimeUnit
import java.util.concurrent.locks.Condition
import java.util.concurrent.locks.ReentrantLock
import kotlin.concurrent.withLock

/**
 * The Kotlin/Java runner of the conformance scenarios (`conformance/scenarios.txt`): every
 * scenario against the real server behind the fault proxy (both from the fixture,
 * `tether-conformance-fixture`), through this package's API. A scenario whose step the package
 * cannot do yet is skipped (an aborted assumption) as "not supported: <reason>", never passed.
 * Results go to `target/conformance/kotlin.txt` for `cargo xtask conformance`.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ConformanceTest {
    private val root: File = File(System.getProperty("tether.examples") ?: "../../../examples").absoluteFile.parentFile
    private val bin: File = File(System.getProperty("tether.bin") ?: error("tether.bin is not set"))
    private val results = linkedMapOf<String, String>()
    private val scenarios = load()
    private var fixture: Fixture? = null

    class Step(val verb: String, val args: Map<String, String>, val line: Int) {
        operator fun get(key: String): String? = args[key]
        fun need(key: String): String = args[key] ?: throw Failed("$key is missing")
    }

    class Unsupported(message: String) : Exception(message)
    class Failed(message: String) : Exception(message)

    private fun load(): List<Pair<String, List<Step>>> {
        val out = mutableListOf<Pair<String, MutableList<Step>>>()
        File(root, "conformance/scenarios.txt").readLines().forEachIndexed { i, raw ->
            val line = raw.trim()
            if (line.isEmpty() || line.startsWith("#")) return@forEachIndexed
            val words = line.split(Regex("\\s+"))
            when (words[0]) {
                "scenario" -> out.add(words[1] to mutableListOf())
                "about" -> {}
                else -> out.last().second.add(
                    Step(words[0], words.drop(1).associate { it.substringBefore('=') to it.substringAfter('=') }, i + 1),
                )
            }
        }
        return out
    }

    /** The fixture process and its HTTP API. */
    class Fixture(bin: File) : AutoCloseable {
        private val process: Process
        private val control: String
        private val http = HttpClient.newHttpClient()

        init {
            val exe = File(bin, "tether-conformance-fixture")
            check(exe.canExecute()) { "$exe is missing: cargo build -p tether-conformance" }
            process = ProcessBuilder(exe.path).redirectError(ProcessBuilder.Redirect.INHERIT).start()
            val line = BufferedReader(InputStreamReader(process.inputStream)).readLine() ?: error("the fixture exited")
            control = line.removePrefix("control=")
        }

        fun call(path: String, query: Map<String, String> = emptyMap()): Map<String, String> {
            val q = query.entries.joinToString("&") { "${it.key}=${URLEncoder.encode(it.value, Charsets.UTF_8)}" }
            val request = HttpRequest.newBuilder(URI.create("http://$control/$path" + if (q.isEmpty()) "" else "?$q"))
                .timeout(Duration.ofSeconds(40)).build()
            val body = http.send(request, HttpResponse.BodyHandlers.ofString()).body().trim()
            val words = body.split(" ")
            if (words[0] != "ok") throw Failed("fixture /$path: $body")
            return words.drop(1).filter { '=' in it }.associate { it.substringBefore('=') to it.substringAfter('=') }
        }

        override fun close() {
            process.outputStream.close()
            process.waitFor(15, TimeUnit.SECONDS)
        }
    }

    /** Runs one scenario's steps against one session. */
    private inner class Runner(val fixture: Fixture) {
        val lock = ReentrantLock()
        val changed: Condition = lock.newCondition()
        var env: Map<String, String> = emptyMap()
        var session: Session? = null
        val changes = mutableListOf<StateChange>()
        val gaps = mutableListOf<GapReport>()
        val attempts = mutableListOf<ReconnectionAttempt>()
        val hooks = IntArray(2)
        val updates = mutableMapOf<String, MutableList<String>>()
        var cursor = 0
        var timeout: Duration = Duration.ofSeconds(60)
        var lastElapsed: Duration = Duration.ZERO
        val sends = mutableMapOf<String, CompletableFuture<Void?>>()
        val gates = mutableMapOf<String, CountDownLatch>()

        fun <T> record(f: () -> T): T = lock.withLock { f().also { changed.signalAll() } }

        /** Waits until [check] gives a value; fails past the guard. */
        fun <T : Any> wait(what: String, check: () -> T?): T {
            val deadline = System.nanoTime() + GUARD.toNanos()
            lock.withLock {
                while (true) {
                    check()?.let { return it }
                    val left = deadline - System.nanoTime()
                    if (left <= 0) throw Failed("timed out waiting for $what")
                    changed.awaitNanos(left)
                }
            }
        }

        fun session(): Session = session ?: throw Failed("no session: `open` first")

        fun finish() {
            gates.values.forEach { it.countDown() }
            session?.close()
        }

        fun errorName(e: Throwable): String = when (e) {
            is TetherException.OutcomeUnknown -> "outcome_unknown"
            is TetherException.Closed -> "closed"
            is TetherException.QueueFull -> "queue_full"
            is TetherException.InvalidTopic -> "invalid_topic"
            is TetherException.Rejected -> e.kind.name.lowercase()
            is ExecutionException -> errorName(e.cause ?: e)
            else -> "other ($e)"
        }

        fun expect(step: Step, got: String) {
            val want = step["expect"] ?: "ok"
            if (got != want) throw Failed("outcome $got, expected $want")
        }

        fun outcome(f: () -> Unit): String = try {
            f()
            "ok"
        } catch (e: TetherException) {
            errorName(e)
        } catch (e: ExecutionException) {
            errorName(e)
        }

        fun run(step: Step) {
            val ms = { key: String, default: Long -> Duration.ofMillis(step[key]?.toLong() ?: default) }
            when (step.verb) {
                "env" -> env = fixture.call("env", step.args)
                "open" -> open(step, ms)
                "subscribe" -> {
                    val topic = step.need("topic")
                    val gate = if (step["consumer"] == "paused") CountDownLatch(1).also { gates[topic] = it } else null
                    session().subscribe(topic) { u ->
                        // A paused consumer holds the callback thread until resume_consumer.
                        gate?.await(GUARD.toMillis(), TimeUnit.MILLISECONDS)
                        record { updates.getOrPut(u.topic) { mutableListOf() }.add(u.value.toString(Charsets.UTF_8)) }
                    }
                }
                "resume_consumer" -> gates[step.need("topic")]?.countDown() ?: throw Failed("no paused consumer")
                "publish" -> expect(step, outcome { session().publish(step.need("topic"), step.need("value")) })
                "send" -> {
                    var future: CompletableFuture<Void?>? = null
                    expect(step, outcome { future = session().publishAsync(step.need("topic"), step.need("value")) })
                    step["as"]?.let { name -> future?.let { sends[name] = it } }
                }
                "await_send" -> {
                    val future = sends.remove(step.need("name")) ?: throw Failed("no send named ${step["name"]}")
                    expect(step, outcome { future.get(GUARD.toMillis(), TimeUnit.MILLISECONDS) })
                }
                "server_publish" -> fixture.call("publish", step.args)
                "expect_received" -> {
                    val topic = step.need("topic")
                    val count = step["count"]?.toInt() ?: 1
                    val last = step["last"]
                    wait("$count update(s) of $topic, the last $last") {
                        val got = updates[topic] ?: emptyList<String>()
                        if (got.size >= count && (last == null || got.last() == last)) true else null
                    }
                }
                "cut" -> fixture.call("cut", mapOf("mode" to (step["mode"] ?: "rst")))
                "stall", "refuse", "heal", "drain" -> fixture.call(step.verb)
                "expect_state" -> {
                    val want = step.need("state")
                    val at = wait("the session to enter $want") {
                        (cursor until changes.size).firstOrNull { changes[it].newState.name == want }
                    }
                    cursor = at + 1
                    val reason = lock.withLock { changes[at].reason }
                    step["reason"]?.let { if (reason?.toString() != it) throw Failed("entered $want with reason $reason, not $it") }
                }
                "wait_state" -> {
                    val want = SessionState.valueOf(step.need("state"))
                    val got = session().waitForState(want, GUARD)
                    if (got != want) throw Failed("reached $got, not $want")
                }
                "expect_attempt" -> expectAttempt(step)
                "decide" -> {
                    val attempt = lock.withLock { attempts.lastOrNull() } ?: throw Failed("no attempt to decide")
                    val start = step.need("action") == "start"
                    val decide = { if (start) attempt.start() else attempt.abort() }
                    val decided = if (step["from"] == "thread") {
                        var result = false
                        Thread { result = decide() }.apply { start(); join() }
                        result
                    } else {
                        decide()
                    }
                    if (!decided) throw Failed("the attempt was already decided (or the session stopped waiting)")
                }
                "expect_hooks" -> {
                    val want = listOf(step.need("success").toInt(), step.need("failure").toInt())
                    wait("${want[0]} success and ${want[1]} failure hook calls") {
                        if (hooks[0] >= want[0] && hooks[1] >= want[1]) true else null
                    }
                    val got = lock.withLock { hooks.toList() }
                    if (got != want) throw Failed("hooks called $got (success, failure), expected $want")
                }
                "expect_gap" -> {
                    val topic = step.need("topic")
                    wait("a gap report naming $topic") {
                        if (gaps.any { g -> g.lostCount > 0 && g.topics.any { it.topic == topic } }) true else null
                    }
                }
                "expect_ping_period" -> {
                    val period = session().pingPeriod
                    val want = Duration.ofMillis(step.need("ms").toLong())
                    if (period != want) throw Failed("ping period $period, expected $want")
                }
                "expect_proxy" -> fixture.call("wait_refused", mapOf("n" to step.need("refused")))
                "close" -> session().close()
                "expect_closed" -> {
                    val s = session()
                    val reason = s.awaitClosed(GUARD) ?: throw Failed("timed out waiting for the session to close")
                    if (s.state.name != step["state"] || reason.toString() != step["reason"]) {
                        throw Failed("closed in ${s.state} ($reason), expected ${step["state"]} (${step["reason"]})")
                    }
                }
                "exit_child" -> exitChild()
                else -> throw Failed("unknown step ${step.verb}")
            }
        }

        fun open(step: Step, ms: (String, Long) -> Duration) {
            step["timeout_ms"]?.let { timeout = Duration.ofMillis(it.toLong()) }
            var factory = Tether.sessions()
                .principal(step["principal"] ?: "control").password("password")
                .reconnectionTimeout(timeout)
                .listener { c ->
                    if (c.oldState != SessionState.CONNECTING) record { changes.add(c) }
                }
                .gapListener { g -> record { gaps.add(g) } }
            val maxAttempts = step["max_attempts"]?.toInt()
            val strategy: ReconnectionStrategy? = when (step["strategy"]) {
                null -> null
                "manual" -> object : ReconnectionStrategy {
                    override fun performReconnection(attempt: ReconnectionAttempt) {
                        record { attempts.add(attempt) }
                    }
                    override fun onSuccess(attempt: AttemptInfo) {
                        record { hooks[0]++ }
                    }
                    override fun onFailure(attempt: AttemptInfo, reason: CloseReason) {
                        record { hooks[1]++ }
                    }
                }
                "default" -> Strategies.defaultStrategy()
                "constant" -> Strategies.constantDelay(ms("delay_ms", 0), maxAttempts)
                "backoff" -> Strategies.exponentialBackoff(
                    ms("initial_ms", 250), 2.0, ms("max_ms", 10000),
                    Jitter.valueOf((step["jitter"] ?: "full").uppercase()), maxAttempts,
                )
                "abort" -> Strategies.abortImmediately()
                else -> throw Failed("strategy=${step["strategy"]}")
            }
            strategy?.let { factory = factory.reconnectionStrategy(it) }
            if (step["strict"] == "1") factory = factory.strict(true)
            step["queue"]?.let { factory = factory.sendQueue(it.toLong(), 8L shl 20) }
            step["close_timeout_ms"]?.let { factory = factory.closeTimeout(it.toLong()) }
            if (step["ca"] == "fixture") factory = factory.tlsRootCertificatePem(java.io.File(env.getValue("ca")).readText())
            step["ping_ms"]?.let { factory = factory.pingPeriod(Duration.ofMillis(it.toLong())) }
            step["delivery_limit"]?.let { factory = factory.deliveryLimit(it.toLong()) }
            val opened = try {
                factory.open(env.getValue("url"))
            } catch (e: TetherException) {
                if (step["expect"] == "error") return
                throw Failed("cannot open: $e")
            }
            if (step["expect"] == "error") {
                opened.close()
                throw Failed("opened, but it should have failed")
            }
            session?.close()
            session = opened
        }

        fun expectAttempt(step: Step) {
            val n = step["number"]?.toInt() ?: 1
            val attempt = wait("reconnection attempt $n") { attempts.getOrNull(n - 1) }
            val wrong = mutableListOf<String>()
            if (attempt.number() != n) wrong += "number ${attempt.number()}"
            step["last_reason"]?.let { if (attempt.lastReason().toString() != it) wrong += "last reason ${attempt.lastReason()}" }
            when (val retry = step["retry_after"]) {
                null -> {}
                "none" -> if (attempt.retryAfter() != null) wrong += "retry-after ${attempt.retryAfter()}, expected none"
                else -> if (attempt.retryAfter()?.toMillis() != retry.toLong()) wrong += "retry-after ${attempt.retryAfter()}, expected $retry ms"
            }
            if (attempt.remaining().isZero || attempt.remaining() > timeout) wrong += "remaining ${attempt.remaining()} (timeout $timeout)"
            if (attempt.elapsed() < lastElapsed) wrong += "elapsed ${attempt.elapsed()} went back from $lastElapsed"
            lastElapsed = attempt.elapsed()
            if (wrong.isNotEmpty()) throw Failed("attempt $n: ${wrong.joinToString()}")
        }

        fun exitChild() {
            val testClasses = File(ConformanceChild::class.java.protectionDomain.codeSource.location.toURI())
            val process = startJvm(classPath(testClasses), "io.tether.ConformanceChild", env.getValue("url"), logName = "conformance-child")
            val lines = Lines(process)
            if (!process.waitFor(GUARD.toMillis(), TimeUnit.MILLISECONDS)) {
                process.destroyForcibly()
                throw Failed("the child did not exit; output:\n${lines.transcript()}")
            }
            if (process.exitValue() != 0 || lines.all.none { it.contains("done") }) {
                throw Failed("child: status ${process.exitValue()}, output:\n${lines.transcript()}")
            }
        }
    }

    private fun runScenario(steps: List<Step>): Pair<String, String> {
        val f = fixture ?: Fixture(bin).also { fixture = it }
        val runner = Runner(f)
        var outcome = "pass" to ""
        for (step in steps) {
            try {
                runner.run(step)
            } catch (e: Unsupported) {
                outcome = "unsupported" to "line ${step.line}: ${step.verb}: ${e.message}"
                break
            } catch (e: Exception) {
                outcome = "FAIL" to "line ${step.line}: ${step.verb}: $e"
                break
            }
        }
        try {
            runner.finish()
        } catch (e: Exception) {
            if (outcome.first == "pass") outcome = "FAIL" to "closing at the end: $e"
        }
        return outcome
    }

    @TestFactory
    fun scenarios(): List<DynamicTest> = scenarios.map { (name, steps) ->
        DynamicTest.dynamicTest(name) {
            val (word, detail) = runScenario(steps)
            results[name] = "$name\t$word\t${detail.replace(Regex("[\t\r\n]+"), " ")}"
            Assumptions.assumeFalse(word == "unsupported", "not supported: $detail")
            if (word == "FAIL") throw AssertionError(detail)
        }
    }

    @AfterAll
    fun writeResults() {
        fixture?.close()
        if (results.size == scenarios.size) {
            val dir = File(System.getenv("TETHER_CONFORMANCE_OUT") ?: File(root, "target/conformance").path)
            dir.mkdirs()
            File(dir, "kotlin.txt").writeText(scenarios.joinToString("") { (name, _) -> results.getValue(name) + "\n" })
        }
    }
}

/** The `exit_child` program: opens a session, subscribes, publishes, gets its update, prints
 * `done` and returns from main with the session open (no close, no shutdown). */
object ConformanceChild {
    @JvmStatic
    fun main(args: Array<String>) {
        val got = CountDownLatch(1)
        val session = Tether.sessions().principal("control").password("password").open(args[0])
        session.subscribe("exit/t") { if (it.text == "bye") got.countDown() }
        session.publish("exit/t", "bye")
        check(got.await(20, TimeUnit.SECONDS)) { "no update" }
        println("done")
    }
}
