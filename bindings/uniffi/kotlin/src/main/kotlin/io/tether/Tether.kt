// The hand-written layer over the generated bindings (target/generated-sources/uniffi): a
// session factory in the style of `Diffusion.sessions()`, a `Session` that is `AutoCloseable`
// in the Java sense (close() closes the session), built-in strategies as static methods, and
// Kotlin lambda overloads. Everything else (ReconnectionStrategy, ReconnectionAttempt,
// SessionListener, StateChange, SessionState, CloseReason, TopicUpdate, TetherException, ...)
// is the generated API itself, in the same package.
@file:JvmName("TetherExtensions")

package io.tether

import java.time.Duration
import java.util.concurrent.CompletableFuture

/**
 * Entry point of Tether for Kotlin and Java.
 *
 * ```java
 * Session session = Tether.sessions()
 *     .principal("control").password("password")
 *     .reconnectionTimeout(10 * 60 * 1000)
 *     .reconnectionStrategy(attempt -> scheduler.schedule(attempt::start, 1, TimeUnit.SECONDS))
 *     .listener(change -> System.out.println(change.getOldState() + " -> " + change.getNewState()))
 *     .open("ws://localhost:8080");
 * ```
 *
 * Call [shutdown] before the process ends: it closes every session and stops Tether's threads.
 */
object Tether {
    /** A session factory with the default settings. Factories are immutable: every setter
     * returns a new one, so a configured factory can be shared and reused. */
    @JvmStatic
    fun sessions(): SessionFactory = SessionFactory.DEFAULT

    /** Closes every open session (requests queued before are sent and confirmed first), then
     * stops Tether's runtime and joins its threads, all within [timeout]. Returns whether
     * everything stopped in time (`false`: a callback or a session was still busy, or it was
     * called from a callback, whose own thread cannot be joined). A later `open` starts afresh.
     * When the JVM exits, Tether does this by itself (see [ExitHook]). */
    @JvmStatic
    @JvmOverloads
    fun shutdown(timeout: Duration = Duration.ofSeconds(5)): Boolean = io.tether.shutdown(timeout)
}

/**
 * When the JVM exits (`System.exit`, or its last non-daemon thread ends) with sessions still
 * open, a shutdown hook closes them as [Session.close] does (what was queued is sent and
 * confirmed first) and stops Tether's threads, within [TIMEOUT]; installed when the first
 * session opens.
 *
 * `System.exit` called from a Tether callback (a listener, a strategy) blocks that callback's
 * thread until the hooks have run, so a full shutdown would wait for it until the deadline:
 * then the hook closes the sessions itself and stops the runtime without waiting for callbacks.
 */
internal object ExitHook {
    private val TIMEOUT: Duration = Duration.ofSeconds(1)

    /** Sessions opened and not closed (weakly held: one dropped unclosed is the core's to close). */
    private val open: MutableSet<Session> = java.util.Collections.synchronizedSet(
        java.util.Collections.newSetFromMap(java.util.WeakHashMap<Session, Boolean>()),
    )

    @Volatile
    private var installed = false

    fun opened(session: Session) {
        if (!installed) {
            synchronized(this) {
                if (!installed) {
                    Runtime.getRuntime().addShutdownHook(Thread(::run, "tether-exit"))
                    installed = true
                }
            }
        }
        open.add(session)
    }

    fun closed(session: Session) {
        open.remove(session)
    }

    private fun run() {
        if (!exitingFromCallback()) {
            Tether.shutdown(TIMEOUT)
            return
        }
        val deadline = System.nanoTime() + TIMEOUT.toNanos()
        val closing = synchronized(open) { open.toList() }.map { session ->
            Thread({ session.close() }, "tether-exit-close").apply {
                isDaemon = true
                start()
            }
        }
        for (thread in closing) {
            thread.join(maxOf(1L, (deadline - System.nanoTime()) / 1_000_000))
        }
        // Stops the runtime without waiting (the exiting callback's thread never returns).
        Tether.shutdown(Duration.ZERO)
    }

    /** Whether the thread that is exiting the JVM is running a Tether callback (entered from
     * the native library through a generated callback interface). */
    private fun exitingFromCallback(): Boolean = Thread.getAllStackTraces().values.any { frames ->
        frames.any { it.className == "java.lang.Shutdown" } &&
            frames.any { it.className.startsWith("io.tether.uniffiCallbackInterface") }
    }
}

/**
 * Opens sessions with a given configuration. Immutable: every method returns a new factory.
 */
class SessionFactory private constructor(
    private val principal: String?,
    private val credentials: String?,
    private val reconnectionTimeout: Duration?,
    private val strategy: ReconnectionStrategy?,
    private val listeners: List<SessionListener>,
    private val gapListener: GapListener?,
    private val connectTimeout: Duration?,
    private val closeTimeout: Duration?,
    private val strict: Boolean,
    private val maxQueuedRequests: Long?,
    private val maxQueuedBytes: Long?,
    private val fallbackUrls: List<String>,
    private val tlsRootCertificates: List<String>,
    private val pingPeriod: Duration?,
    private val deliveryLimit: Long?,
) {
    internal companion object {
        val DEFAULT = SessionFactory(
            null, null, null, null, emptyList(), null, null, null, false, null, null, emptyList(),
            emptyList(), null, null,
        )
    }

    private fun copy(
        principal: String? = this.principal,
        credentials: String? = this.credentials,
        reconnectionTimeout: Duration? = this.reconnectionTimeout,
        strategy: ReconnectionStrategy? = this.strategy,
        listeners: List<SessionListener> = this.listeners,
        gapListener: GapListener? = this.gapListener,
        connectTimeout: Duration? = this.connectTimeout,
        closeTimeout: Duration? = this.closeTimeout,
        strict: Boolean = this.strict,
        maxQueuedRequests: Long? = this.maxQueuedRequests,
        maxQueuedBytes: Long? = this.maxQueuedBytes,
        fallbackUrls: List<String> = this.fallbackUrls,
        tlsRootCertificates: List<String> = this.tlsRootCertificates,
        pingPeriod: Duration? = this.pingPeriod,
        deliveryLimit: Long? = this.deliveryLimit,
    ) = SessionFactory(
        principal, credentials, reconnectionTimeout, strategy, listeners, gapListener,
        connectTimeout, closeTimeout, strict, maxQueuedRequests, maxQueuedBytes, fallbackUrls,
        tlsRootCertificates, pingPeriod, deliveryLimit,
    )

    /** The principal to authenticate as (anonymous when not set). */
    fun principal(principal: String): SessionFactory = copy(principal = principal)

    /** The principal's password. */
    fun password(password: String): SessionFactory = copy(credentials = password)

    /** The principal's credentials (a password). */
    fun credentials(credentials: String): SessionFactory = copy(credentials = credentials)

    /** How long to keep trying to reconnect after a disconnection, in milliseconds (default
     * 60 s; 0 disables reconnection). The server keeps the session for at most its own
     * maximum. */
    @Throws(TetherException::class)
    fun reconnectionTimeout(milliseconds: Long): SessionFactory {
        if (milliseconds < 0) {
            throw TetherException.InvalidArgument("reconnectionTimeout must be zero or more, not $milliseconds ms")
        }
        return copy(reconnectionTimeout = Duration.ofMillis(milliseconds))
    }

    /** How long to keep trying to reconnect after a disconnection (default 60 s; zero disables
     * reconnection). */
    @Throws(TetherException::class)
    fun reconnectionTimeout(timeout: Duration): SessionFactory {
        if (timeout.isNegative) {
            throw TetherException.InvalidArgument("reconnectionTimeout must be zero or more, not $timeout")
        }
        return copy(reconnectionTimeout = timeout)
    }

    /** Disables reconnection: a lost connection closes the session (`CLOSED_FAILED`). */
    fun noReconnection(): SessionFactory = copy(reconnectionTimeout = Duration.ZERO)

    /** Adds a server to try when the ones before do not answer: the URL given to [open] comes
     * first, then the fallbacks in the order added. Opening tries them in order until one
     * answers; reconnection attempts rotate through them (an attempt goes back to the server the
     * session was on, then tries the next; after a server asked the session to go away,
     * `SERVER_DRAINING`, the first attempt tries the next). Every URL must serve the same
     * sessions (one server restarted in place, or the nodes of a cluster). */
    fun fallbackUrl(url: String): SessionFactory = copy(fallbackUrls = fallbackUrls + url)

    /** The reconnection strategy (default: [Strategies.defaultStrategy]). A strategy of yours
     * implements `performReconnection(attempt)` and the hooks `onSuccess(info)` /
     * `onFailure(info, reason)` (called after each attempt it started; from Kotlin, the lambda
     * form below needs none). It may hand an attempt to a built-in
     * (`Strategies.defaultStrategy().performReconnection(attempt)`, passing its `onSuccess` on
     * too), and should wait at least `attempt.retryAfter()` when the server gives one (a drain,
     * a busy server). */
    fun reconnectionStrategy(strategy: ReconnectionStrategy): SessionFactory = copy(strategy = strategy)

    /** The reconnection strategy as a Kotlin lambda. */
    @JvmSynthetic
    fun reconnectionStrategy(strategy: (ReconnectionAttempt) -> Unit): SessionFactory =
        reconnectionStrategy(object : ReconnectionStrategy {
            override fun performReconnection(attempt: ReconnectionAttempt) = strategy(attempt)
            override fun onSuccess(attempt: AttemptInfo) {}
            override fun onFailure(attempt: AttemptInfo, reason: CloseReason) {}
        })

    /** Adds a listener for state changes (listeners are called in the order added). */
    fun listener(listener: SessionListener): SessionFactory = copy(listeners = listeners + listener)

    /** Adds a listener for state changes, as a Kotlin lambda. */
    @JvmSynthetic
    fun listener(listener: (StateChange) -> Unit): SessionFactory =
        listener(object : SessionListener {
            override fun onStateChanged(change: StateChange) = listener(change)
        })

    /** Receives gap reports (messages lost during an outage that the server could not
     * replay). */
    fun gapListener(listener: GapListener): SessionFactory = copy(gapListener = listener)

    /** Receives gap reports, as a Kotlin lambda. */
    @JvmSynthetic
    fun gapListener(listener: (GapReport) -> Unit): SessionFactory =
        gapListener(object : GapListener {
            override fun onGap(report: GapReport) = listener(report)
        })

    /** Time allowed for each connection (TCP and upgrade), default 10 s. */
    fun connectTimeout(timeout: Duration): SessionFactory = copy(connectTimeout = timeout)

    /** Time allowed for each connection in milliseconds, default 10 s. */
    fun connectTimeout(milliseconds: Long): SessionFactory = connectTimeout(Duration.ofMillis(milliseconds))

    /** Time [Session.close] allows the requests made before it to be sent and confirmed by the
     * server (default 5 s). Past it the connection is dropped: a request that was sent fails with
     * [TetherException.OutcomeUnknown], one that was not with [TetherException.Closed]. */
    @Throws(TetherException::class)
    fun closeTimeout(timeout: Duration): SessionFactory {
        if (timeout.isNegative) {
            throw TetherException.InvalidArgument("closeTimeout must be zero or more, not $timeout")
        }
        return copy(closeTimeout = timeout)
    }

    /** Time [Session.close] allows the requests made before it, in milliseconds (default 5 s). */
    @Throws(TetherException::class)
    fun closeTimeout(milliseconds: Long): SessionFactory {
        if (milliseconds < 0) {
            throw TetherException.InvalidArgument("closeTimeout must be zero or more, not $milliseconds ms")
        }
        return copy(closeTimeout = Duration.ofMillis(milliseconds))
    }

    /** Close the session (reason `lost_messages`) rather than resume with a gap report. */
    fun strict(strict: Boolean): SessionFactory = copy(strict = strict)

    /** Bounds the requests kept until the server acknowledges them (default 10,000 or 8 MiB). */
    fun sendQueue(maxRequests: Long, maxBytes: Long): SessionFactory =
        copy(maxQueuedRequests = maxRequests, maxQueuedBytes = maxBytes)

    /** Trusts the certificates in [pem] (PEM text, e.g. a private CA's) for `wss://`, besides
     * the system's roots. May be called several times. */
    fun tlsRootCertificatePem(pem: String): SessionFactory = copy(tlsRootCertificates = tlsRootCertificates + pem)

    /** Asks the server to ping the session every [period] (it grants one within its bounds, by
     * default 1 s to 60 s: see [Session.pingPeriod]); a connection silent for one and a half
     * periods is taken as dead. Default: the server's own period. */
    fun pingPeriod(period: Duration): SessionFactory = copy(pingPeriod = period)

    /** Most updates that may wait for the topic listeners (default 10,000): past it the
     * session stops reading, so a listener slower than the stream costs bounded memory; the
     * server's slow-consumer handling then ends the connection and the resume reports what
     * was dropped (the gap listener). */
    fun deliveryLimit(updates: Long): SessionFactory = copy(deliveryLimit = updates)

    /** This factory's settings as the generated [SessionConfiguration]. */
    fun configuration(): SessionConfiguration = SessionConfiguration(
        fallbackUrls = fallbackUrls,
        principal = principal,
        credentials = credentials,
        reconnectionTimeout = reconnectionTimeout,
        reconnectionStrategy = strategy,
        listener = when (listeners.size) {
            0 -> null
            1 -> listeners[0]
            else -> AllListeners(listeners)
        },
        gapListener = gapListener,
        connectTimeout = connectTimeout,
        closeTimeout = closeTimeout,
        strict = strict,
        maxQueuedRequests = maxQueuedRequests,
        maxQueuedBytes = maxQueuedBytes,
        tlsRootCertificates = tlsRootCertificates,
        pingPeriod = pingPeriod,
        deliveryLimit = deliveryLimit,
    )

    /**
     * Connects to [url] (`ws://host:port[/path]`) and opens a session, blocking until it is
     * `CONNECTED_ACTIVE`. On failure the listeners see `CONNECTING -> CLOSED_FAILED` and the
     * exception says why ([TetherException.Open] with its `reason`).
     */
    @Throws(TetherException::class)
    fun open(url: String): Session = Session(openSession(url, configuration()))

    private class AllListeners(private val listeners: List<SessionListener>) : SessionListener {
        override fun onStateChanged(change: StateChange) {
            var failure: Exception? = null
            for (l in listeners) {
                try {
                    l.onStateChanged(change)
                } catch (e: Exception) {
                    failure = failure ?: e
                }
            }
            if (failure != null) throw failure
        }
    }
}

/**
 * A session with a Tether server. It survives lost connections (same session id, same
 * subscriptions, nothing lost) until it is closed; [close] closes it (`CLOSED_BY_CLIENT`), so
 * try-with-resources and `use {}` work.
 *
 * Methods that wait block the calling thread; they may be called from any thread, including
 * listeners and strategies.
 */
class Session internal constructor(private val native: NativeSession) : AutoCloseable {
    init {
        ExitHook.opened(this)
    }

    /** The session id, 32 hex digits; the same after every reconnection. */
    val sessionId: String get() = native.sessionId()

    /** The current state. */
    val state: SessionState get() = native.state()

    /** Whether the session is closed (for whatever reason). */
    val isClosed: Boolean get() = native.state().isClosed()

    /** Why the session closed, once it has. */
    val closeReason: CloseReason? get() = native.closeReason()

    /** The reconnection timeout in force (the smaller of the requested and the server's). */
    val reconnectionTimeout: Duration get() = native.reconnectionTimeout()

    /** The ping period the server granted on the current connection; null while the session
     * is not connected. */
    val pingPeriod: Duration? get() = native.pingPeriod()

    /** Publishes [value] on [topic] and waits until the server has applied it. Sent exactly once,
     * in order, across reconnections: while the session recovers, the call waits. */
    @Throws(TetherException::class)
    fun publish(topic: String, value: ByteArray) = native.publish(topic, value)

    /** Publishes a UTF-8 string. */
    @Throws(TetherException::class)
    fun publish(topic: String, value: String) = native.publish(topic, value.toByteArray(Charsets.UTF_8))

    /**
     * Queues a publish of [value] on [topic] at once, in call order, without waiting. The future
     * completes when the server has applied it, or exceptionally with a [TetherException]:
     * [TetherException.Rejected] (refused), [TetherException.Closed] (the session closed before
     * sending it: not applied), [TetherException.OutcomeUnknown] (it closed after sending it,
     * before the server confirmed it: it may have been applied). Futures complete in call order,
     * on a thread of this session's (never one of Tether's), so what you chain to them may
     * block.
     *
     * Throws at once, with nothing queued, when the session is closed or closing
     * ([TetherException.Closed]), the send queue is full ([TetherException.QueueFull]) or the
     * topic is malformed. A publish made before [close] is sent and confirmed before the session
     * closes.
     */
    @Throws(TetherException::class)
    fun publishAsync(topic: String, value: ByteArray): CompletableFuture<Void?> {
        val pending = native.send(topic, value)
        val future = CompletableFuture<Void?>()
        completions.add(pending, future)
        return future
    }

    /** Queues a publish of a UTF-8 string; see [publishAsync]. */
    @Throws(TetherException::class)
    fun publishAsync(topic: String, value: String): CompletableFuture<Void?> =
        publishAsync(topic, value.toByteArray(Charsets.UTF_8))

    private val completions = Completions("tether-publish-$sessionId")

    /** Subscribes to [selector] and waits until the server confirms. A selector is a topic path
     * (`a/b`), or a path whose last level is `*` (one level) or `**` (any depth). The current
     * values of matching topics arrive first (as snapshots), then every update, on the session's
     * callback thread, across reconnections. */
    @Throws(TetherException::class)
    fun subscribe(selector: String, listener: TopicListener) = native.subscribe(selector, listener)

    /** Subscribes with a Kotlin lambda. */
    @JvmSynthetic
    fun subscribe(selector: String, listener: (TopicUpdate) -> Unit) =
        subscribe(selector, object : TopicListener {
            override fun onUpdate(update: TopicUpdate) = listener(update)
        })

    /** Removes the subscription made with the same selector text. */
    @Throws(TetherException::class)
    fun unsubscribe(selector: String) = native.unsubscribe(selector)

    /** Waits until the session is in [state] or closed, for at most [timeout]; returns the state
     * reached ([state], a closed state, or the current state when the time ran out). */
    fun waitForState(state: SessionState, timeout: Duration): SessionState = native.waitForState(state, timeout)

    /** Waits until the session is closed, for at most [timeout]; returns why, or `null`. */
    fun awaitClosed(timeout: Duration): CloseReason? = native.awaitClosed(timeout)

    /** Closes the session (`CLOSED_BY_CLIENT`) and waits until it is closed. Requests made
     * before (a [publishAsync], a [publish] blocked on another thread) are sent and confirmed
     * first, within the factory's `closeTimeout`; requests made after fail with
     * [TetherException.Closed]. Calling it again does nothing. The object stays usable for
     * queries ([state], [closeReason]). */
    override fun close() {
        native.closeSession()
        ExitHook.closed(this)
    }

    override fun toString(): String = "Session($sessionId, $state)"
}

/**
 * Completes the futures of a session's [Session.publishAsync] calls, in call order, on a daemon
 * thread of its own that runs while there is something to wait for (so it never keeps the JVM
 * alive, and an idle session holds no thread).
 */
private class Completions(private val threadName: String) {
    private val queue = ArrayDeque<Pair<PendingPublish, CompletableFuture<Void?>>>()
    private var draining = false

    fun add(pending: PendingPublish, future: CompletableFuture<Void?>) {
        val start = synchronized(this) {
            queue.addLast(pending to future)
            !draining.also { draining = true }
        }
        if (start) {
            try {
                Thread(::drain, threadName).apply { isDaemon = true }.start()
            } catch (e: Throwable) {
                synchronized(this) { draining = false }
                throw e
            }
        }
    }

    private fun drain() {
        while (true) {
            val (pending, future) = synchronized(this) {
                queue.removeFirstOrNull() ?: run {
                    draining = false
                    return
                }
            }
            try {
                pending.use { it.join() }
                future.complete(null)
            } catch (e: Throwable) {
                future.completeExceptionally(e)
            }
        }
    }
}

/**
 * The built-in reconnection strategies, implemented in the core.
 */
object Strategies {
    /** Waits [delay] before every attempt; with [maxAttempts], aborts instead of making attempt
     * number `maxAttempts + 1`. */
    @JvmStatic
    @JvmOverloads
    @Throws(TetherException::class)
    fun constantDelay(delay: Duration, maxAttempts: Int? = null): ReconnectionStrategy =
        io.tether.constantDelay(delay, maxAttempts)

    /** Exponential backoff: [initial], `initial × multiplier`, ... capped at [maxDelay], spread
     * by [jitter]; with [maxAttempts], aborts instead of making attempt `maxAttempts + 1`. */
    @JvmStatic
    @JvmOverloads
    @Throws(TetherException::class)
    fun exponentialBackoff(
        initial: Duration = Duration.ofMillis(250),
        multiplier: Double = 2.0,
        maxDelay: Duration = Duration.ofSeconds(10),
        jitter: Jitter = Jitter.FULL,
        maxAttempts: Int? = null,
    ): ReconnectionStrategy = io.tether.exponentialBackoff(initial, multiplier, maxDelay, jitter, maxAttempts)

    /** Never reconnect: the first attempt aborts (`CLOSED_FAILED`, reason `reconnect_aborted`). */
    @JvmStatic
    fun abortImmediately(): ReconnectionStrategy = io.tether.abortImmediately()

    /** The default: first attempt after a random 0-100 ms, then exponential backoff with full
     * jitter from 250 ms, doubling, capped at 10 s. */
    @JvmStatic
    fun defaultStrategy(): ReconnectionStrategy = io.tether.defaultStrategy()
}

/** The value as UTF-8 text (Java: `TetherExtensions.getText(update)`). */
val TopicUpdate.text: String get() = value.toString(Charsets.UTF_8)
