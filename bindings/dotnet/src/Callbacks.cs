using System;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using Tether.Interop;

namespace Tether
{
    /// <summary>
    /// The entry points native code calls. The delegates live in static readonly fields for the
    /// life of the process, so the garbage collector never frees one that native code may still
    /// call; the function pointers handed to native code are taken from them once. Managed
    /// objects are reached through GCHandles passed as the C ABI's user pointers (listener
    /// context, strategy args, subscription context), freed only after session_free /
    /// session_unsubscribe returned. No exception ever propagates into native code.
    /// </summary>
    internal static class Callbacks
    {
        private static readonly StateChangedCallback StateChangedDelegate = OnStateChanged;
        private static readonly PerformReconnectionCallback PerformReconnectionDelegate = OnPerformReconnection;
        private static readonly TopicHandlerCallback TopicDelegate = OnTopic;
        private static readonly GapCallback GapDelegate = OnGap;
        private static readonly PublishDoneCallback PublishDoneDelegate = OnPublishDone;
        private static readonly ReconnectionOutcomeCallback SuccessDelegate = OnSuccess;
        private static readonly ReconnectionOutcomeCallback FailureDelegate = OnFailure;

        internal static readonly IntPtr StateChangedPointer = Marshal.GetFunctionPointerForDelegate(StateChangedDelegate);
        internal static readonly IntPtr PerformReconnectionPointer = Marshal.GetFunctionPointerForDelegate(PerformReconnectionDelegate);
        internal static readonly IntPtr TopicPointer = Marshal.GetFunctionPointerForDelegate(TopicDelegate);
        internal static readonly IntPtr GapPointer = Marshal.GetFunctionPointerForDelegate(GapDelegate);
        internal static readonly IntPtr PublishDonePointer = Marshal.GetFunctionPointerForDelegate(PublishDoneDelegate);
        internal static readonly IntPtr SuccessPointer = Marshal.GetFunctionPointerForDelegate(SuccessDelegate);
        internal static readonly IntPtr FailurePointer = Marshal.GetFunctionPointerForDelegate(FailureDelegate);

        private static void OnGap(IntPtr session, IntPtr report)
        {
            try
            {
                var native = (GapReportNative)Marshal.PtrToStructure(report, typeof(GapReportNative));
                var topics = new System.Collections.Generic.List<TopicLoss>();
                int size = Marshal.SizeOf(typeof(TopicLossNative));
                for (ulong i = 0; i < native.TopicCount.ToUInt64(); i++)
                {
                    var loss = (TopicLossNative)Marshal.PtrToStructure(
                        new IntPtr(native.Topics.ToInt64() + (long)i * size), typeof(TopicLossNative));
                    topics.Add(new TopicLoss(Utf8.Decode(loss.Topic), (long)loss.Count));
                }
                var args = new GapReportEventArgs((long)native.LostFrom, (long)native.LostTo, (long)native.LostCount, topics);
                Session.FromContext(NativeMethods.session_listener_context(session))?.OnGap(args);
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("tether: gap callback failed: " + e);
            }
        }

        private static void OnPublishDone(IntPtr context, int code, IntPtr message)
        {
            try
            {
                var handle = GCHandle.FromIntPtr(context);
                var done = (TaskCompletionSource<bool>)handle.Target;
                handle.Free();
                if (code == NativeMethods.ErrorNone)
                {
                    done.SetResult(true);
                }
                else
                {
                    done.SetException(Errors.From((TetherErrorCode)code, "publish", Utf8.Decode(message)));
                }
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("tether: publish completion failed: " + e);
            }
        }

        private static void OnSuccess(IntPtr session, IntPtr args)
        {
            try
            {
                Session.FromContext(args)?.OnReconnectionOutcome(session, true);
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("tether: success callback failed: " + e);
            }
        }

        private static void OnFailure(IntPtr session, IntPtr args)
        {
            try
            {
                Session.FromContext(args)?.OnReconnectionOutcome(session, false);
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("tether: failure callback failed: " + e);
            }
        }

        private static void OnStateChanged(IntPtr session, int oldState, int newState)
        {
            try
            {
                Session.FromContext(NativeMethods.session_listener_context(session))
                    ?.OnStateChanged(session, oldState, newState);
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("tether: state callback failed: " + e);
            }
        }

        private static int OnPerformReconnection(IntPtr session, IntPtr args)
        {
            try
            {
                var managed = Session.FromContext(args);
                return managed == null ? NativeMethods.ActionAbort : managed.PerformReconnection(session);
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("tether: reconnection callback failed, aborting: " + e);
                return NativeMethods.ActionAbort;
            }
        }

        private static void OnTopic(IntPtr topic, IntPtr value, UIntPtr length, IntPtr context)
        {
            try
            {
                if (context == IntPtr.Zero || !(GCHandle.FromIntPtr(context).Target is Subscription subscription))
                {
                    return;
                }
                ulong size = length.ToUInt64();
                if (size > int.MaxValue)
                {
                    throw new InvalidOperationException("a topic value over 2 GiB cannot be delivered");
                }
                var bytes = new byte[(int)size];
                if (size > 0)
                {
                    Marshal.Copy(value, bytes, 0, (int)size);
                }
                subscription.Session.OnTopic(subscription, new TopicUpdate(Utf8.Decode(topic), bytes));
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("tether: topic callback failed: " + e);
            }
        }
    }

    /// <summary>Tether's native runtime: its threads, and their shutdown.</summary>
    public static class TetherRuntime
    {
        /// <summary>The deadline of the shutdown at process exit.</summary>
        private const uint ExitShutdownMs = 5000;

        private static int hooked;

        /// <summary>Closes every open session (requests sent before are confirmed first) and
        /// stops Tether's runtime, joining its threads, all within <paramref name="timeout"/>.
        /// Done automatically when the process exits; call it yourself before unloading the
        /// library. Sessions still need <c>Dispose</c>; a later <c>Open</c> starts a fresh
        /// runtime.</summary>
        /// <returns>true when everything stopped in time. false when something was left
        /// behind, the sessions being closed and the runtime stopped all the same: called from
        /// a session's handler (a handler that exits the process, say), whose own thread cannot
        /// be joined; or a handler or a session still busy at the deadline.</returns>
        /// <exception cref="ArgumentOutOfRangeException">A negative timeout.</exception>
        /// <exception cref="TetherException">A failure of the library itself
        /// (<see cref="TetherErrorCode.Internal"/>).</exception>
        public static bool Shutdown(TimeSpan timeout)
        {
            double ms = timeout.TotalMilliseconds;
            if (ms < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "must not be negative");
            }
            var error = default(TetherErrorNative);
            if (NativeMethods.tether_shutdown(ms > uint.MaxValue ? uint.MaxValue : (uint)ms, ref error))
            {
                return true;
            }
            switch ((TetherErrorCode)error.Code)
            {
                case TetherErrorCode.WrongThread:
                case TetherErrorCode.TimedOut:
                    NativeMethods.tether_error_free(ref error);
                    return false;
                default:
                    throw Errors.Take(ref error, "cannot shut Tether down");
            }
        }

        /// <summary>The name of a state as the C ABI spells it (<c>"CONNECTED_ACTIVE"</c>, ...,
        /// <c>"UNKNOWN"</c> for any other value).</summary>
        public static string StateName(SessionState state) =>
            Utf8.Decode(NativeMethods.session_state_as_string((int)state));

        internal static void SessionOpened()
        {
            if (Interlocked.Exchange(ref hooked, 1) == 0)
            {
                // Mono waits at exit for the native threads that called managed code (Tether's
                // callback threads) until they end: shut the library down first, which closes
                // the sessions the application forgot to dispose and joins those threads. From
                // a handler that exits the process (the hook then runs on the handler's
                // thread) it still closes the sessions and stops the runtime; only that thread
                // is not joined (it is the one exiting).
                AppDomain.CurrentDomain.ProcessExit += (sender, args) =>
                {
                    var error = default(TetherErrorNative);
                    if (!NativeMethods.tether_shutdown(ExitShutdownMs, ref error))
                    {
                        NativeMethods.tether_error_free(ref error);
                    }
                };
            }
        }

    }
}
