using System;
using Tether.Interop;

namespace Tether
{
    /// <summary>The C ABI's error codes (<c>TETHER_ERROR_*</c>).</summary>
    public enum TetherErrorCode
    {
        /// <summary>No error.</summary>
        None = NativeMethods.ErrorNone,

        /// <summary>A required argument was missing.</summary>
        NullArgument = NativeMethods.ErrorNullArgument,

        /// <summary>A string was not valid UTF-8.</summary>
        InvalidUtf8 = NativeMethods.ErrorInvalidUtf8,

        /// <summary>An argument was out of range or malformed.</summary>
        InvalidArgument = NativeMethods.ErrorInvalidArgument,

        /// <summary>The URL could not be used (Tether speaks <c>ws://host:port[/path]</c>).</summary>
        InvalidUrl = NativeMethods.ErrorInvalidUrl,

        /// <summary>A topic path or selector is malformed.</summary>
        InvalidTopic = NativeMethods.ErrorInvalidTopic,

        /// <summary>The session could not be opened: the server could not be reached, the
        /// handshake failed, ...</summary>
        ConnectionFailed = NativeMethods.ErrorConnectionFailed,

        /// <summary>The server refused the principal or its credentials.</summary>
        AuthenticationFailed = NativeMethods.ErrorAuthenticationFailed,

        /// <summary>The principal may not do this.</summary>
        AccessDenied = NativeMethods.ErrorAccessDenied,

        /// <summary>The server refused the request for another reason; the session stays
        /// open.</summary>
        Rejected = NativeMethods.ErrorRejected,

        /// <summary>The session is closed, or closed while the call waited, before the request
        /// was sent: it was certainly not applied.</summary>
        SessionClosed = NativeMethods.ErrorSessionClosed,

        /// <summary>The send queue is full while disconnected; nothing was queued.</summary>
        QueueFull = NativeMethods.ErrorQueueFull,

        /// <summary>Tether's runtime could not be started.</summary>
        Runtime = NativeMethods.ErrorRuntime,

        /// <summary>A bug in Tether. Please report it.</summary>
        Internal = NativeMethods.ErrorInternal,

        /// <summary>The call is not allowed where it was made, or could not do all of its work
        /// from there (a shutdown from a handler cannot join the handler's own thread).</summary>
        WrongThread = NativeMethods.ErrorWrongThread,

        /// <summary>The session closed after the request was sent and before the server
        /// confirmed it: the server may or may not have applied it.</summary>
        OutcomeUnknown = NativeMethods.ErrorOutcomeUnknown,

        /// <summary>The call's time ran out before all of its work was done (a shutdown with a
        /// handler or a session still busy at its deadline).</summary>
        TimedOut = NativeMethods.ErrorTimedOut,
    }

    /// <summary>A failure reported by Tether. Invalid arguments are reported as
    /// <see cref="ArgumentException"/> instead (including a malformed URL, topic or selector).</summary>
    public class TetherException : Exception
    {
        /// <summary>Creates an exception with a code and a message.</summary>
        public TetherException(TetherErrorCode code, string message)
            : base(message)
        {
            Code = code;
        }

        /// <summary>The C ABI's error code.</summary>
        public TetherErrorCode Code { get; }
    }

    /// <summary>A session could not be opened (<see cref="TetherErrorCode.ConnectionFailed"/>
    /// or <see cref="TetherErrorCode.AuthenticationFailed"/>).</summary>
    public class SessionEstablishmentException : TetherException
    {
        /// <summary>Creates an exception with a code and a message.</summary>
        public SessionEstablishmentException(TetherErrorCode code, string message)
            : base(code, message)
        {
        }
    }

    /// <summary>The server refused the principal or its credentials.</summary>
    public sealed class AuthenticationFailedException : SessionEstablishmentException
    {
        /// <summary>Creates an exception with a message.</summary>
        public AuthenticationFailedException(string message)
            : base(TetherErrorCode.AuthenticationFailed, message)
        {
        }
    }

    /// <summary>A topic path or selector is malformed (checked before anything is sent): an
    /// <see cref="ArgumentException"/> that says so with <see cref="Code"/>.</summary>
    public sealed class InvalidTopicException : ArgumentException
    {
        /// <summary>Creates the exception.</summary>
        public InvalidTopicException(string message, string parameter)
            : base(message, parameter)
        {
        }

        /// <summary>Always <see cref="TetherErrorCode.InvalidTopic"/>.</summary>
        public TetherErrorCode Code => TetherErrorCode.InvalidTopic;
    }

    /// <summary>The principal may not subscribe to or publish on this topic.</summary>
    public sealed class AccessDeniedException : TetherException
    {
        /// <summary>Creates an exception with a message.</summary>
        public AccessDeniedException(string message)
            : base(TetherErrorCode.AccessDenied, message)
        {
        }
    }

    /// <summary>The session is closed, or closed while the call waited. For a request
    /// (<c>Publish</c>, <c>Subscribe</c>, <c>Unsubscribe</c>): the request was never sent, so
    /// the server did not apply it, unless the exception is an
    /// <see cref="OutcomeUnknownException"/> (catch that one first).</summary>
    public class SessionClosedException : TetherException
    {
        /// <summary>Creates an exception with a message (<see cref="TetherErrorCode.SessionClosed"/>).</summary>
        public SessionClosedException(string message)
            : base(TetherErrorCode.SessionClosed, message)
        {
        }

        /// <summary>Creates an exception with a code and a message, for subclasses.</summary>
        protected SessionClosedException(TetherErrorCode code, string message)
            : base(code, message)
        {
        }
    }

    /// <summary>The session closed after the request was sent and before the server confirmed
    /// it: the server may or may not have applied it. Check the application's state before
    /// retrying (a blind retry may apply it twice). A request still unsent when the session
    /// closed fails with a plain <see cref="SessionClosedException"/> instead, and a request
    /// the server confirmed never fails.</summary>
    public sealed class OutcomeUnknownException : SessionClosedException
    {
        /// <summary>Creates an exception with a message.</summary>
        public OutcomeUnknownException(string message)
            : base(TetherErrorCode.OutcomeUnknown, message)
        {
        }
    }

    internal static class Errors
    {
        /// <summary>Turns a filled-in TETHER_ERROR_T into the matching exception and frees its
        /// message. <paramref name="parameter"/> names the argument a URL / topic error is
        /// about.</summary>
        internal static Exception Take(ref TetherErrorNative error, string operation, string parameter = null)
        {
            string detail = Utf8.Decode(error.Message);
            var code = (TetherErrorCode)error.Code;
            NativeMethods.tether_error_free(ref error);
            return From(code, operation, detail, parameter);
        }

        /// <summary>The exception of a TETHER_ERROR_* code.</summary>
        internal static Exception From(TetherErrorCode code, string operation, string detail, string parameter = null)
        {
            string message = operation + ": " + (detail ?? "no details");
            switch (code)
            {
                case TetherErrorCode.InvalidTopic:
                    return new InvalidTopicException(message, parameter);
                case TetherErrorCode.NullArgument:
                case TetherErrorCode.InvalidUtf8:
                case TetherErrorCode.InvalidArgument:
                case TetherErrorCode.InvalidUrl:
                    return new ArgumentException(message, parameter);
                case TetherErrorCode.ConnectionFailed:
                    return new SessionEstablishmentException(code, message);
                case TetherErrorCode.AuthenticationFailed:
                    return new AuthenticationFailedException(message);
                case TetherErrorCode.AccessDenied:
                    return new AccessDeniedException(message);
                case TetherErrorCode.SessionClosed:
                    return new SessionClosedException(message);
                case TetherErrorCode.OutcomeUnknown:
                    return new OutcomeUnknownException(message);
                default:
                    return new TetherException(code, message);
            }
        }
    }
}
