using System;
using System.Collections.Generic;

namespace Tether
{
    /// <summary>
    /// A session's state. The three <c>CLOSED_*</c> states are terminal. The names are those of
    /// the seed's API and of the C ABI (<c>session_state_as_string</c>); the values are the C
    /// ABI's.
    /// </summary>
    /// <remarks>
    /// CONNECTING → CONNECTED_ACTIVE | CLOSED_*; CONNECTED_ACTIVE → RECOVERING_RECONNECT (when
    /// reconnection is enabled and the close reason allows it) | CLOSED_*; RECOVERING_RECONNECT
    /// → CONNECTED_ACTIVE | CLOSED_*.
    /// </remarks>
    public enum SessionState
    {
        /// <summary>Opening the first connection.</summary>
        CONNECTING = 0,

        /// <summary>Connected; messages flow.</summary>
        CONNECTED_ACTIVE = 1,

        /// <summary>The connection was lost; the reconnection strategy decides when to try
        /// again.</summary>
        RECOVERING_RECONNECT = 2,

        /// <summary>Closed by the application. Terminal.</summary>
        CLOSED_BY_CLIENT = 3,

        /// <summary>Closed by the server. Terminal.</summary>
        CLOSED_BY_SERVER = 4,

        /// <summary>Closed because something failed: reconnection aborted or timed out,
        /// authentication, ... (<see cref="ISession.CloseReason"/> says which). Terminal.</summary>
        CLOSED_FAILED = 5,
    }

    /// <summary>Questions about a <see cref="SessionState"/>.</summary>
    public static class SessionStateExtensions
    {
        /// <summary>Whether the state is one of the terminal <c>CLOSED_*</c> states.</summary>
        public static bool IsClosed(this SessionState state) =>
            state == SessionState.CLOSED_BY_CLIENT
            || state == SessionState.CLOSED_BY_SERVER
            || state == SessionState.CLOSED_FAILED;

        /// <summary>Whether the state is <c>CONNECTED_ACTIVE</c>.</summary>
        public static bool IsConnected(this SessionState state) => state == SessionState.CONNECTED_ACTIVE;

        /// <summary>Whether the state is <c>RECOVERING_RECONNECT</c>.</summary>
        public static bool IsRecovering(this SessionState state) => state == SessionState.RECOVERING_RECONNECT;
    }

    /// <summary>A state change: the state left and the state entered.</summary>
    public sealed class SessionListenerEventArgs : EventArgs
    {
        /// <summary>Creates the arguments of a state change.</summary>
        public SessionListenerEventArgs(SessionState oldState, SessionState newState)
            : this(oldState, newState, null)
        {
        }

        /// <summary>Creates the arguments of a state change with its reason.</summary>
        public SessionListenerEventArgs(SessionState oldState, SessionState newState, string reason)
        {
            OldState = oldState;
            NewState = newState;
            Reason = reason;
        }

        /// <summary>Why the state changed, as a stable snake_case name
        /// (<c>transport_error</c> on entering <c>RECOVERING_RECONNECT</c> after a cut,
        /// <c>server_draining</c>, <c>reconnect_aborted</c>, ...); null when the change has none
        /// (<c>CONNECTING</c> → <c>CONNECTED_ACTIVE</c>, a resume).</summary>
        public string Reason { get; }

        /// <summary>The state the session left.</summary>
        public SessionState OldState { get; }

        /// <summary>The state the session entered.</summary>
        public SessionState NewState { get; }

        /// <inheritdoc/>
        public override string ToString() => OldState + " -> " + NewState;
    }

    /// <summary>An exception thrown by application code that the session called (a state
    /// handler, a topic handler, a reconnection strategy), reported instead of crossing into
    /// native code.</summary>
    public sealed class SessionErrorEventArgs : EventArgs
    {
        /// <summary>Creates the arguments of an error report.</summary>
        public SessionErrorEventArgs(string context, Exception exception)
        {
            Context = context;
            Exception = exception;
        }

        /// <summary>Which callback failed, e.g. "reconnection strategy".</summary>
        public string Context { get; }

        /// <summary>What it threw.</summary>
        public Exception Exception { get; }

        /// <inheritdoc/>
        public override string ToString() => Context + ": " + Exception;
    }

    /// <summary>One value of a subscribed topic: the current value when the subscription is
    /// made, then every update, in order, exactly once each, across reconnections.</summary>
    public sealed class TopicUpdate
    {
        internal TopicUpdate(string topic, byte[] value)
        {
            Topic = topic;
            Value = value;
        }

        /// <summary>The topic's path, e.g. <c>prices/acme</c>.</summary>
        public string Topic { get; }

        /// <summary>The value's bytes (a copy the application owns).</summary>
        public byte[] Value { get; }

        /// <summary>The value decoded as UTF-8 (invalid sequences become U+FFFD).</summary>
        public string ValueAsString => System.Text.Encoding.UTF8.GetString(Value);

        /// <inheritdoc/>
        public override string ToString() => Topic + " = " + ValueAsString;
    }

    /// <summary>How many updates of one topic an outage lost.</summary>
    public sealed class TopicLoss
    {
        /// <summary>Creates a loss record.</summary>
        public TopicLoss(string topic, long count)
        {
            Topic = topic;
            Count = count;
        }

        /// <summary>The topic path.</summary>
        public string Topic { get; }

        /// <summary>Updates of it that were lost.</summary>
        public long Count { get; }
    }

    /// <summary>Messages the server could not replay after a resume (its recovery buffer
    /// overflowed during the outage); the topics' current values follow as snapshots.</summary>
    public sealed class GapReportEventArgs : EventArgs
    {
        /// <summary>Creates a gap report.</summary>
        public GapReportEventArgs(long lostFrom, long lostTo, long lostCount, IReadOnlyList<TopicLoss> topics)
        {
            LostFrom = lostFrom;
            LostTo = lostTo;
            LostCount = lostCount;
            Topics = topics;
        }

        /// <summary>First lost server sequence number.</summary>
        public long LostFrom { get; }

        /// <summary>Last lost server sequence number (inclusive).</summary>
        public long LostTo { get; }

        /// <summary>How many sequenced messages were lost.</summary>
        public long LostCount { get; }

        /// <summary>The topics whose updates were lost.</summary>
        public IReadOnlyList<TopicLoss> Topics { get; }
    }
}
