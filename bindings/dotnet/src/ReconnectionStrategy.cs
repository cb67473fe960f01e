using System;
using System.Threading;
using System.Threading.Tasks;
using Tether.Interop;

namespace Tether
{
    /// <summary>
    /// Decides when a disconnected session tries to reconnect, as in the seed's .NET API.
    /// </summary>
    /// <remarks>
    /// <para>Called when the session enters <c>RECOVERING_RECONNECT</c>, and again after each
    /// failed attempt while the reconnection timeout has not elapsed. The strategy calls
    /// <see cref="IReconnectionAttempt.Start"/> (make one attempt now) or
    /// <see cref="IReconnectionAttempt.Abort"/> (give up: the session closes with
    /// <c>CLOSED_FAILED</c>), typically after awaiting a delay; it may also return at once and
    /// decide later from another thread (a timer). The first decision wins.</para>
    /// <para>If the returned task faults (or is cancelled) before a decision, the attempt is
    /// aborted and the exception is reported through <see cref="ISession.Error"/>. The
    /// reconnection timeout runs meanwhile: when it elapses the session closes whatever the
    /// strategy does.</para>
    /// <para>It runs on a Tether library thread with no synchronization context, one call at a
    /// time per session; while it is undecided, the session's other callbacks (state changes,
    /// topic updates) wait. Do not wait for the session to reconnect inside the strategy (e.g.
    /// a <c>Publish</c> awaited before <c>Start()</c>): the reconnection waits for the strategy.</para>
    /// </remarks>
    public interface IReconnectionStrategy
    {
        /// <summary>Decides the attempt: call <c>attempt.Start()</c> or <c>attempt.Abort()</c>,
        /// now or later.</summary>
        Task PerformReconnection(IReconnectionAttempt attempt);
    }

    /// <summary>What a strategy may also implement to hear how each attempt it started ended:
    /// <see cref="OnSuccess"/> after an attempt succeeded (the session is
    /// <c>CONNECTED_ACTIVE</c> again; a good moment to reset a backoff), <see cref="OnFailure"/>
    /// after one failed (<see cref="IReconnectionStrategy.PerformReconnection"/> follows while
    /// time remains; its attempt's <c>LastReason</c> says why). Called on the session's callback
    /// thread, with the facts of that attempt.</summary>
    public interface IReconnectionOutcome
    {
        /// <summary>The attempt succeeded.</summary>
        void OnSuccess(ReconnectionAttemptInfo attempt);

        /// <summary>The attempt failed.</summary>
        void OnFailure(ReconnectionAttemptInfo attempt);
    }

    /// <summary>One reconnection decision. Callable from any thread; the first of
    /// <see cref="Start"/> / <see cref="Abort"/> wins, later calls (and calls once the session
    /// has closed) are ignored. Its facts (<see cref="Number"/>, <see cref="Elapsed"/>,
    /// <see cref="Remaining"/>, <see cref="LastReason"/>, <see cref="RetryAfter"/>) are those
    /// of <see cref="ReconnectionAttemptInfo"/>.</summary>
    public interface IReconnectionAttempt
    {
        /// <summary>1 for the first attempt after a disconnection, then 2, 3, ...</summary>
        int Number { get; }

        /// <summary>Time since the connection was lost.</summary>
        TimeSpan Elapsed { get; }

        /// <summary>Time left before the reconnection timeout closes the session.</summary>
        TimeSpan Remaining { get; }

        /// <summary>Why the connection was lost (first attempt) or why the previous attempt
        /// failed, as a stable snake_case name: <c>transport_error</c>,
        /// <c>server_draining</c> (the server is going away), <c>server_busy</c> (it cannot take
        /// the session now), ...</summary>
        string LastReason { get; }

        /// <summary>How long the server asked the session to wait before trying again (with
        /// <c>server_draining</c> or <c>server_busy</c>); null when it did not. The built-in
        /// strategies wait at least that long, spread over [hint, 2 × hint); a strategy of
        /// yours should too (<c>await Task.Delay(attempt.RetryAfter ?? myDelay)</c>).</summary>
        TimeSpan? RetryAfter { get; }

        /// <summary>Makes one reconnection attempt now.</summary>
        void Start();

        /// <summary>Gives up: the session closes (<c>CLOSED_FAILED</c>, reason
        /// <c>reconnect_aborted</c>).</summary>
        void Abort();

        /// <summary>Whether <see cref="Start"/> or <see cref="Abort"/> has been called (or the
        /// session closed meanwhile).</summary>
        bool IsDecided { get; }
    }

    /// <summary>The facts of a reconnection attempt: what a strategy is told when it is called
    /// (<see cref="IReconnectionAttempt"/>), and what <see cref="ISession.LastReconnectionAttempt"/>
    /// reports afterwards, whatever the strategy (the built-in ones included).</summary>
    public sealed class ReconnectionAttemptInfo
    {
        internal ReconnectionAttemptInfo(int number, TimeSpan elapsed, TimeSpan remaining, string lastReason, TimeSpan? retryAfter)
        {
            Number = number;
            Elapsed = elapsed;
            Remaining = remaining;
            LastReason = lastReason;
            RetryAfter = retryAfter;
        }

        /// <inheritdoc cref="IReconnectionAttempt.Number"/>
        public int Number { get; }

        /// <inheritdoc cref="IReconnectionAttempt.Elapsed"/>
        public TimeSpan Elapsed { get; }

        /// <inheritdoc cref="IReconnectionAttempt.Remaining"/>
        public TimeSpan Remaining { get; }

        /// <inheritdoc cref="IReconnectionAttempt.LastReason"/>
        public string LastReason { get; }

        /// <inheritdoc cref="IReconnectionAttempt.RetryAfter"/>
        public TimeSpan? RetryAfter { get; }

        /// <summary>The facts of the session's current or latest attempt
        /// (session_reconnection_attempt_get); null when there was none.</summary>
        internal static ReconnectionAttemptInfo Of(IntPtr session)
        {
            ReconnectionAttemptInfoNative info;
            if (session == IntPtr.Zero || !NativeMethods.session_reconnection_attempt_get(session, out info))
            {
                return null;
            }
            return new ReconnectionAttemptInfo(
                info.Number > int.MaxValue ? int.MaxValue : (int)info.Number,
                Milliseconds(info.ElapsedMs),
                Milliseconds(info.RemainingMs),
                Utf8.Decode(info.LastReason),
                info.RetryAfterMs < 0 ? (TimeSpan?)null : Milliseconds((ulong)info.RetryAfterMs));
        }

        private static TimeSpan Milliseconds(ulong ms) =>
            ms >= (ulong)TimeSpan.MaxValue.TotalMilliseconds ? TimeSpan.MaxValue : TimeSpan.FromMilliseconds(ms);

        /// <summary>The facts, for people (logs).</summary>
        public override string ToString() =>
            "attempt " + Number + " (" + LastReason + (RetryAfter.HasValue ? ", retry after " + RetryAfter.Value.TotalMilliseconds + " ms" : "")
            + ", " + Elapsed.TotalMilliseconds + " ms since the disconnection, " + Remaining.TotalMilliseconds + " ms left)";
    }

    /// <summary>How randomness spreads the delays of an exponential backoff.</summary>
    public enum Jitter
    {
        /// <summary>Exactly <c>min(max, initial × multiplier^(n-1))</c>.</summary>
        None = 0,

        /// <summary>Uniform in [0, d], d the delay without jitter.</summary>
        Full = 1,

        /// <summary>d/2 plus uniform in [0, d/2].</summary>
        Equal = 2,

        /// <summary>Uniform in [initial, previous × 3], capped at the maximum delay.</summary>
        Decorrelated = 3,
    }

    /// <summary>The built-in strategies. Except <see cref="AbortImmediately"/>, they run inside
    /// Tether's core (no managed code is called on reconnection).</summary>
    public static class ReconnectionStrategies
    {
        /// <summary>Makes an attempt every <paramref name="delayMs"/> milliseconds (0: at once),
        /// at most <paramref name="count"/> times (0: no limit other than the reconnection
        /// timeout), then aborts.</summary>
        public static IReconnectionStrategy RepeatingAttempt(int count, int delayMs)
        {
            if (count < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(count), count, "must be 0 (no limit) or more");
            }
            if (delayMs < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(delayMs), delayMs, "must be 0 or more");
            }
            return new NativeStrategy(
                "RepeatingAttempt",
                () => NativeMethods.make_reconnection_strategy_repeating_attempt((uint)count, (uint)delayMs));
        }

        /// <summary>An exponential backoff: attempt n waits
        /// <c>min(maxDelayMs, initialDelayMs × multiplier^(n-1))</c>, spread by
        /// <paramref name="jitter"/>; after <paramref name="maxAttempts"/> attempts (0: no limit
        /// other than the reconnection timeout) it aborts.</summary>
        public static IReconnectionStrategy ExponentialBackoff(
            int initialDelayMs,
            double multiplier,
            int maxDelayMs,
            Jitter jitter = Jitter.Full,
            int maxAttempts = 0)
        {
            if (initialDelayMs < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(initialDelayMs), initialDelayMs, "must be 0 or more");
            }
            if (maxDelayMs < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(maxDelayMs), maxDelayMs, "must be 0 or more");
            }
            if (maxAttempts < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(maxAttempts), maxAttempts, "must be 0 (no limit) or more");
            }
            Func<IntPtr> make = () => NativeMethods.make_reconnection_strategy_exponential_backoff(
                (uint)initialDelayMs, multiplier, (uint)maxDelayMs, (int)jitter, (uint)maxAttempts);
            // The core decides what is valid: ask it now, so a bad value fails here rather than
            // at Open.
            IntPtr probe = make();
            if (probe == IntPtr.Zero)
            {
                throw new ArgumentException(
                    "invalid exponential backoff: the multiplier must be a finite number >= 1 and the jitter a Jitter value",
                    Enum.IsDefined(typeof(Jitter), jitter) ? nameof(multiplier) : nameof(jitter));
            }
            NativeMethods.free_reconnection_strategy(probe);
            return new NativeStrategy("ExponentialBackoff", make);
        }

        /// <summary>Aborts at once: a lost connection closes the session (<c>CLOSED_FAILED</c>,
        /// reason <c>reconnect_aborted</c>) after passing through <c>RECOVERING_RECONNECT</c>.</summary>
        public static IReconnectionStrategy AbortImmediately { get; } =
            new NativeStrategy("AbortImmediately", NativeMethods.make_reconnection_strategy_abort_immediately);
    }

    /// <summary>A strategy implemented by the core; the binding hands it to session_create.</summary>
    internal sealed class NativeStrategy : IReconnectionStrategy
    {
        private readonly string name;
        private readonly Func<IntPtr> make;

        internal NativeStrategy(string name, Func<IntPtr> make)
        {
            this.name = name;
            this.make = make;
        }

        /// <summary>A new RECONNECTION_STRATEGY_T the caller frees.</summary>
        internal IntPtr Create() => make();

        Task IReconnectionStrategy.PerformReconnection(IReconnectionAttempt attempt) =>
            throw new NotSupportedException(
                "the built-in strategy " + name + " runs inside Tether's core; it is not called from managed code");

        public override string ToString() => name;
    }

    /// <summary>The attempt handed to a managed strategy: the library thread that called the
    /// strategy waits on it for a decision.</summary>
    internal sealed class ReconnectionAttempt : IReconnectionAttempt
    {
        private const int Undecided = -1;
        private int decision = Undecided;
        private readonly ManualResetEventSlim decided = new ManualResetEventSlim(false);
        private readonly ReconnectionAttemptInfo info;

        /// <summary>An attempt with these facts (never null: the core records them before it
        /// calls the strategy).</summary>
        internal ReconnectionAttempt(ReconnectionAttemptInfo info)
        {
            this.info = info ?? new ReconnectionAttemptInfo(0, TimeSpan.Zero, TimeSpan.Zero, null, null);
        }

        public int Number => info.Number;

        public TimeSpan Elapsed => info.Elapsed;

        public TimeSpan Remaining => info.Remaining;

        public string LastReason => info.LastReason;

        public TimeSpan? RetryAfter => info.RetryAfter;

        public override string ToString() => info.ToString();

        public void Start() => Decide(NativeMethods.ActionStart);

        public void Abort() => Decide(NativeMethods.ActionAbort);

        public bool IsDecided => Volatile.Read(ref decision) != Undecided;

        /// <summary>The first decision wins; returns whether this one did.</summary>
        internal bool Decide(int action)
        {
            if (Interlocked.CompareExchange(ref decision, action, Undecided) != Undecided)
            {
                return false;
            }
            decided.Set();
            return true;
        }

        /// <summary>Waits up to <paramref name="timeout"/> for a decision; the decision, or
        /// null.</summary>
        internal int? Wait(TimeSpan timeout)
        {
            if (!decided.Wait(timeout))
            {
                return null;
            }
            return Volatile.Read(ref decision);
        }
    }
}
