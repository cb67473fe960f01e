using System;
using System.Collections.Generic;
using System.Threading.Tasks;

namespace Tether
{
    /// <summary>
    /// Configures and opens sessions. Immutable: every method returns a new factory, so a
    /// factory may be shared and reused. Start from <see cref="Sessions"/>.
    /// </summary>
    public interface ISessionFactory
    {
        /// <summary>The principal to authenticate as (none: anonymous).</summary>
        ISessionFactory Principal(string principal);

        /// <summary>The principal's password (needs a principal).</summary>
        ISessionFactory Password(string password);

        /// <summary>How long a disconnected session keeps trying to reconnect, in milliseconds
        /// (default 60 000; the server may impose a shorter maximum). When it elapses the
        /// session closes (<c>CLOSED_FAILED</c>, reason <c>reconnect_timeout</c>) whatever the
        /// strategy is doing. 0 disables reconnection.</summary>
        ISessionFactory ReconnectionTimeout(int milliseconds);

        /// <summary>Disables reconnection: a lost connection closes the session
        /// (<c>ReconnectionTimeout(0)</c>).</summary>
        ISessionFactory NoReconnection();

        /// <summary>The strategy that decides when to try to reconnect: your own
        /// <see cref="IReconnectionStrategy"/> or one of <see cref="ReconnectionStrategies"/>.
        /// Default: the core's (first attempt within 100 ms, then exponential backoff with full
        /// jitter from 250 ms to 10 s), with or without a <see cref="ReconnectionTimeout"/>.</summary>
        ISessionFactory ReconnectionStrategy(IReconnectionStrategy strategy);

        /// <summary>Adds a server to try when the ones before do not answer (the URL given to
        /// <see cref="Open"/> comes first, then the fallbacks in the order added). Opening tries
        /// them in order until one answers; reconnection attempts rotate through them: an attempt
        /// goes back to the server the session was on, then tries the next; after a server asked
        /// the session to go away (<c>server_draining</c>), the first attempt tries the next.
        /// Every URL must serve the same sessions (one server restarted in place, or the nodes of
        /// a cluster).</summary>
        /// <param name="url"><c>ws://host:port[/path]</c>.</param>
        ISessionFactory FallbackUrl(string url);

        /// <summary>Adds a handler of the session's state changes, attached before the session
        /// opens so it sees every transition from <c>CONNECTING</c> on. Called on a Tether
        /// library thread, one change at a time, in order.</summary>
        ISessionFactory SessionStateChangedHandler(EventHandler<SessionListenerEventArgs> handler);

        /// <summary>Adds a handler of exceptions thrown by the application's callbacks (state
        /// and topic handlers, the reconnection strategy). Without one they are written to
        /// standard error.</summary>
        ISessionFactory ErrorHandler(EventHandler<SessionErrorEventArgs> handler);

        /// <summary>Trusts the certificates in <paramref name="pem"/> (PEM text, e.g. a private
        /// CA's) for <c>wss://</c>, in addition to the system's roots. May be called several
        /// times.</summary>
        ISessionFactory TlsRootCertificatePem(string pem);

        /// <summary>Asks the server to ping the session every <paramref name="period"/> (it
        /// grants one within its bounds, by default 1 s to 60 s: see
        /// <see cref="ISession.PingPeriod"/>); a connection silent for one and a half periods is
        /// taken as dead. Default: the server's own period.</summary>
        ISessionFactory PingPeriod(TimeSpan period);

        /// <summary>Most updates that may wait for the session's topic handlers (default
        /// 10,000): past it the session stops reading, so a handler slower than the stream costs
        /// bounded memory; the server's slow-consumer handling then ends the connection and the
        /// resume reports what was dropped (<see cref="GapHandler"/>).</summary>
        ISessionFactory DeliveryLimit(int updates);

        /// <summary>Close the session (reason <c>lost_messages</c>) rather than resume with a gap
        /// report when the server could not keep every message during an outage.</summary>
        ISessionFactory Strict(bool strict);

        /// <summary>Bounds the requests kept until the server acknowledges them, including those
        /// made while disconnected (default 10,000 or 8 MiB); past it
        /// <see cref="ISession.PublishAsync(string, byte[])"/> throws
        /// <see cref="TetherErrorCode.QueueFull"/>.</summary>
        ISessionFactory SendQueue(int maxRequests, long maxBytes);

        /// <summary>How long <see cref="ISession.Close"/> waits for the requests made before it
        /// to be sent and confirmed (default 5 s); past it those sent fail with
        /// <see cref="OutcomeUnknownException"/>, the others with
        /// <see cref="SessionClosedException"/>.</summary>
        ISessionFactory CloseTimeout(TimeSpan timeout);

        /// <summary>Adds a handler of gap reports (messages lost during an outage that the
        /// server could not replay), called on the session's callback thread.</summary>
        ISessionFactory GapHandler(EventHandler<GapReportEventArgs> handler);

        /// <summary>Opens a session synchronously: returns once it is <c>CONNECTED_ACTIVE</c>.
        /// Throws <see cref="ArgumentNullException"/> / <see cref="ArgumentException"/> for a
        /// missing or malformed URL, <see cref="SessionEstablishmentException"/> when the server
        /// cannot be reached or refuses the handshake, <see cref="AuthenticationFailedException"/>
        /// when it refuses the credentials.</summary>
        /// <param name="url"><c>ws://host:port[/path]</c>.</param>
        ISession Open(string url);

        /// <summary><see cref="Open"/> on a thread-pool thread.</summary>
        Task<ISession> OpenAsync(string url);
    }

    /// <summary>
    /// The entry point: <c>Tether.Sessions.Principal("control").Password("password")
    /// .ReconnectionTimeout(600000).ReconnectionStrategy(strategy)
    /// .SessionStateChangedHandler(handler).Open(url)</c>.
    /// </summary>
    public static class Sessions
    {
        /// <summary>A factory with nothing configured (anonymous, default strategy and timeout).</summary>
        public static ISessionFactory Factory => SessionFactory.Empty;

        /// <inheritdoc cref="ISessionFactory.Principal"/>
        public static ISessionFactory Principal(string principal) => Factory.Principal(principal);

        /// <inheritdoc cref="ISessionFactory.Password"/>
        public static ISessionFactory Password(string password) => Factory.Password(password);

        /// <inheritdoc cref="ISessionFactory.ReconnectionTimeout"/>
        public static ISessionFactory ReconnectionTimeout(int milliseconds) => Factory.ReconnectionTimeout(milliseconds);

        /// <inheritdoc cref="ISessionFactory.NoReconnection"/>
        public static ISessionFactory NoReconnection() => Factory.NoReconnection();

        /// <inheritdoc cref="ISessionFactory.ReconnectionStrategy"/>
        public static ISessionFactory ReconnectionStrategy(IReconnectionStrategy strategy) =>
            Factory.ReconnectionStrategy(strategy);

        /// <inheritdoc cref="ISessionFactory.FallbackUrl"/>
        public static ISessionFactory FallbackUrl(string url) => Factory.FallbackUrl(url);

        /// <inheritdoc cref="ISessionFactory.SessionStateChangedHandler"/>
        public static ISessionFactory SessionStateChangedHandler(EventHandler<SessionListenerEventArgs> handler) =>
            Factory.SessionStateChangedHandler(handler);

        /// <inheritdoc cref="ISessionFactory.ErrorHandler"/>
        public static ISessionFactory ErrorHandler(EventHandler<SessionErrorEventArgs> handler) =>
            Factory.ErrorHandler(handler);

        /// <inheritdoc cref="ISessionFactory.Open"/>
        public static ISession Open(string url) => Factory.Open(url);

        /// <inheritdoc cref="ISessionFactory.OpenAsync"/>
        public static Task<ISession> OpenAsync(string url) => Factory.OpenAsync(url);
    }

    internal sealed class SessionFactory : ISessionFactory
    {
        internal static readonly SessionFactory Empty = new SessionFactory();

        internal string PrincipalName { get; private set; }
        internal string PasswordText { get; private set; }
        internal int? TimeoutMs { get; private set; }
        internal IReconnectionStrategy Strategy { get; private set; }
        internal IReadOnlyList<string> FallbackUrls { get; private set; } = new string[0];
        internal EventHandler<SessionListenerEventArgs> StateHandlers { get; private set; }
        internal EventHandler<SessionErrorEventArgs> ErrorHandlers { get; private set; }
        internal EventHandler<GapReportEventArgs> GapHandlers { get; private set; }
        internal string TlsRootsPem { get; private set; }
        internal uint PingPeriodMs { get; private set; }
        internal uint DeliveryLimitUpdates { get; private set; }
        internal bool StrictMode { get; private set; }
        internal uint MaxQueuedRequests { get; private set; }
        internal ulong MaxQueuedBytes { get; private set; }
        internal uint CloseTimeoutMs { get; private set; }

        private static uint Millis(TimeSpan t, string name, bool positive)
        {
            double ms = t.TotalMilliseconds;
            if (ms < (positive ? 1 : 0) || ms > uint.MaxValue)
            {
                throw new ArgumentOutOfRangeException(name, t, positive ? "must be at least 1 ms" : "must not be negative");
            }
            return (uint)ms;
        }

        public ISessionFactory TlsRootCertificatePem(string pem)
        {
            if (pem == null)
            {
                throw new ArgumentNullException(nameof(pem));
            }
            return With(f => f.TlsRootsPem = (TlsRootsPem ?? "") + pem + "\n");
        }

        public ISessionFactory PingPeriod(TimeSpan period)
        {
            uint ms = Millis(period, nameof(period), true);
            return With(f => f.PingPeriodMs = ms);
        }

        public ISessionFactory DeliveryLimit(int updates)
        {
            if (updates < 1)
            {
                throw new ArgumentOutOfRangeException(nameof(updates), updates, "must be 1 or more");
            }
            return With(f => f.DeliveryLimitUpdates = (uint)updates);
        }

        public ISessionFactory Strict(bool strict) => With(f => f.StrictMode = strict);

        public ISessionFactory SendQueue(int maxRequests, long maxBytes)
        {
            if (maxRequests < 1)
            {
                throw new ArgumentOutOfRangeException(nameof(maxRequests), maxRequests, "must be 1 or more");
            }
            if (maxBytes < 1)
            {
                throw new ArgumentOutOfRangeException(nameof(maxBytes), maxBytes, "must be 1 or more");
            }
            return With(f =>
            {
                f.MaxQueuedRequests = (uint)maxRequests;
                f.MaxQueuedBytes = (ulong)maxBytes;
            });
        }

        public ISessionFactory CloseTimeout(TimeSpan timeout)
        {
            uint ms = Millis(timeout, nameof(timeout), true);
            return With(f => f.CloseTimeoutMs = ms);
        }

        public ISessionFactory GapHandler(EventHandler<GapReportEventArgs> handler)
        {
            if (handler == null)
            {
                throw new ArgumentNullException(nameof(handler));
            }
            return With(f => f.GapHandlers += handler);
        }

        private SessionFactory With(Action<SessionFactory> change)
        {
            var copy = (SessionFactory)MemberwiseClone();
            change(copy);
            return copy;
        }

        public ISessionFactory Principal(string principal)
        {
            if (principal == null)
            {
                throw new ArgumentNullException(nameof(principal));
            }
            return With(f => f.PrincipalName = principal);
        }

        public ISessionFactory Password(string password)
        {
            if (password == null)
            {
                throw new ArgumentNullException(nameof(password));
            }
            return With(f => f.PasswordText = password);
        }

        public ISessionFactory ReconnectionTimeout(int milliseconds)
        {
            if (milliseconds < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(milliseconds), milliseconds, "must be 0 (no reconnection) or more");
            }
            return With(f => f.TimeoutMs = milliseconds);
        }

        public ISessionFactory NoReconnection() => ReconnectionTimeout(0);

        public ISessionFactory ReconnectionStrategy(IReconnectionStrategy strategy)
        {
            if (strategy == null)
            {
                throw new ArgumentNullException(nameof(strategy));
            }
            return With(f => f.Strategy = strategy);
        }

        public ISessionFactory FallbackUrl(string url)
        {
            if (url == null)
            {
                throw new ArgumentNullException(nameof(url));
            }
            var urls = new List<string>(FallbackUrls) { url };
            return With(f => f.FallbackUrls = urls);
        }

        public ISessionFactory SessionStateChangedHandler(EventHandler<SessionListenerEventArgs> handler)
        {
            if (handler == null)
            {
                throw new ArgumentNullException(nameof(handler));
            }
            return With(f => f.StateHandlers += handler);
        }

        public ISessionFactory ErrorHandler(EventHandler<SessionErrorEventArgs> handler)
        {
            if (handler == null)
            {
                throw new ArgumentNullException(nameof(handler));
            }
            return With(f => f.ErrorHandlers += handler);
        }

        public ISession Open(string url)
        {
            if (url == null)
            {
                throw new ArgumentNullException(nameof(url));
            }
            return Session.Open(this, url);
        }

        public Task<ISession> OpenAsync(string url)
        {
            if (url == null)
            {
                throw new ArgumentNullException(nameof(url));
            }
            return Task.Run(() => Open(url));
        }
    }
}
