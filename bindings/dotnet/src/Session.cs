using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using Tether.Interop;

namespace Tether
{
    /// <summary>
    /// A session with a Tether server that survives bad networks: when its connection drops it
    /// enters <c>RECOVERING_RECONNECT</c>, its reconnection strategy decides when to try again,
    /// and on success it resumes with the same <see cref="SessionId"/> and subscriptions, every
    /// message in both directions delivered exactly once, in order.
    /// </summary>
    /// <remarks>
    /// Every member may be called from any thread. Events and handlers run on the session's
    /// callback thread (a Tether library thread), one at a time, in order. A session stays
    /// open, and reachable from native code, until <see cref="IDisposable.Dispose"/>: always
    /// dispose it (<c>using</c>). After <c>Dispose</c> returns no handler of the session runs
    /// again.
    /// </remarks>
    public interface ISession : IDisposable
    {
        /// <summary>The session's id, 32 lowercase hex digits, the same across every
        /// reconnection.</summary>
        string SessionId { get; }

        /// <summary>The current state (it may be ahead of the <see cref="StateChanged"/> events
        /// delivered so far).</summary>
        SessionState State { get; }

        /// <summary>Why the session closed, as a stable snake_case name (<c>closed_by_client</c>,
        /// <c>reconnect_aborted</c>, <c>reconnect_timeout</c>, ...); null while it is open.</summary>
        string CloseReason { get; }

        /// <summary>The facts of the session's latest reconnection attempt (the one being
        /// decided while the session is recovering), as its strategy was given them, whatever
        /// the strategy (the built-in ones included): after a server drained, say, its
        /// <c>LastReason</c> is <c>server_draining</c> and its <c>RetryAfter</c> the server's
        /// hint. Null before the first reconnection attempt.</summary>
        ReconnectionAttemptInfo LastReconnectionAttempt { get; }

        /// <summary>Every state change, with the state left and the state entered, in order,
        /// exactly once each. Handlers added with
        /// <see cref="ISessionFactory.SessionStateChangedHandler"/> also see the first
        /// (<c>CONNECTING</c> → <c>CONNECTED_ACTIVE</c>).</summary>
        event EventHandler<SessionListenerEventArgs> StateChanged;

        /// <summary>Exceptions thrown by the application's handlers and strategy (which never
        /// cross into native code). May be raised on any thread. Without a handler they are
        /// written to standard error.</summary>
        event EventHandler<SessionErrorEventArgs> Error;

        /// <summary>Messages lost during an outage that the server could not replay (its
        /// recovery buffer overflowed, or a handler slower than the stream made the session
        /// stop reading past <see cref="ISessionFactory.DeliveryLimit"/>); the topics' current
        /// values follow as snapshots. Raised on the session's callback thread, in order with the
        /// updates. Handlers added with <see cref="ISessionFactory.GapHandler"/> see every
        /// report.</summary>
        event EventHandler<GapReportEventArgs> Gap;

        /// <summary>The ping period the server granted on the current connection (see
        /// <see cref="ISessionFactory.PingPeriod"/>); null while the session is not
        /// connected.</summary>
        TimeSpan? PingPeriod { get; }

        /// <summary>Subscribes to <paramref name="selector"/> (a topic path in which a whole
        /// segment <c>*</c> matches one level and a last segment <c>**</c> any depth) and returns
        /// once the server has accepted it. <paramref name="handler"/> then receives the current
        /// value of every matching topic, then every update, in order, exactly once each, across
        /// reconnections, on the session's callback thread.</summary>
        void Subscribe(string selector, Action<TopicUpdate> handler);

        /// <summary><see cref="Subscribe"/> on a thread-pool thread.</summary>
        Task SubscribeAsync(string selector, Action<TopicUpdate> handler);

        /// <summary>Removes the subscriptions to <paramref name="selector"/> (the same text as
        /// subscribed); after it returns their handlers are no longer called.</summary>
        void Unsubscribe(string selector);

        /// <summary>Publishes <paramref name="value"/> (UTF-8) on <paramref name="topic"/> and
        /// returns once the server has applied it. While the session is recovering it waits
        /// for the reconnection. If the session closes first it throws
        /// <see cref="OutcomeUnknownException"/> when the publish was already sent (the server
        /// may have applied it), else <see cref="SessionClosedException"/> (not applied).</summary>
        void Publish(string topic, string value);

        /// <summary>Publishes bytes (copied) on <paramref name="topic"/>; as
        /// <see cref="Publish(string, string)"/>.</summary>
        void Publish(string topic, byte[] value);

        /// <summary><see cref="Publish(string, string)"/> on a thread-pool thread.</summary>
        Task PublishAsync(string topic, string value);

        /// <summary><see cref="Publish(string, byte[])"/> on a thread-pool thread.</summary>
        Task PublishAsync(string topic, byte[] value);

        /// <summary>Queues a publish of <paramref name="value"/> (UTF-8) on
        /// <paramref name="topic"/> at once, in call order, without waiting or using a thread;
        /// the task completes when the server applied it, or fails with why not
        /// (<see cref="AccessDeniedException"/>, <see cref="SessionClosedException"/>: never
        /// applied; <see cref="OutcomeUnknownException"/>: sent, not confirmed). Throws at the
        /// call when nothing was queued: <see cref="TetherException"/> with
        /// <see cref="TetherErrorCode.QueueFull"/> (see <see cref="ISessionFactory.SendQueue"/>),
        /// <see cref="SessionClosedException"/>, <see cref="InvalidTopicException"/>.</summary>
        Task SendAsync(string topic, string value);

        /// <summary><see cref="SendAsync(string, string)"/> with bytes (copied at the
        /// call).</summary>
        Task SendAsync(string topic, byte[] value);

        /// <summary>Closes the session (<c>CLOSED_BY_CLIENT</c>) and returns once handlers have
        /// been told (unless called from one of the session's own handlers). Requests already
        /// under way on other threads (a <c>Publish</c> waiting for its confirmation) are sent
        /// and confirmed first, within 5 s; calls made after it throw
        /// <see cref="SessionClosedException"/>. Closing a closed session does nothing.
        /// <see cref="IDisposable.Dispose"/> also closes.</summary>
        void Close();
    }

    internal sealed class Session : ISession
    {
        /// <summary>How often a strategy waiting for a decision checks whether the session
        /// closed meanwhile (by Close, Dispose, the reconnection timeout or shutdown).</summary>
        private static readonly TimeSpan DecisionPoll = TimeSpan.FromMilliseconds(50);

        /// <summary>The session whose callback this thread is running, if any.</summary>
        [ThreadStatic]
        private static Session inCallbackOf;

        private readonly IReconnectionStrategy strategy;
        private readonly object gate = new object();
        private readonly List<KeyValuePair<string, GCHandle>> subscriptions = new List<KeyValuePair<string, GCHandle>>();
        private GCHandle self;
        private IntPtr native;
        private int inFlight;
        private bool disposing;
        /// <summary>Dispose was called from one of the session's own callbacks while calls
        /// were in flight: the last of them frees the session.</summary>
        private bool deferredFree;
        private bool freed;
        private SessionState finalState;
        private string finalReason;
        private ReconnectionAttemptInfo finalAttempt;

        private Session(SessionFactory factory)
        {
            strategy = factory.Strategy;
            StateChanged = factory.StateHandlers;
            Error = factory.ErrorHandlers;
            Gap = factory.GapHandlers;
        }

        public event EventHandler<GapReportEventArgs> Gap;

        public event EventHandler<SessionListenerEventArgs> StateChanged;

        public event EventHandler<SessionErrorEventArgs> Error;

        public string SessionId { get; private set; }

        internal static Session Open(SessionFactory factory, string url)
        {
            byte[] urlBytes = Utf8.Encode(url, nameof(url));
            var fallbacks = new List<byte[]>();
            foreach (var fallback in factory.FallbackUrls)
            {
                fallbacks.Add(Utf8.Encode(fallback, "fallbackUrl"));
            }
            byte[] principalBytes = Utf8.Encode(factory.PrincipalName, "principal");
            byte[] passwordBytes = Utf8.Encode(factory.PasswordText, "password");

            var session = new Session(factory);
            session.self = GCHandle.Alloc(session);
            IntPtr context = GCHandle.ToIntPtr(session.self);
            IntPtr credentials = IntPtr.Zero;
            IntPtr strategy = IntPtr.Zero;
            try
            {
                if (passwordBytes != null)
                {
                    credentials = NativeMethods.credentials_create_password(passwordBytes);
                    if (credentials == IntPtr.Zero)
                    {
                        throw new ArgumentException("could not be used as credentials", "password");
                    }
                }
                strategy = MakeStrategy(factory, context);
                var listener = new SessionListenerNative
                {
                    OnStateChanged = Callbacks.StateChangedPointer,
                    Context = context,
                };
                var error = default(TetherErrorNative);
                IntPtr handle = CreateWithOptions(
                    factory, urlBytes, fallbacks, principalBytes, credentials, ref listener, strategy, ref error);
                if (handle == IntPtr.Zero)
                {
                    throw Errors.Take(ref error, "cannot open a session to " + url, nameof(url));
                }
                session.Attach(handle);
                IntPtr id = NativeMethods.session_id_to_string(NativeMethods.session_id_get(handle));
                session.SessionId = Utf8.Decode(id);
                NativeMethods.tether_string_free(id);
                TetherRuntime.SessionOpened();
                return session;
            }
            catch
            {
                // No callback ever comes for a session that failed to open.
                if (session.native == IntPtr.Zero)
                {
                    session.self.Free();
                }
                throw;
            }
            finally
            {
                NativeMethods.free_reconnection_strategy(strategy);
                NativeMethods.credentials_free(credentials);
            }
        }

        /// <summary>session_create_with_options: <paramref name="url"/> then the fallbacks, and
        /// the factory's options (SESSION_OPTIONS_T), pinned for the call.</summary>
        private static IntPtr CreateWithOptions(
            SessionFactory factory,
            byte[] url,
            List<byte[]> fallbacks,
            byte[] principal,
            IntPtr credentials,
            ref SessionListenerNative listener,
            IntPtr strategy,
            ref TetherErrorNative error)
        {
            var all = new List<byte[]> { url };
            all.AddRange(fallbacks);
            byte[] pem = factory.TlsRootsPem == null ? null : Utf8.Encode(factory.TlsRootsPem, "pem");
            var pins = new GCHandle[all.Count + 1];
            var pointers = new IntPtr[all.Count];
            try
            {
                for (int i = 0; i < all.Count; i++)
                {
                    pins[i] = GCHandle.Alloc(all[i], GCHandleType.Pinned);
                    pointers[i] = pins[i].AddrOfPinnedObject();
                }
                var options = new SessionOptionsNative
                {
                    PingPeriodMs = factory.PingPeriodMs,
                    DeliveryLimit = factory.DeliveryLimitUpdates,
                    Strict = factory.StrictMode ? (byte)1 : (byte)0,
                    MaxQueuedRequests = factory.MaxQueuedRequests,
                    MaxQueuedBytes = factory.MaxQueuedBytes,
                    CloseTimeoutMs = factory.CloseTimeoutMs,
                    OnGap = Callbacks.GapPointer,
                };
                if (pem != null)
                {
                    pins[all.Count] = GCHandle.Alloc(pem, GCHandleType.Pinned);
                    options.TlsRootCertificatesPem = pins[all.Count].AddrOfPinnedObject();
                }
                return NativeMethods.session_create_with_options(
                    pointers, (UIntPtr)pointers.Length, principal, credentials, ref listener, strategy, ref options, ref error);
            }
            finally
            {
                foreach (var pin in pins)
                {
                    if (pin.IsAllocated)
                    {
                        pin.Free();
                    }
                }
            }
        }

        /// <summary>The RECONNECTION_STRATEGY_T for the factory's settings (IntPtr.Zero: the
        /// library's default strategy and timeout).</summary>
        private static IntPtr MakeStrategy(SessionFactory factory, IntPtr context)
        {
            IntPtr strategy;
            if (factory.Strategy is NativeStrategy builtIn)
            {
                strategy = builtIn.Create();
            }
            else if (factory.Strategy != null)
            {
                bool hooks = factory.Strategy is IReconnectionOutcome;
                strategy = NativeMethods.make_reconnection_strategy_user_function(
                    Callbacks.PerformReconnectionPointer,
                    context,
                    hooks ? Callbacks.SuccessPointer : IntPtr.Zero,
                    hooks ? Callbacks.FailurePointer : IntPtr.Zero);
            }
            else if (factory.TimeoutMs.HasValue)
            {
                // The timeout travels inside a strategy: the core's default one.
                strategy = NativeMethods.make_reconnection_strategy_default();
            }
            else
            {
                return IntPtr.Zero;
            }
            if (strategy == IntPtr.Zero)
            {
                throw new TetherException(TetherErrorCode.Internal, "the reconnection strategy could not be made");
            }
            if (factory.TimeoutMs.HasValue)
            {
                NativeMethods.reconnection_strategy_set_timeout(strategy, (uint)factory.TimeoutMs.Value);
            }
            return strategy;
        }

        /// <summary>Records the native pointer: from session_create's return or, if a callback
        /// comes first, from the callback's argument (the same pointer).</summary>
        private void Attach(IntPtr handle)
        {
            Interlocked.CompareExchange(ref native, handle, IntPtr.Zero);
        }

        internal static Session FromContext(IntPtr context)
        {
            return context == IntPtr.Zero ? null : GCHandle.FromIntPtr(context).Target as Session;
        }

        /// <summary>Marks a native call in flight (session_free waits for none).</summary>
        private IntPtr Enter()
        {
            lock (gate)
            {
                if (disposing)
                {
                    throw new ObjectDisposedException(nameof(ISession), "the session has been disposed");
                }
                inFlight++;
                return native;
            }
        }

        private void Exit()
        {
            bool freeNow;
            lock (gate)
            {
                inFlight--;
                freeNow = inFlight == 0 && disposing && !freed && deferredFree;
                if (inFlight == 0)
                {
                    Monitor.PulseAll(gate);
                }
            }
            if (freeNow)
            {
                Free();
            }
        }

        public SessionState State
        {
            get
            {
                lock (gate)
                {
                    if (freed)
                    {
                        return finalState;
                    }
                    return (SessionState)NativeMethods.session_state_get(native);
                }
            }
        }

        public string CloseReason
        {
            get
            {
                lock (gate)
                {
                    if (freed)
                    {
                        return finalReason;
                    }
                    return Utf8.Decode(NativeMethods.session_close_reason(native));
                }
            }
        }

        public ReconnectionAttemptInfo LastReconnectionAttempt
        {
            get
            {
                lock (gate)
                {
                    if (freed)
                    {
                        return finalAttempt;
                    }
                    return ReconnectionAttemptInfo.Of(native);
                }
            }
        }

        public TimeSpan? PingPeriod
        {
            get
            {
                lock (gate)
                {
                    if (freed)
                    {
                        return null;
                    }
                    uint ms = NativeMethods.session_ping_period_ms(native);
                    return ms == 0 ? (TimeSpan?)null : TimeSpan.FromMilliseconds(ms);
                }
            }
        }

        public void Subscribe(string selector, Action<TopicUpdate> handler)
        {
            if (selector == null)
            {
                throw new ArgumentNullException(nameof(selector));
            }
            if (handler == null)
            {
                throw new ArgumentNullException(nameof(handler));
            }
            byte[] selectorBytes = Utf8.Encode(selector, nameof(selector));
            IntPtr handle = Enter();
            try
            {
                var subscription = GCHandle.Alloc(new Subscription(this, handler));
                var error = default(TetherErrorNative);
                if (!NativeMethods.session_subscribe(
                        handle, selectorBytes, Callbacks.TopicPointer, GCHandle.ToIntPtr(subscription), ref error))
                {
                    subscription.Free();
                    throw Errors.Take(ref error, "cannot subscribe to " + selector, nameof(selector));
                }
                lock (gate)
                {
                    subscriptions.Add(new KeyValuePair<string, GCHandle>(selector, subscription));
                }
            }
            finally
            {
                Exit();
            }
        }

        public Task SubscribeAsync(string selector, Action<TopicUpdate> handler) =>
            Task.Run(() => Subscribe(selector, handler));

        public void Unsubscribe(string selector)
        {
            if (selector == null)
            {
                throw new ArgumentNullException(nameof(selector));
            }
            byte[] selectorBytes = Utf8.Encode(selector, nameof(selector));
            IntPtr handle = Enter();
            try
            {
                var error = default(TetherErrorNative);
                if (!NativeMethods.session_unsubscribe(handle, selectorBytes, ref error))
                {
                    throw Errors.Take(ref error, "cannot unsubscribe from " + selector, nameof(selector));
                }
                // No handler of these subscriptions runs any more (a handler running now on
                // this thread already holds its target).
                lock (gate)
                {
                    subscriptions.RemoveAll(s =>
                    {
                        if (s.Key != selector)
                        {
                            return false;
                        }
                        s.Value.Free();
                        return true;
                    });
                }
            }
            finally
            {
                Exit();
            }
        }

        public void Publish(string topic, string value)
        {
            if (value == null)
            {
                throw new ArgumentNullException(nameof(value));
            }
            Publish(topic, System.Text.Encoding.UTF8.GetBytes(value));
        }

        public void Publish(string topic, byte[] value)
        {
            if (topic == null)
            {
                throw new ArgumentNullException(nameof(topic));
            }
            if (value == null)
            {
                throw new ArgumentNullException(nameof(value));
            }
            byte[] topicBytes = Utf8.Encode(topic, nameof(topic));
            IntPtr handle = Enter();
            try
            {
                var error = default(TetherErrorNative);
                if (!NativeMethods.session_publish(handle, topicBytes, value, (UIntPtr)value.Length, ref error))
                {
                    throw Errors.Take(ref error, "cannot publish on " + topic, nameof(topic));
                }
            }
            finally
            {
                Exit();
            }
        }

        public Task PublishAsync(string topic, string value) => Task.Run(() => Publish(topic, value));

        public Task PublishAsync(string topic, byte[] value) => Task.Run(() => Publish(topic, value));

        public Task SendAsync(string topic, string value)
        {
            if (value == null)
            {
                throw new ArgumentNullException(nameof(value));
            }
            return SendAsync(topic, System.Text.Encoding.UTF8.GetBytes(value));
        }

        public Task SendAsync(string topic, byte[] value)
        {
            if (topic == null)
            {
                throw new ArgumentNullException(nameof(topic));
            }
            if (value == null)
            {
                throw new ArgumentNullException(nameof(value));
            }
            byte[] topicBytes = Utf8.Encode(topic, nameof(topic));
            var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            // Freed by the completion callback (called once for a queued send), or below.
            var context = GCHandle.Alloc(done);
            IntPtr handle = Enter();
            try
            {
                var error = default(TetherErrorNative);
                if (!NativeMethods.session_send(
                        handle, topicBytes, value, (UIntPtr)value.Length, Callbacks.PublishDonePointer,
                        GCHandle.ToIntPtr(context), ref error))
                {
                    context.Free();
                    throw Errors.Take(ref error, "cannot publish on " + topic, nameof(topic));
                }
            }
            finally
            {
                Exit();
            }
            return done.Task;
        }

        public void Close()
        {
            IntPtr handle;
            lock (gate)
            {
                if (disposing)
                {
                    return;
                }
                inFlight++;
                handle = native;
            }
            try
            {
                var error = default(TetherErrorNative);
                if (!NativeMethods.session_close(handle, ref error))
                {
                    throw Errors.Take(ref error, "cannot close the session");
                }
            }
            finally
            {
                Exit();
            }
        }

        /// <summary>Closes the session, waits for the calls in flight on other threads, then
        /// frees it: after it returns no handler of this session runs. Called from one of the
        /// session's own handlers, the session is freed when the last call in flight ends.</summary>
        public void Dispose()
        {
            IntPtr handle;
            lock (gate)
            {
                if (disposing)
                {
                    return;
                }
                disposing = true;
                handle = native;
                inFlight++;
            }
            // Closing first makes calls blocked on other threads (a publish waiting for a
            // reconnection) return, and a strategy waiting for a decision give up.
            var error = default(TetherErrorNative);
            if (!NativeMethods.session_close(handle, ref error))
            {
                NativeMethods.tether_error_free(ref error);
            }
            bool freeNow;
            lock (gate)
            {
                inFlight--;
                if (inCallbackOf == this)
                {
                    // Waiting here could deadlock with a call that waits for this very
                    // callback (an Unsubscribe): the last call in flight frees instead.
                    deferredFree = inFlight > 0;
                    freeNow = inFlight == 0;
                }
                else
                {
                    while (inFlight > 0)
                    {
                        Monitor.Wait(gate);
                    }
                    freeNow = true;
                }
            }
            if (freeNow)
            {
                Free();
            }
        }

        private void Free()
        {
            IntPtr handle;
            lock (gate)
            {
                if (freed)
                {
                    return;
                }
                // The session is closed (Dispose closed it first): its state is final. From
                // here on nothing calls native code with the handle, not even a handler that
                // session_free is waiting for.
                handle = native;
                finalState = (SessionState)NativeMethods.session_state_get(handle);
                finalReason = Utf8.Decode(NativeMethods.session_close_reason(handle));
                finalAttempt = ReconnectionAttemptInfo.Of(handle);
                freed = true;
                native = IntPtr.Zero;
            }
            // No callback of the session runs after this returns (or, from one of its own
            // callbacks, after that callback returns).
            NativeMethods.session_free(handle);
            lock (gate)
            {
                foreach (var s in subscriptions)
                {
                    s.Value.Free();
                }
                subscriptions.Clear();
            }
            if (self.IsAllocated)
            {
                self.Free();
            }
        }

        // ----- callbacks (on the session's callback thread) -----

        internal void OnStateChanged(IntPtr handle, int oldState, int newState)
        {
            Attach(handle);
            var handlers = StateChanged;
            if (handlers == null)
            {
                return;
            }
            string reason = Utf8.Decode(NativeMethods.session_state_change_reason(handle));
            var args = new SessionListenerEventArgs((SessionState)oldState, (SessionState)newState, reason);
            foreach (EventHandler<SessionListenerEventArgs> h in handlers.GetInvocationList())
            {
                InCallback(() => h(this, args), "state handler");
            }
        }

        internal void OnGap(GapReportEventArgs report)
        {
            var handlers = Gap;
            if (handlers == null)
            {
                return;
            }
            foreach (EventHandler<GapReportEventArgs> h in handlers.GetInvocationList())
            {
                InCallback(() => h(this, report), "gap handler");
            }
        }

        /// <summary>The strategy's success / failure hook (it implements
        /// <see cref="IReconnectionOutcome"/>), with the facts of the attempt.</summary>
        internal void OnReconnectionOutcome(IntPtr handle, bool success)
        {
            Attach(handle);
            if (!(strategy is IReconnectionOutcome hooks))
            {
                return;
            }
            var info = ReconnectionAttemptInfo.Of(handle);
            InCallback(
                () =>
                {
                    if (success)
                    {
                        hooks.OnSuccess(info);
                    }
                    else
                    {
                        hooks.OnFailure(info);
                    }
                },
                "reconnection strategy");
        }

        internal void OnTopic(Subscription subscription, TopicUpdate update)
        {
            InCallback(() => subscription.Handler(update), "topic handler");
        }

        /// <summary>Calls the managed strategy and waits for its decision: the core's strategy
        /// callback may block (it runs on the session's callback thread), the managed strategy
        /// is asynchronous.</summary>
        internal int PerformReconnection(IntPtr handle)
        {
            Attach(handle);
            var attempt = new ReconnectionAttempt(ReconnectionAttemptInfo.Of(handle));
            Task task = null;
            InCallback(
                () =>
                {
                    try
                    {
                        task = strategy.PerformReconnection(attempt);
                    }
                    catch (Exception e)
                    {
                        // Reported before the abort, so before the session's close is.
                        ReportError("reconnection strategy", e);
                        attempt.Abort();
                    }
                },
                "reconnection strategy");
            if (task != null)
            {
                task.ContinueWith(
                    t =>
                    {
                        if (t.IsFaulted || t.IsCanceled)
                        {
                            Exception e = t.IsFaulted
                                ? (Exception)t.Exception.Flatten().InnerException ?? t.Exception
                                : new TaskCanceledException(t);
                            ReportError("reconnection strategy", e);
                            attempt.Abort();
                        }
                    },
                    TaskContinuationOptions.ExecuteSynchronously);
            }
            while (true)
            {
                int? decision = attempt.Wait(DecisionPoll);
                if (decision.HasValue)
                {
                    return decision.Value;
                }
                // Closed meanwhile (Close, Dispose, reconnection timeout, shutdown): the answer
                // no longer matters; stop waiting so the session's close can be reported.
                bool closed;
                lock (gate)
                {
                    closed = freed || NativeMethods.session_is_closed(handle);
                }
                if (closed)
                {
                    attempt.Abort();
                    return NativeMethods.ActionAbort;
                }
            }
        }

        private void InCallback(Action action, string context)
        {
            var previous = inCallbackOf;
            inCallbackOf = this;
            try
            {
                action();
            }
            catch (Exception e)
            {
                ReportError(context, e);
            }
            finally
            {
                inCallbackOf = previous;
            }
        }

        private void ReportError(string context, Exception exception)
        {
            var handlers = Error;
            var args = new SessionErrorEventArgs(context, exception);
            if (handlers == null)
            {
                Console.Error.WriteLine("tether: unhandled exception in a " + context + ": " + exception);
                return;
            }
            foreach (EventHandler<SessionErrorEventArgs> h in handlers.GetInvocationList())
            {
                try
                {
                    h(this, args);
                }
                catch (Exception e)
                {
                    Console.Error.WriteLine("tether: the error handler threw: " + e);
                }
            }
        }

        public override string ToString() => "Session " + SessionId;
    }

    /// <summary>A subscription's handler, reached from native code through a GCHandle.</summary>
    internal sealed class Subscription
    {
        internal Subscription(Session session, Action<TopicUpdate> handler)
        {
            Session = session;
            Handler = handler;
        }

        internal Session Session { get; }

        internal Action<TopicUpdate> Handler { get; }
    }
}
