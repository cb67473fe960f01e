// Raw P/Invoke declarations of the C ABI in crates/tether-ffi/include/tether.h, by hand (one
// declaration per exported function, same names, same order as the header). Nothing here is
// public: the idiomatic layer (Sessions, Session, ...) is the API.
//
// Marshalling rules used throughout:
// - strings go in as NUL-terminated UTF-8 byte arrays (Utf8.Encode), never through the
//   runtime's string marshaller, whose "ANSI" is not UTF-8 everywhere; NULL is a null array;
// - strings come out as IntPtr and are decoded as UTF-8 (Utf8.Decode); the caller frees them
//   when the header says it owns them;
// - C `bool` is one byte: [return: MarshalAs(UnmanagedType.I1)];
// - callbacks are passed as IntPtr function pointers of delegates held in static readonly
//   fields (Callbacks.cs), so the garbage collector never frees a delegate native code may
//   still call.

using System;
using System.Runtime.InteropServices;
using System.Text;

namespace Tether.Interop
{
    /// <summary>TETHER_ERROR_T.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct TetherErrorNative
    {
        public int Code;
        public IntPtr Message;
    }

    /// <summary>SESSION_LISTENER_T.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct SessionListenerNative
    {
        public IntPtr OnStateChanged;
        public IntPtr Context;
    }

    /// <summary>RECONNECTION_ATTEMPT_INFO_T.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct ReconnectionAttemptInfoNative
    {
        public uint Number;
        public ulong ElapsedMs;
        public ulong RemainingMs;
        /// <summary>A static string: never freed.</summary>
        public IntPtr LastReason;
        /// <summary>-1 (RECONNECTION_NO_RETRY_AFTER) when the server gave no hint.</summary>
        public long RetryAfterMs;
    }

    /// <summary>SESSION_OPTIONS_T (zero: the defaults).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct SessionOptionsNative
    {
        /// <summary>NUL-terminated UTF-8, pinned by the caller for the call; or zero.</summary>
        public IntPtr TlsRootCertificatesPem;
        public uint PingPeriodMs;
        public uint DeliveryLimit;
        /// <summary>C bool: one byte.</summary>
        public byte Strict;
        public uint MaxQueuedRequests;
        public ulong MaxQueuedBytes;
        public uint CloseTimeoutMs;
        public uint ConnectTimeoutMs;
        public IntPtr OnGap;
    }

    /// <summary>GAP_REPORT_T.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct GapReportNative
    {
        public ulong LostFrom;
        public ulong LostTo;
        public ulong LostCount;
        public IntPtr Topics;
        public UIntPtr TopicCount;
    }

    /// <summary>TOPIC_LOSS_T.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct TopicLossNative
    {
        public IntPtr Topic;
        public ulong Count;
    }

    /// <summary>GAP_CB_T.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void GapCallback(IntPtr session, IntPtr report);

    /// <summary>PUBLISH_DONE_CB_T.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void PublishDoneCallback(IntPtr context, int code, IntPtr message);

    /// <summary>SESSION_STATE_CHANGED_CB_T.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void StateChangedCallback(IntPtr session, int oldState, int newState);

    /// <summary>TOPIC_HANDLER_T.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void TopicHandlerCallback(IntPtr topic, IntPtr value, UIntPtr length, IntPtr context);

    /// <summary>PERFORM_RECONNECTION_CB_T.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate int PerformReconnectionCallback(IntPtr session, IntPtr args);

    /// <summary>PERFORM_RECONNECTION_SUCCESS_CB_T and PERFORM_RECONNECTION_FAILURE_CB_T.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void ReconnectionOutcomeCallback(IntPtr session, IntPtr args);

    internal static class NativeMethods
    {
        /// <summary>The library's name: libtether_ffi.so on Linux, tether_ffi.dll on Windows,
        /// libtether_ffi.dylib on macOS. Found through the platform's loader path
        /// (LD_LIBRARY_PATH here) or a dllmap in Tether.dll.config.</summary>
        private const string Lib = "tether_ffi";

        // Error codes (TETHER_ERROR_*).
        internal const int ErrorNone = 0;
        internal const int ErrorNullArgument = 1;
        internal const int ErrorInvalidUtf8 = 2;
        internal const int ErrorInvalidArgument = 3;
        internal const int ErrorInvalidUrl = 4;
        internal const int ErrorInvalidTopic = 5;
        internal const int ErrorConnectionFailed = 6;
        internal const int ErrorAuthenticationFailed = 7;
        internal const int ErrorAccessDenied = 8;
        internal const int ErrorRejected = 9;
        internal const int ErrorSessionClosed = 10;
        internal const int ErrorQueueFull = 11;
        internal const int ErrorRuntime = 12;
        internal const int ErrorInternal = 13;
        internal const int ErrorWrongThread = 14;
        internal const int ErrorOutcomeUnknown = 15;
        internal const int ErrorTimedOut = 16;

        // RECONNECTION_ATTEMPT_ACTION_*.
        internal const int ActionStart = 0;
        internal const int ActionAbort = 1;

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr credentials_create_password(byte[] password);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void credentials_free(IntPtr credentials);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void tether_error_free(ref TetherErrorNative error);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr session_create(
            byte[] url,
            byte[] principal,
            IntPtr credentials,
            ref SessionListenerNative listener,
            IntPtr strategy,
            ref TetherErrorNative error);

        /// <summary><paramref name="urls"/>: pointers to NUL-terminated UTF-8 strings, pinned
        /// by the caller for the duration of the call.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr session_create_with_urls(
            IntPtr[] urls,
            UIntPtr urlCount,
            byte[] principal,
            IntPtr credentials,
            ref SessionListenerNative listener,
            IntPtr strategy,
            ref TetherErrorNative error);

        /// <summary><paramref name="urls"/>: as session_create_with_urls.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr session_create_with_options(
            IntPtr[] urls,
            UIntPtr urlCount,
            byte[] principal,
            IntPtr credentials,
            ref SessionListenerNative listener,
            IntPtr strategy,
            ref SessionOptionsNative options,
            ref TetherErrorNative error);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool session_send(
            IntPtr session,
            byte[] topic,
            byte[] value,
            UIntPtr length,
            IntPtr onDone,
            IntPtr context,
            ref TetherErrorNative error);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint session_ping_period_ms(IntPtr session);

        /// <summary>A static string: never freed.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr session_state_change_reason(IntPtr session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr make_reconnection_strategy_abort_immediately();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool session_close(IntPtr session, ref TetherErrorNative error);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void session_free(IntPtr session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int session_state_get(IntPtr session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool session_is_connected(IntPtr session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool session_is_recovering(IntPtr session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool session_is_closed(IntPtr session);

        /// <summary>A static string: never freed.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr session_close_reason(IntPtr session);

        /// <summary>Owned by the session: never freed.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr session_id_get(IntPtr session);

        /// <summary>The caller owns the result: tether_string_free.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr session_id_to_string(IntPtr sessionId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr session_listener_context(IntPtr session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool session_subscribe(
            IntPtr session,
            byte[] selector,
            IntPtr handler,
            IntPtr context,
            ref TetherErrorNative error);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool session_unsubscribe(IntPtr session, byte[] selector, ref TetherErrorNative error);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool session_publish(
            IntPtr session,
            byte[] topic,
            byte[] value,
            UIntPtr length,
            ref TetherErrorNative error);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool tether_shutdown(uint timeoutMs, ref TetherErrorNative error);

        /// <summary>A static string: never freed.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr session_state_as_string(int state);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool session_reconnection_attempt_get(
            IntPtr session,
            out ReconnectionAttemptInfoNative info);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr make_reconnection_strategy_user_function(
            IntPtr callback,
            IntPtr args,
            IntPtr onSuccess,
            IntPtr onFailure);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr make_reconnection_strategy_default();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr make_reconnection_strategy_repeating_attempt(uint count, uint delayMs);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr make_reconnection_strategy_exponential_backoff(
            uint initialDelayMs,
            double multiplier,
            uint maxDelayMs,
            int jitter,
            uint maxAttempts);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void reconnection_strategy_set_timeout(IntPtr strategy, uint timeoutMs);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void free_reconnection_strategy(IntPtr strategy);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void tether_string_free(IntPtr s);
    }

    /// <summary>UTF-8 strings to and from native code.</summary>
    internal static class Utf8
    {
        /// <summary>NUL-terminated UTF-8 bytes of <paramref name="value"/>; null for null.
        /// Throws ArgumentException (naming <paramref name="parameter"/>) for a string with a
        /// NUL character, which C would silently cut short, or with unpaired surrogates.</summary>
        internal static byte[] Encode(string value, string parameter)
        {
            if (value == null)
            {
                return null;
            }
            if (value.IndexOf('\0') >= 0)
            {
                throw new ArgumentException("must not contain a NUL character", parameter);
            }
            try
            {
                var strict = new UTF8Encoding(false, true);
                var bytes = new byte[strict.GetByteCount(value) + 1];
                strict.GetBytes(value, 0, value.Length, bytes, 0);
                return bytes;
            }
            catch (EncoderFallbackException e)
            {
                throw new ArgumentException("is not valid Unicode (unpaired surrogate)", parameter, e);
            }
        }

        /// <summary>Decodes a NUL-terminated UTF-8 string; null for NULL. Does not free it.</summary>
        internal static string Decode(IntPtr p)
        {
            if (p == IntPtr.Zero)
            {
                return null;
            }
            int length = 0;
            while (Marshal.ReadByte(p, length) != 0)
            {
                length++;
            }
            return Decode(p, length);
        }

        /// <summary>Decodes <paramref name="length"/> bytes of UTF-8 (invalid sequences become
        /// U+FFFD).</summary>
        internal static string Decode(IntPtr p, int length)
        {
            if (length == 0)
            {
                return string.Empty;
            }
            var bytes = new byte[length];
            Marshal.Copy(p, bytes, 0, length);
            return Encoding.UTF8.GetString(bytes);
        }
    }
}
