// The .NET binding's end-to-end tests: the real server (`tether-server --dev`) behind the fault
// proxy (`tether-faultproxy`), driven over its HTTP control API. Run by `cargo xtask test`:
//
//   LD_LIBRARY_PATH=target/debug mono target/dotnet/Tether.Tests.exe [name-filter]
//
// The last line printed is `N passed, N failed`; the exit status is 0 when nothing failed.

using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;

namespace Tether.Tests
{
    /// <summary>A strategy written as the seed's: awaits a delay, then starts.</summary>
    internal sealed class DelayThenStart : IReconnectionStrategy
    {
        private readonly int delayMs;
        private int calls;

        internal DelayThenStart(int delayMs)
        {
            this.delayMs = delayMs;
        }

        internal int Calls => Volatile.Read(ref calls);

        /// <summary>Stopwatch.GetTimestamp() when Start() was called last.</summary>
        internal long LastStart { get; private set; }

        public async Task PerformReconnection(IReconnectionAttempt attempt)
        {
            Interlocked.Increment(ref calls);
            await Task.Delay(delayMs);
            LastStart = Stopwatch.GetTimestamp();
            attempt.Start();
        }
    }

    /// <summary>Any strategy, from a lambda.</summary>
    internal sealed class LambdaStrategy : IReconnectionStrategy
    {
        private readonly Func<IReconnectionAttempt, Task> body;

        internal LambdaStrategy(Func<IReconnectionAttempt, Task> body)
        {
            this.body = body;
        }

        public Task PerformReconnection(IReconnectionAttempt attempt) => body(attempt);
    }

    internal static class Program
    {
        private const string Principal = "control";
        private const string Password = "password";
        private static TestServer server;
        private static int topicCounter;

        private static ISessionFactory Authenticated =>
            Sessions.Principal(Principal).Password(Password);

        /// <summary>How many times each exit scenario runs: TETHER_EXIT_RUNS (`cargo xtask
        /// soak` sets it), 3 by default.</summary>
        private static int ExitRuns
        {
            get
            {
                int runs;
                var text = Environment.GetEnvironmentVariable("TETHER_EXIT_RUNS");
                return int.TryParse(text, out runs) && runs > 0 ? runs : 3;
            }
        }

        /// <summary>The failure guard of an exit scenario test: it runs ExitRuns times.</summary>
        private static TimeSpan ExitGuard => TimeSpan.FromSeconds(60 + 30 * ExitRuns);

        private static string UniqueTopic(string name) =>
            "dotnet/" + Process.GetCurrentProcess().Id + "/" + Interlocked.Increment(ref topicCounter) + "/" + name;

        public static int Main(string[] args)
        {
            if (args.Length > 0 && args[0] == "--child")
            {
                return Child(args);
            }
            if (args.Length > 1 && args[0] == "--conformance-child")
            {
                return Conformance.Child(args[1]);
            }
            string filter = args.Length > 0 ? args[0] : null;
            int failed;
            try
            {
                server = new TestServer();
            }
            catch (Exception e)
            {
                Console.WriteLine("cannot start the test server: " + e);
                Console.WriteLine("0 passed, 1 failed");
                return 1;
            }
            using (server)
            {
                var runner = new Runner();
                runner.Add("open, id and close: CONNECTING -> CONNECTED_ACTIVE -> CLOSED_BY_CLIENT", OpenAndClose);
                runner.Add("async strategy waits then starts: same session id, every transition in order", AsyncStrategyWaitsThenStarts);
                runner.Add("strategy returns at once and starts later from a timer thread", StartLaterFromTimer);
                runner.Add("strategy aborts: CLOSED_FAILED, reason reconnect_aborted", StrategyAborts);
                runner.Add("faulted strategy task: aborts, exception reported", FaultedStrategyAborts);
                runner.Add("strategy called again after failed attempts (proxy refusing)", RetriesAfterFailedAttempts);
                runner.Add("strategy hooks: OnFailure then OnSuccess with the facts; ping period; SendAsync; state reasons", HooksPingPeriodAndSend);
                runner.Add("reconnection timeout elapses while the strategy is undecided: CLOSED_FAILED", TimeoutWhileUndecided);
                runner.Add("first decision wins: Start then Abort reconnects", FirstDecisionWins);
                runner.Add("built-in strategies: RepeatingAttempt reconnects, ExponentialBackoff validates", BuiltInStrategies);
                runner.Add("NoReconnection: a cut closes the session", NoReconnection);
                runner.Add("attempt facts: number, elapsed, remaining, last reason, no retry-after after a cut", AttemptFacts);
                runner.Add("drain (SIGTERM) and restart: strategies see server_draining and the server's retry-after", DrainReachesTheStrategies);
                runner.Add("FallbackUrl: open on the second URL; resume on the fallback when the first refuses", FallbackUrls);
                runner.Add("subscribe/publish across a cut: nothing lost, duplicated or reordered", SubscribePublishAcrossCut);
                runner.Add("binary values and unsubscribe", BinaryValuesAndUnsubscribe);
                runner.Add("Dispose while the strategy is undecided returns, no handler after it", DisposeWhileUndecided);
                runner.Add("Close while the strategy is undecided: CLOSED_BY_CLIENT", CloseWhileUndecided);
                runner.Add("Dispose from the session's own state handler", DisposeFromHandler);
                runner.Add("throwing handlers are reported, the session goes on", ThrowingHandlers);
                runner.Add("bad arguments give clear exceptions", BadArguments);
                runner.Add("open failures: unreachable server, wrong password", OpenFailures);
                runner.Add("OpenAsync, SubscribeAsync, PublishAsync", AsyncApi);
                runner.Add("error codes: every TETHER_ERROR_* of tether.h maps to its TetherErrorCode and exception", ErrorCodes);
                runner.Add("TetherRuntime.Shutdown: from a handler closes every session and returns false; a later Open starts afresh", Shutdown);
                runner.Add("exit scenario: Close with publishes in flight completes the ones sent, refuses the rest", CloseWithPublishesInFlight, ExitGuard);
                runner.Add("exit scenario: process exits by itself after Dispose()", () => ProcessExits("dispose"), ExitGuard);
                runner.Add("exit scenario: process exits by itself with a session never disposed", () => ProcessExits("forget"), ExitGuard);
                runner.Add("exit scenario: Main returns with publishes in flight, sessions never disposed", ReturnWithPublishesInFlight, ExitGuard);
                runner.Add("exit scenario: Environment.Exit from a topic handler while two threads publish", ExitFromHandler, ExitGuard);
                runner.Add("example SessionReconnection.cs reports the reconnection after a cut", Example);
                Conformance.Register(runner);
                failed = runner.Run(filter);
            }
            return failed == 0 ? 0 : 1;
        }

        private static void OpenAndClose()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                var session = Authenticated.SessionStateChangedHandler(states.Handler).Open(proxy.Url);
                try
                {
                    Assert.True(System.Text.RegularExpressions.Regex.IsMatch(session.SessionId ?? "", "^[0-9a-f]{32}$"),
                        "session id is 32 hex digits: " + session.SessionId);
                    states.WaitFor(SessionState.CONNECTED_ACTIVE);
                    Assert.Equal(SessionState.CONNECTED_ACTIVE, session.State, "state after open");
                    Assert.Equal(null, session.CloseReason, "no close reason while open");
                    session.Close();
                    // Close returns once the handlers have been told.
                    Assert.Sequence(
                        new[] { "CONNECTING->CONNECTED_ACTIVE", "CONNECTED_ACTIVE->CLOSED_BY_CLIENT" },
                        states.Transitions, "transitions");
                    Assert.Equal(SessionState.CLOSED_BY_CLIENT, session.State, "state after close");
                    Assert.Equal("closed_by_client", session.CloseReason, "close reason");
                    session.Close(); // closing a closed session does nothing
                    Assert.Equal(2, states.Transitions.Count, "no transition from a second close");
                    Assert.Equal("CONNECTED_ACTIVE", TetherRuntime.StateName(SessionState.CONNECTED_ACTIVE), "state names");
                }
                finally
                {
                    session.Dispose();
                }
                Assert.Equal(SessionState.CLOSED_BY_CLIENT, session.State, "state readable after Dispose");
                Assert.Throws<ObjectDisposedException>(() => session.Publish("a/b", "x"), "publish after Dispose");
                session.Dispose(); // twice is harmless
            }
        }

        private static void AsyncStrategyWaitsThenStarts()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var strategy = new DelayThenStart(300);
                var states = new StateRecorder();
                long recoveringAt = 0;
                using (var session = Authenticated
                    .ReconnectionTimeout(30000)
                    .ReconnectionStrategy(strategy)
                    .SessionStateChangedHandler(states.Handler)
                    .SessionStateChangedHandler((s, e) =>
                    {
                        if (e.NewState == SessionState.RECOVERING_RECONNECT)
                        {
                            recoveringAt = Stopwatch.GetTimestamp();
                        }
                    })
                    .Open(proxy.Url))
                {
                    string id = session.SessionId;
                    states.WaitFor(SessionState.CONNECTED_ACTIVE);
                    Assert.Equal(1, proxy.Cut(), "connections cut");
                    states.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                    long reconnectedAt = Stopwatch.GetTimestamp();
                    Assert.Equal(id, session.SessionId, "same session id after reconnection");
                    Assert.Equal(SessionState.CONNECTED_ACTIVE, session.State, "connected again");
                    Assert.Equal(1, strategy.Calls, "strategy calls");
                    double waitedMs = (strategy.LastStart - recoveringAt) * 1000.0 / Stopwatch.Frequency;
                    Assert.True(waitedMs >= 290, "the attempt started only after the strategy's await (" + waitedMs + " ms)");
                    Assert.True(reconnectedAt >= strategy.LastStart, "reconnected after Start()");
                    // The session works on the new connection.
                    session.Publish(UniqueTopic("after"), "ok");
                    session.Close();
                    Assert.Sequence(
                        new[]
                        {
                            "CONNECTING->CONNECTED_ACTIVE",
                            "CONNECTED_ACTIVE->RECOVERING_RECONNECT",
                            "RECOVERING_RECONNECT->CONNECTED_ACTIVE",
                            "CONNECTED_ACTIVE->CLOSED_BY_CLIENT",
                        },
                        states.Transitions,
                        "every transition, in order, once");
                    Assert.True(states.Threads.All(t => t != Thread.CurrentThread.ManagedThreadId),
                        "handlers run on a library thread, not the caller's");
                }
            }
        }

        private static void StartLaterFromTimer()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                var returned = new ManualResetEvent(false);
                Timer timer = null;
                var strategy = new LambdaStrategy(attempt =>
                {
                    // Decide later, on a timer thread, after the task completed.
                    timer = new Timer(_ => attempt.Start(), null, 200, Timeout.Infinite);
                    returned.Set();
                    return Task.FromResult(0);
                });
                using (var session = Authenticated.ReconnectionStrategy(strategy).SessionStateChangedHandler(states.Handler).Open(proxy.Url))
                {
                    string id = session.SessionId;
                    proxy.Cut();
                    Assert.Signalled(returned, "the strategy's task completing");
                    states.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                    Assert.Equal(id, session.SessionId, "same session id");
                }
                GC.KeepAlive(timer);
            }
        }

        private static void StrategyAborts()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                var strategy = new LambdaStrategy(async attempt =>
                {
                    await Task.Delay(50);
                    attempt.Abort();
                });
                using (var session = Authenticated.ReconnectionStrategy(strategy).SessionStateChangedHandler(states.Handler).Open(proxy.Url))
                {
                    proxy.Cut();
                    states.WaitFor(SessionState.CLOSED_FAILED);
                    Assert.Equal(SessionState.CLOSED_FAILED, session.State, "state");
                    Assert.Equal("reconnect_aborted", session.CloseReason, "close reason");
                    Assert.Sequence(
                        new[]
                        {
                            "CONNECTING->CONNECTED_ACTIVE",
                            "CONNECTED_ACTIVE->RECOVERING_RECONNECT",
                            "RECOVERING_RECONNECT->CLOSED_FAILED",
                        },
                        states.Transitions,
                        "transitions");
                    var e = Assert.Throws<SessionClosedException>(() => session.Publish("a/b", "x"), "publish on a closed session");
                    Assert.Equal(TetherErrorCode.SessionClosed, e.Code, "error code");
                }
            }
        }

        private static void FaultedStrategyAborts()
        {
            var cases = new[]
            {
                Tuple.Create("async throw", new LambdaStrategy(async attempt =>
                {
                    await Task.Delay(20);
                    throw new InvalidOperationException("strategy bug");
                }), typeof(InvalidOperationException)),
                Tuple.Create("synchronous throw", new LambdaStrategy(attempt =>
                {
                    throw new InvalidOperationException("strategy bug");
                }), typeof(InvalidOperationException)),
                Tuple.Create("cancelled task", new LambdaStrategy(attempt =>
                {
                    var cancelled = new TaskCompletionSource<int>();
                    cancelled.SetCanceled();
                    return cancelled.Task;
                }), typeof(TaskCanceledException)),
            };
            foreach (var c in cases)
            {
                using (var proxy = new FaultProxy(server.Address))
                {
                    var states = new StateRecorder();
                    var errors = new List<SessionErrorEventArgs>();
                    using (var session = Authenticated
                        .ReconnectionStrategy(c.Item2)
                        .SessionStateChangedHandler(states.Handler)
                        .ErrorHandler((s, e) => { lock (errors) { errors.Add(e); } })
                        .Open(proxy.Url))
                    {
                        proxy.Cut();
                        states.WaitFor(SessionState.CLOSED_FAILED);
                        Assert.Equal("reconnect_aborted", session.CloseReason, c.Item1 + ": close reason");
                        lock (errors)
                        {
                            Assert.Equal(1, errors.Count, c.Item1 + ": errors reported before the close");
                            Assert.Equal("reconnection strategy", errors[0].Context, c.Item1 + ": error context");
                            Assert.Equal(c.Item3, errors[0].Exception.GetType(), c.Item1 + ": the strategy's own exception");
                        }
                    }
                }
            }
        }

        private static void RetriesAfterFailedAttempts()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                int calls = 0;
                var strategy = new LambdaStrategy(async attempt =>
                {
                    int n = Interlocked.Increment(ref calls);
                    await Task.Delay(20);
                    if (n == 3)
                    {
                        proxy.Post("/heal");
                    }
                    attempt.Start();
                });
                using (var session = Authenticated.ReconnectionStrategy(strategy).SessionStateChangedHandler(states.Handler).Open(proxy.Url))
                {
                    string id = session.SessionId;
                    proxy.Post("/refuse");
                    proxy.Cut();
                    states.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                    Assert.Equal(3, Volatile.Read(ref calls), "strategy called once per attempt: 2 refused, then healed");
                    Assert.True(int.Parse(Json.Field(proxy.Get("/status"), "refused_total")) >= 2, "attempts were refused");
                    Assert.Equal(id, session.SessionId, "same session id");
                    Assert.Sequence(
                        new[] { "CONNECTING->CONNECTED_ACTIVE", "CONNECTED_ACTIVE->RECOVERING_RECONNECT", "RECOVERING_RECONNECT->CONNECTED_ACTIVE" },
                        states.Transitions,
                        "failed attempts stay in RECOVERING_RECONNECT");
                }
            }
        }

        /// <summary>A strategy with the C ABI's success / failure hooks.</summary>
        private sealed class HookedStrategy : IReconnectionStrategy, IReconnectionOutcome
        {
            private readonly Action<IReconnectionAttempt> perform;
            internal readonly BlockingCollection<string> Events = new BlockingCollection<string>();

            internal HookedStrategy(Action<IReconnectionAttempt> perform)
            {
                this.perform = perform;
            }

            public Task PerformReconnection(IReconnectionAttempt attempt)
            {
                Events.Add("attempt " + attempt.Number + " " + attempt.LastReason);
                perform(attempt);
                return Task.CompletedTask;
            }

            public void OnSuccess(ReconnectionAttemptInfo attempt) => Events.Add("success " + attempt.Number + " " + attempt.LastReason);

            public void OnFailure(ReconnectionAttemptInfo attempt) => Events.Add("failure " + attempt.Number + " " + attempt.LastReason);
        }

        private static void HooksPingPeriodAndSend()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var strategy = new HookedStrategy(attempt =>
                {
                    // The first attempt meets a refusing proxy and fails; the second succeeds.
                    proxy.Post(attempt.Number == 1 ? "/refuse" : "/heal");
                    attempt.Start();
                });
                var reasons = new BlockingCollection<string>();
                using (var session = Authenticated
                    .ReconnectionTimeout(30000)
                    .ReconnectionStrategy(strategy)
                    .PingPeriod(TimeSpan.FromMilliseconds(1500))
                    .DeliveryLimit(100)
                    .SessionStateChangedHandler((sender, e) => reasons.Add(e.NewState + " " + (e.Reason ?? "-")))
                    .Open(proxy.Url))
                {
                    Assert.Equal(TimeSpan.FromMilliseconds(1500), session.PingPeriod, "the ping period granted");
                    proxy.Cut();
                    var got = new List<string>();
                    for (int i = 0; i < 4; i++)
                    {
                        if (!strategy.Events.TryTake(out var e, Assert.Guard))
                        {
                            throw new TestFailure("no hook or attempt " + (i + 1) + " after " + string.Join(", ", got));
                        }
                        got.Add(e);
                    }
                    Assert.Sequence(
                        new[] { "attempt 1 transport_error", "failure 1 transport_error", "attempt 2 connection_error", "success 2 connection_error" },
                        got,
                        "attempts and hooks, in order");
                    // The ping period tells the current connection's (the reconnection is done once
                    // the success hook has run).
                    Assert.Equal(TimeSpan.FromMilliseconds(1500), session.PingPeriod, "the ping period after the resume");
                    Assert.True(session.SendAsync("hooks/t", "queued").Wait(Assert.Guard), "SendAsync completes once applied");
                    try
                    {
                        session.SendAsync("hooks//t", "x");
                        throw new TestFailure("SendAsync on an invalid topic queued it");
                    }
                    catch (InvalidTopicException)
                    {
                        // At the call, nothing queued.
                    }
                }
                var seen = reasons.ToArray();
                Assert.True(seen.Contains("RECOVERING_RECONNECT transport_error"), "the cut's reason: " + string.Join(", ", seen));
                Assert.True(seen.Contains("CLOSED_BY_CLIENT closed_by_client"), "the close's reason: " + string.Join(", ", seen));
            }
        }

        private static void TimeoutWhileUndecided()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                var strategy = new LambdaStrategy(attempt => new TaskCompletionSource<int>().Task);
                using (var session = Authenticated
                    .ReconnectionTimeout(300)
                    .ReconnectionStrategy(strategy)
                    .SessionStateChangedHandler(states.Handler)
                    .Open(proxy.Url))
                {
                    proxy.Cut();
                    states.WaitFor(SessionState.CLOSED_FAILED);
                    Assert.Equal("reconnect_timeout", session.CloseReason, "close reason");
                    Assert.Sequence(
                        new[] { "CONNECTING->CONNECTED_ACTIVE", "CONNECTED_ACTIVE->RECOVERING_RECONNECT", "RECOVERING_RECONNECT->CLOSED_FAILED" },
                        states.Transitions,
                        "transitions");
                }
            }
        }

        private static void FirstDecisionWins()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                bool decidedAfterStart = false;
                var strategy = new LambdaStrategy(attempt =>
                {
                    Assert.True(!attempt.IsDecided, "undecided at first");
                    attempt.Start();
                    decidedAfterStart = attempt.IsDecided;
                    attempt.Abort(); // ignored
                    attempt.Start(); // ignored
                    return Task.FromResult(0);
                });
                using (var session = Authenticated.ReconnectionStrategy(strategy).SessionStateChangedHandler(states.Handler).Open(proxy.Url))
                {
                    proxy.Cut();
                    states.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                    Assert.True(decidedAfterStart, "IsDecided after Start()");
                    Assert.Equal(SessionState.CONNECTED_ACTIVE, session.State, "Start() won over the later Abort()");
                }
            }
        }

        private static void BuiltInStrategies()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                using (var session = Authenticated
                    .ReconnectionStrategy(ReconnectionStrategies.RepeatingAttempt(0, 50))
                    .ReconnectionTimeout(20000)
                    .SessionStateChangedHandler(states.Handler)
                    .Open(proxy.Url))
                {
                    string id = session.SessionId;
                    proxy.Cut();
                    states.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                    Assert.Equal(id, session.SessionId, "same session id");
                }
                var backoff = ReconnectionStrategies.ExponentialBackoff(10, 2.0, 100, Jitter.Equal, 5);
                var backoffStates = new StateRecorder();
                using (var session = Authenticated.ReconnectionStrategy(backoff).SessionStateChangedHandler(backoffStates.Handler).Open(proxy.Url))
                {
                    proxy.Cut();
                    backoffStates.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                }
                Assert.Throws<ArgumentException>(() => ReconnectionStrategies.ExponentialBackoff(10, 0.5, 100), "multiplier < 1");
                Assert.Throws<ArgumentException>(() => ReconnectionStrategies.ExponentialBackoff(10, double.NaN, 100), "NaN multiplier");
                Assert.Throws<ArgumentException>(() => ReconnectionStrategies.ExponentialBackoff(10, 2, 100, (Jitter)42), "unknown jitter");
                Assert.Throws<ArgumentOutOfRangeException>(() => ReconnectionStrategies.RepeatingAttempt(-1, 0), "negative count");
                Assert.Throws<NotSupportedException>(
                    () => ReconnectionStrategies.RepeatingAttempt(1, 1).PerformReconnection(null), "built-ins run in the core");
            }
        }

        private static void NoReconnection()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                int calls = 0;
                var strategy = new LambdaStrategy(a => { Interlocked.Increment(ref calls); a.Start(); return Task.FromResult(0); });
                using (var session = Authenticated.NoReconnection().ReconnectionStrategy(strategy).SessionStateChangedHandler(states.Handler).Open(proxy.Url))
                {
                    proxy.Cut();
                    states.WaitFor(SessionState.CLOSED_FAILED);
                    Assert.Sequence(new[] { "CONNECTING->CONNECTED_ACTIVE", "CONNECTED_ACTIVE->CLOSED_FAILED" }, states.Transitions, "transitions");
                    Assert.Equal(0, Volatile.Read(ref calls), "strategy never called");
                }
            }
        }

        private static void AttemptFacts()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                var seen = new List<string>();
                var strategy = new LambdaStrategy(async attempt =>
                {
                    lock (seen)
                    {
                        seen.Add(attempt.Number + " " + attempt.LastReason + " " + (attempt.RetryAfter.HasValue ? "hint" : "no-hint")
                            + " " + (attempt.Remaining > TimeSpan.Zero && attempt.Remaining <= TimeSpan.FromSeconds(30)
                                && attempt.Elapsed >= TimeSpan.Zero ? "times-ok" : "times-wrong " + attempt));
                    }
                    await Task.Delay(20);
                    if (attempt.Number == 2)
                    {
                        proxy.Post("/heal");
                    }
                    attempt.Start();
                });
                using (var session = Authenticated
                    .ReconnectionTimeout(30000)
                    .ReconnectionStrategy(strategy)
                    .SessionStateChangedHandler(states.Handler)
                    .Open(proxy.Url))
                {
                    Assert.Equal(null, session.LastReconnectionAttempt, "no attempt before the first disconnection");
                    proxy.Post("/refuse");
                    proxy.Cut();
                    states.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                    List<string> calls;
                    lock (seen)
                    {
                        calls = seen.ToList();
                    }
                    Assert.Equal(2, calls.Count, "one refused attempt, then the successful one");
                    Assert.True(calls[0] == "1 transport_error no-hint times-ok" || calls[0] == "1 connection_error no-hint times-ok",
                        "attempt 1 after the cut: " + calls[0]);
                    Assert.True(calls[1].StartsWith("2 ") && calls[1].EndsWith(" no-hint times-ok"), "attempt 2 after the refusal: " + calls[1]);
                    var latest = session.LastReconnectionAttempt;
                    Assert.True(latest != null && latest.Number == 2 && latest.RetryAfter == null,
                        "the latest attempt's facts: " + latest);
                }
            }
        }

        private static void DrainReachesTheStrategies()
        {
            // The restart must come within the hint (the default strategy waits at least that
            // long before its first attempt): a restart takes tens of milliseconds.
            const int HintMs = 1000;
            string config = TestServer.RestartableConfig(HintMs);
            TestServer first = null, again = null;
            ISession user = null, dflt = null;
            try
            {
                first = new TestServer("--config " + config, "127.0.0.1:0");
                string address = first.Address;
                var userStates = new StateRecorder();
                var defaultStates = new StateRecorder();
                Tuple<int, string, TimeSpan?> told = null;
                var strategy = new LambdaStrategy(async attempt =>
                {
                    if (attempt.Number == 1)
                    {
                        Volatile.Write(ref told, Tuple.Create(attempt.Number, attempt.LastReason, attempt.RetryAfter));
                    }
                    // What the server asked for; a little when it asked nothing.
                    await Task.Delay(attempt.RetryAfter ?? TimeSpan.FromMilliseconds(50));
                    attempt.Start();
                });
                user = Authenticated.ReconnectionStrategy(strategy).SessionStateChangedHandler(userStates.Handler).Open(first.Url);
                dflt = Authenticated.SessionStateChangedHandler(defaultStates.Handler).Open(first.Url);
                string userId = user.SessionId, defaultId = dflt.SessionId;

                first.Dispose(); // SIGTERM: the server drains, saves its sessions and exits
                first = null;
                again = new TestServer("--config " + config, address);

                userStates.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                defaultStates.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                var expected = new[] { "CONNECTING->CONNECTED_ACTIVE", "CONNECTED_ACTIVE->RECOVERING_RECONNECT", "RECOVERING_RECONNECT->CONNECTED_ACTIVE" };
                Assert.Sequence(expected, userStates.Transitions, "the user strategy's session recovers (never CLOSED_BY_SERVER)");
                Assert.Sequence(expected, defaultStates.Transitions, "the default strategy's session recovers");
                var facts = Volatile.Read(ref told);
                Assert.True(facts != null, "the strategy saw attempt 1");
                Assert.Equal("server_draining", facts.Item2, "the reason the strategy saw");
                Assert.Equal((TimeSpan?)TimeSpan.FromMilliseconds(HintMs), facts.Item3, "the hint the strategy saw");
                var builtIn = dflt.LastReconnectionAttempt;
                Assert.True(builtIn != null, "the default strategy's attempt is recorded");
                Assert.Equal(1, builtIn.Number, "the default strategy's first attempt succeeded");
                Assert.Equal("server_draining", builtIn.LastReason, "the reason the default strategy was given");
                Assert.Equal((TimeSpan?)TimeSpan.FromMilliseconds(HintMs), builtIn.RetryAfter, "the hint the default strategy was given");
                Assert.Equal(userId, user.SessionId, "same session id");
                Assert.Equal(defaultId, dflt.SessionId, "same session id");
                user.Publish(UniqueTopic("after-drain"), "ok");
                dflt.Publish(UniqueTopic("after-drain"), "ok");
            }
            finally
            {
                user?.Dispose();
                dflt?.Dispose();
                first?.Dispose();
                again?.Dispose();
                Directory.Delete(Path.GetDirectoryName(config), true);
            }
        }

        private static void FallbackUrls()
        {
            string dead;
            using (var proxy = new FaultProxy(server.Address))
            {
                dead = proxy.Url;
            }
            using (var session = Authenticated.FallbackUrl("ws://" + server.Address).Open(dead))
            {
                Assert.Equal(SessionState.CONNECTED_ACTIVE, session.State, "opened on the second URL");
            }
            using (var first = new FaultProxy(server.Address))
            using (var second = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                var numbers = new List<int>();
                var strategy = new LambdaStrategy(async attempt =>
                {
                    lock (numbers)
                    {
                        numbers.Add(attempt.Number);
                    }
                    await Task.Delay(20);
                    attempt.Start();
                });
                using (var session = Authenticated
                    .ReconnectionStrategy(strategy)
                    .FallbackUrl(second.Url)
                    .SessionStateChangedHandler(states.Handler)
                    .Open(first.Url))
                {
                    string id = session.SessionId;
                    Assert.Equal("0", Json.Field(second.Get("/status"), "forwarded_total"), "opened on the first URL");
                    first.Post("/refuse");
                    first.Cut();
                    states.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                    Assert.Equal(id, session.SessionId, "same session id");
                    Assert.Equal("1", Json.Field(second.Get("/status"), "forwarded_total"), "resumed through the fallback");
                    lock (numbers)
                    {
                        Assert.Sequence(new[] { 1, 2 }, numbers, "attempt 1 went back to the first URL (refused), attempt 2 to the fallback");
                    }
                    session.Publish(UniqueTopic("fallback"), "ok");
                }
            }
            Assert.Throws<ArgumentNullException>(() => Sessions.FallbackUrl(null), "null fallback URL");
            Assert.Throws<ArgumentException>(() => Authenticated.FallbackUrl("http://127.0.0.1:1/").Open("ws://" + server.Address), "bad fallback URL");
        }

        private static void SubscribePublishAcrossCut()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                string topic = UniqueTopic("counter");
                var subStates = new StateRecorder();
                var pubStates = new StateRecorder();
                var updates = new UpdateCollector();
                using (var subscriber = Authenticated.SessionStateChangedHandler(subStates.Handler).Open(proxy.Url))
                using (var publisher = Authenticated.SessionStateChangedHandler(pubStates.Handler).Open(proxy.Url))
                {
                    string subId = subscriber.SessionId, pubId = publisher.SessionId;
                    subscriber.Subscribe(topic, updates.Handler);
                    for (int i = 1; i <= 20; i++)
                    {
                        publisher.Publish(topic, i.ToString());
                    }
                    updates.WaitForCount(20);
                    Assert.Equal(2, proxy.Cut(), "both sessions' connections cut");
                    // Published while the sessions recover: each call waits for the reconnection.
                    for (int i = 21; i <= 40; i++)
                    {
                        publisher.Publish(topic, i.ToString());
                    }
                    updates.WaitForCount(40);
                    // Nothing more comes: a marker published last is the next value seen.
                    publisher.Publish(topic, "end");
                    updates.WaitForCount(41);
                    Assert.Sequence(
                        Enumerable.Range(1, 40).Select(i => i.ToString()).Concat(new[] { "end" }),
                        updates.Values,
                        "every value once, in order");
                    subStates.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                    pubStates.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
                    Assert.True(subStates.Transitions.Contains("CONNECTED_ACTIVE->RECOVERING_RECONNECT"), "subscriber recovered");
                    Assert.True(pubStates.Transitions.Contains("CONNECTED_ACTIVE->RECOVERING_RECONNECT"), "publisher recovered");
                    Assert.Equal(subId, subscriber.SessionId, "subscriber id");
                    Assert.Equal(pubId, publisher.SessionId, "publisher id");
                }
            }
        }

        private static void BinaryValuesAndUnsubscribe()
        {
            using (var proxy = new FaultProxy(server.Address))
            using (var session = Authenticated.Open(proxy.Url))
            {
                string topic = UniqueTopic("bin");
                var received = new List<byte[]>();
                var got = new AutoResetEvent(false);
                session.Subscribe(topic, u =>
                {
                    Assert.Equal(topic, u.Topic, "update topic");
                    lock (received)
                    {
                        received.Add(u.Value);
                    }
                    got.Set();
                });
                var bytes = new byte[] { 0, 1, 2, 0, 255, 0 };
                session.Publish(topic, bytes);
                Assert.Signalled(got, "the binary value");
                lock (received)
                {
                    Assert.Sequence(bytes, received[0], "bytes, NULs included");
                }
                session.Publish(topic, new byte[0]);
                Assert.Signalled(got, "the empty value");
                session.Publish(topic, "héllo ✓");
                Assert.Signalled(got, "the UTF-8 value");
                lock (received)
                {
                    Assert.Equal(0, received[1].Length, "empty value");
                    Assert.Equal("héllo ✓", System.Text.Encoding.UTF8.GetString(received[2]), "UTF-8 round trip");
                }
                session.Unsubscribe(topic);
                session.Publish(topic, "after");
                // A second subscription sees the current value: the first one did not get it.
                var again = new UpdateCollector();
                session.Subscribe(topic, again.Handler);
                again.WaitForCount(1);
                Assert.Equal("after", again.Values[0], "current value");
                lock (received)
                {
                    Assert.Equal(3, received.Count, "nothing delivered after Unsubscribe");
                }
            }
        }

        private static void DisposeWhileUndecided()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                var called = new ManualResetEvent(false);
                var strategy = new LambdaStrategy(attempt =>
                {
                    called.Set();
                    return new TaskCompletionSource<int>().Task; // never decides, never completes
                });
                var session = Authenticated.ReconnectionStrategy(strategy).SessionStateChangedHandler(states.Handler).Open(proxy.Url);
                proxy.Cut();
                Assert.Signalled(called, "the strategy call");
                var disposed = Task.Run(() => session.Dispose());
                Assert.True(disposed.Wait(Assert.Guard), "Dispose returned while the strategy was undecided");
                int seen = states.Transitions.Count;
                Assert.True(session.State.IsClosed(), "closed after Dispose: " + session.State);
                Assert.Equal("CONNECTED_ACTIVE->RECOVERING_RECONNECT", states.Transitions[1], "recovering before Dispose");
                Assert.True(states.Transitions.Last().EndsWith("CLOSED_BY_CLIENT", StringComparison.Ordinal),
                    "told of the close before Dispose returned: " + string.Join(", ", states.Transitions));
                Assert.Equal(seen, states.Transitions.Count, "no handler after Dispose");
            }
        }

        private static void CloseWhileUndecided()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                var called = new ManualResetEvent(false);
                IReconnectionAttempt pending = null;
                var strategy = new LambdaStrategy(attempt =>
                {
                    pending = attempt;
                    called.Set();
                    return Task.FromResult(0);
                });
                using (var session = Authenticated.ReconnectionStrategy(strategy).SessionStateChangedHandler(states.Handler).Open(proxy.Url))
                {
                    proxy.Cut();
                    Assert.Signalled(called, "the strategy call");
                    session.Close();
                    Assert.Equal(SessionState.CLOSED_BY_CLIENT, session.State, "state");
                    Assert.Equal("closed_by_client", session.CloseReason, "reason");
                    Assert.Equal("RECOVERING_RECONNECT->CLOSED_BY_CLIENT", states.Transitions.Last(), "last transition");
                    pending.Start(); // too late: ignored
                    Assert.Equal(SessionState.CLOSED_BY_CLIENT, session.State, "a late Start() changes nothing");
                }
            }
        }

        private static void DisposeFromHandler()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var done = new ManualResetEvent(false);
                Exception failure = null;
                ISession session = null;
                var opened = new ManualResetEvent(false);
                session = Authenticated.SessionStateChangedHandler((s, e) =>
                {
                    if (e.NewState != SessionState.RECOVERING_RECONNECT)
                    {
                        return;
                    }
                    try
                    {
                        opened.WaitOne();
                        ((ISession)s).Dispose();
                    }
                    catch (Exception ex)
                    {
                        failure = ex;
                    }
                    done.Set();
                }).Open(proxy.Url);
                opened.Set();
                proxy.Cut();
                Assert.Signalled(done, "Dispose from the handler");
                Assert.Equal(null, failure, "no exception from Dispose in a handler");
                Assert.Throws<ObjectDisposedException>(() => session.Subscribe("a/b", u => { }), "disposed");
                session.Dispose();
            }
        }

        private static void ThrowingHandlers()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var errors = new List<SessionErrorEventArgs>();
                var states = new StateRecorder();
                using (var session = Authenticated
                    .SessionStateChangedHandler((s, e) => throw new InvalidOperationException("handler bug " + e.NewState))
                    .SessionStateChangedHandler(states.Handler)
                    .ErrorHandler((s, e) => { lock (errors) { errors.Add(e); Monitor.PulseAll(errors); } })
                    .Open(proxy.Url))
                {
                    string topic = UniqueTopic("throw");
                    var updates = new UpdateCollector();
                    session.Subscribe(topic, u => { updates.Handler(u); throw new ArgumentException("topic handler bug"); });
                    session.Publish(topic, "1");
                    session.Publish(topic, "2");
                    updates.WaitForCount(2);
                    states.WaitFor(SessionState.CONNECTED_ACTIVE);
                    lock (errors)
                    {
                        // The handler saw the update before it threw: the report follows.
                        var deadline = DateTime.UtcNow + Assert.Guard;
                        while (errors.Count(e => e.Context == "topic handler") < 2 && DateTime.UtcNow < deadline)
                        {
                            Monitor.Wait(errors, deadline - DateTime.UtcNow);
                        }
                        Assert.True(errors.Any(e => e.Context == "state handler" && e.Exception.Message == "handler bug CONNECTED_ACTIVE"),
                            "state handler exception reported");
                        Assert.Equal(2, errors.Count(e => e.Context == "topic handler"), "topic handler exceptions reported");
                    }
                }
            }
        }

        private static void BadArguments()
        {
            Assert.Equal("url", Assert.Throws<ArgumentNullException>(() => Sessions.Open(null), "null url").ParamName, "param");
            Assert.Equal("url", Assert.Throws<ArgumentNullException>(() => Authenticated.OpenAsync(null), "null url (async)").ParamName, "param");
            var badUrl = Assert.Throws<ArgumentException>(() => Authenticated.Open("http://127.0.0.1:1/"), "http url");
            Assert.Equal("url", badUrl.ParamName, "param of a bad url");
            Assert.Throws<ArgumentException>(() => Authenticated.Open("not a url"), "garbage url");
            Assert.Throws<ArgumentException>(() => Authenticated.Open("ws://127.0.0.1:1/\0"), "NUL in url");
            Assert.Equal("principal", Assert.Throws<ArgumentNullException>(() => Sessions.Principal(null), "null principal").ParamName, "param");
            Assert.Throws<ArgumentNullException>(() => Sessions.Password(null), "null password");
            Assert.Throws<ArgumentNullException>(() => Sessions.ReconnectionStrategy(null), "null strategy");
            Assert.Throws<ArgumentNullException>(() => Sessions.SessionStateChangedHandler(null), "null handler");
            Assert.Throws<ArgumentOutOfRangeException>(() => Sessions.ReconnectionTimeout(-1), "negative timeout");
            Assert.Throws<ArgumentOutOfRangeException>(() => TetherRuntime.Shutdown(TimeSpan.FromSeconds(-1)), "negative shutdown timeout");
            using (var proxy = new FaultProxy(server.Address))
            using (var session = Authenticated.Open(proxy.Url))
            {
                Assert.Equal("selector", Assert.Throws<ArgumentNullException>(() => session.Subscribe(null, u => { }), "null selector").ParamName, "param");
                Assert.Equal("handler", Assert.Throws<ArgumentNullException>(() => session.Subscribe("a/b", null), "null handler").ParamName, "param");
                Assert.Equal("selector", Assert.Throws<ArgumentException>(() => session.Subscribe("a//b", u => { }), "empty segment").ParamName, "param");
                Assert.Throws<ArgumentException>(() => session.Subscribe("a/**/b", u => { }), "** not last");
                Assert.Equal("topic", Assert.Throws<ArgumentNullException>(() => session.Publish(null, "x"), "null topic").ParamName, "param");
                Assert.Equal("value", Assert.Throws<ArgumentNullException>(() => session.Publish("a/b", (string)null), "null value").ParamName, "param");
                Assert.Throws<ArgumentNullException>(() => session.Publish("a/b", (byte[])null), "null bytes");
                Assert.Equal("topic", Assert.Throws<ArgumentException>(() => session.Publish("a/*", "x"), "wildcard topic").ParamName, "param");
                Assert.Throws<ArgumentException>(() => session.Publish("a\0b", "x"), "NUL in topic");
                Assert.Throws<ArgumentNullException>(() => session.Unsubscribe(null), "null unsubscribe");
                Assert.Equal(SessionState.CONNECTED_ACTIVE, session.State, "the session is fine after all that");
                session.Publish(UniqueTopic("fine"), "still works");
            }
        }

        private static void OpenFailures()
        {
            // A port nobody listens on: the proxy's upstream goes nowhere once the proxy is gone.
            string dead;
            using (var proxy = new FaultProxy(server.Address))
            {
                dead = proxy.Url;
            }
            var e = Assert.Throws<SessionEstablishmentException>(() => Authenticated.Open(dead), "unreachable server");
            Assert.Equal(TetherErrorCode.ConnectionFailed, e.Code, "code");
            Assert.True(e.Message.Contains(dead), "message names the URL: " + e.Message);
            using (var proxy = new FaultProxy(server.Address))
            {
                var states = new StateRecorder();
                var auth = Assert.Throws<AuthenticationFailedException>(
                    () => Sessions.Principal(Principal).Password("wrong").SessionStateChangedHandler(states.Handler).Open(proxy.Url),
                    "wrong password");
                Assert.Equal(TetherErrorCode.AuthenticationFailed, auth.Code, "code");
                Assert.Equal(0, states.Transitions.Count, "no state change for a session that never opened");
            }
        }

        private static void AsyncApi()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                var session = Assert.Completes(Authenticated.OpenAsync(proxy.Url), "OpenAsync");
                using (session)
                {
                    string topic = UniqueTopic("async");
                    var updates = new UpdateCollector();
                    Assert.True(session.SubscribeAsync(topic, updates.Handler).Wait(Assert.Guard), "SubscribeAsync");
                    Assert.True(session.PublishAsync(topic, "a").Wait(Assert.Guard), "PublishAsync");
                    Assert.True(session.PublishAsync(topic, new byte[] { 98 }).Wait(Assert.Guard), "PublishAsync bytes");
                    updates.WaitForCount(2);
                    Assert.Sequence(new[] { "a", "b" }, updates.Values, "values");
                    var failed = session.PublishAsync("a/*", "x");
                    try
                    {
                        failed.Wait(Assert.Guard);
                        throw new TestFailure("PublishAsync on a wildcard should fail");
                    }
                    catch (AggregateException ae)
                    {
                        Assert.True(ae.InnerException is ArgumentException, "faulted with ArgumentException: " + ae.InnerException);
                    }
                }
            }
        }

        private static void ErrorCodes()
        {
            // The header is the reference: the enum and NativeMethods follow it by hand.
            string header = Path.Combine(Binaries.Dir, "..", "..", "crates", "tether-ffi", "include", "tether.h");
            var defined = System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(header), @"#define TETHER_ERROR_([A-Z0-9_]+) (\d+)")
                .Cast<System.Text.RegularExpressions.Match>()
                .ToDictionary(m => m.Groups[1].Value.Replace("_", ""), m => int.Parse(m.Groups[2].Value));
            Assert.True(defined.Count >= 17, "the header defines the error codes: " + defined.Count);
            foreach (var kv in defined)
            {
                TetherErrorCode code;
                Assert.True(Enum.TryParse(kv.Key, true, out code), "TetherErrorCode has TETHER_ERROR_" + kv.Key);
                Assert.Equal(kv.Value, (int)code, "value of " + code);
            }
            Assert.Equal(defined.Count, Enum.GetValues(typeof(TetherErrorCode)).Length, "no TetherErrorCode beyond the header's");

            Func<TetherErrorCode, Exception> take = code =>
            {
                var error = new Interop.TetherErrorNative { Code = (int)code, Message = IntPtr.Zero };
                return Errors.Take(ref error, "op", "p");
            };
            var unknown = take(TetherErrorCode.OutcomeUnknown);
            Assert.Equal(typeof(OutcomeUnknownException), unknown.GetType(), "OutcomeUnknown");
            Assert.True(unknown is SessionClosedException closedToo && closedToo.Code == TetherErrorCode.OutcomeUnknown,
                "an OutcomeUnknownException is a SessionClosedException with its own code");
            Assert.Equal(typeof(SessionClosedException), take(TetherErrorCode.SessionClosed).GetType(), "SessionClosed");
            var timedOut = take(TetherErrorCode.TimedOut);
            Assert.True(timedOut.GetType() == typeof(TetherException) && ((TetherException)timedOut).Code == TetherErrorCode.TimedOut,
                "TimedOut: " + timedOut);
            Assert.Equal(typeof(AccessDeniedException), take(TetherErrorCode.AccessDenied).GetType(), "AccessDenied");
            var invalidTopic = take(TetherErrorCode.InvalidTopic);
            Assert.True(invalidTopic is InvalidTopicException it && it.Code == TetherErrorCode.InvalidTopic && it.ParamName == "p",
                "InvalidTopic: an ArgumentException naming the parameter, with its code: " + invalidTopic);
            Assert.Equal(typeof(ArgumentException), take(TetherErrorCode.InvalidUrl).GetType(), "InvalidUrl");
        }

        private static void Shutdown()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                Exception fromHandler = null;
                bool? returned = null;
                bool closedInHandler = false;
                var handlerDone = new ManualResetEvent(false);
                var other = Authenticated.Open(proxy.Url);
                var session = Authenticated.SessionStateChangedHandler((s, e) =>
                {
                    if (e.NewState != SessionState.CONNECTED_ACTIVE)
                    {
                        return;
                    }
                    try
                    {
                        // A handler that ends the program, say: the shutdown proceeds; only the
                        // handler's own thread cannot be joined.
                        returned = TetherRuntime.Shutdown(TimeSpan.FromSeconds(10));
                        closedInHandler = ((ISession)s).State.IsClosed() && other.State.IsClosed();
                    }
                    catch (Exception ex)
                    {
                        fromHandler = ex;
                    }
                    handlerDone.Set();
                }).Open(proxy.Url);
                try
                {
                    Assert.Signalled(handlerDone, "the handler");
                    Assert.Equal(null, fromHandler, "no exception from Shutdown in a handler");
                    Assert.Equal((bool?)false, returned, "Shutdown from a handler reports that not everything stopped");
                    Assert.True(closedInHandler, "every session closed when Shutdown returned in the handler");
                    Assert.True(session.State.IsClosed() && other.State.IsClosed(), "closed by the shutdown: " + session.State + ", " + other.State);
                    Assert.Throws<SessionClosedException>(() => other.Publish(UniqueTopic("after"), "x"), "publish after the shutdown");
                    Assert.True(TetherRuntime.Shutdown(TimeSpan.FromSeconds(10)), "nothing left to stop");
                }
                finally
                {
                    session.Dispose();
                    other.Dispose();
                }
                using (var again = Authenticated.Open(proxy.Url))
                {
                    Assert.Equal(SessionState.CONNECTED_ACTIVE, again.State, "a new session after the shutdown");
                    var updates = new UpdateCollector();
                    string topic = UniqueTopic("after-shutdown");
                    again.Subscribe(topic, updates.Handler);
                    again.Publish(topic, "alive");
                    updates.WaitForCount(1);
                    Assert.True(TetherRuntime.Shutdown(TimeSpan.FromSeconds(10)), "a shutdown from a test thread stops everything");
                    Assert.True(again.State.IsClosed(), "closed by the second shutdown");
                }
            }
        }

        /// <summary>Publishes from the thread pool, then Close while they are under way: every
        /// publish reported applied was applied (an observer sees it), every one the server
        /// applied is reported applied, and the others fail with a plain
        /// SessionClosedException (never sent).</summary>
        private static void CloseWithPublishesInFlight()
        {
            using (var observer = Authenticated.Open("ws://" + server.Address))
            {
                for (int run = 0; run < ExitRuns; run++)
                {
                    string topic = UniqueTopic("close-in-flight");
                    var seen = new UpdateCollector();
                    observer.Subscribe(topic, seen.Handler);
                    var tasks = new List<Task>();
                    using (var session = Authenticated.Open("ws://" + server.Address))
                    {
                        for (int i = 1; i <= 200; i++)
                        {
                            tasks.Add(session.PublishAsync(topic, i.ToString()));
                        }
                        // Under way: at least one applied before the close.
                        Assert.True(Task.WaitAny(tasks.ToArray(), Assert.Guard) >= 0, "a publish completes");
                        session.Close();
                        Assert.True(Task.WaitAll(tasks.ToArray().Select(t => t.ContinueWith(_ => { })).ToArray(), Assert.Guard),
                            "every publish completes after Close");
                    }
                    var applied = new HashSet<string>();
                    for (int i = 0; i < tasks.Count; i++)
                    {
                        var t = tasks[i];
                        if (t.Status == TaskStatus.RanToCompletion)
                        {
                            applied.Add((i + 1).ToString());
                            continue;
                        }
                        var e = t.Exception?.InnerException;
                        Assert.True(e != null && e.GetType() == typeof(SessionClosedException),
                            "run " + run + ": publish " + (i + 1) + " failed with a SessionClosedException (not sent), not " + e);
                    }
                    Console.WriteLine("     run {0}: {1} of {2} publishes applied, the others refused after Close", run, applied.Count, tasks.Count);
                    observer.Publish(topic, "end");
                    seen.WaitForCount(applied.Count + 1);
                    var values = seen.Values;
                    Assert.Equal("end", values.Last(), "run " + run + ": the observer saw exactly the publishes reported applied, then its marker: "
                        + string.Join(",", values));
                    Assert.True(new HashSet<string>(values.Take(values.Count - 1)).SetEquals(applied) && values.Count == applied.Count + 1,
                        "run " + run + ": applied [" + string.Join(",", values) + "], reported applied [" + string.Join(",", applied.OrderBy(v => int.Parse(v))) + "]");
                    observer.Unsubscribe(topic);
                }
            }
        }

        /// <summary>A child that returns from Main while publishes are under way on the thread
        /// pool and on two background threads, its session never disposed: it exits by itself
        /// with status 0, printing nothing on stderr.</summary>
        private static void ReturnWithPublishesInFlight()
        {
            for (int run = 0; run < ExitRuns; run++)
            {
                var child = RunChild("return-with-publishes", "ws://" + server.Address, "-");
                Assert.Equal(0, child.ExitCode, "run " + run + ": exit status" + child);
                Assert.Equal("main returns", child.Stdout.LastOrDefault(), "run " + run + ": last line" + child);
                Assert.Equal("", child.Stderr, "run " + run + ": nothing on stderr" + child);
            }
        }

        /// <summary>A child whose topic handler calls Environment.Exit(7) while two other
        /// threads publish in a loop: it exits with 7, with no exception, and the exit hook's
        /// shutdown ran (the child's own exit handler, which runs after it, sees both sessions
        /// closed).</summary>
        private static void ExitFromHandler()
        {
            for (int run = 0; run < ExitRuns; run++)
            {
                var child = RunChild("exit-in-handler", "ws://" + server.Address, "-");
                Assert.Equal(7, child.ExitCode, "run " + run + ": exit status" + child);
                Assert.True(child.Stdout.Contains("handler exits"), "run " + run + ": the handler ran" + child);
                Assert.True(child.Stdout.Contains("at exit: subscriber CLOSED_BY_CLIENT, publisher CLOSED_BY_CLIENT"),
                    "run " + run + ": the exit hook's shutdown closed the sessions" + child);
                Assert.Equal("", child.Stderr, "run " + run + ": nothing on stderr (no exception)" + child);
            }
        }

        /// <summary>Runs this program as a child (`--child MODE URL CONTROL`): a session that
        /// went through a reconnection (so managed code ran on Tether's threads) and then,
        /// with MODE dispose, Dispose(); with forget, nothing. Main then returns: the process
        /// must end by itself.</summary>
        private static void ProcessExits(string mode)
        {
            for (int run = 0; run < ExitRuns; run++)
            {
                ProcessExitsOnce(mode);
            }
        }

        private static void ProcessExitsOnce(string mode)
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                string exe = typeof(Program).Assembly.Location;
                var child = new ChildProcess("mono", "\"" + exe + "\" --child " + mode + " " + proxy.Url + " " + proxy.Control);
                try
                {
                    child.WaitForLine(l => l == "main returns", "the child's last line");
                    var exited = child.Process.WaitForExit((int)Assert.Guard.TotalMilliseconds);
                    Assert.True(exited, "the child exited by itself after Main returned; stdout:\n"
                        + string.Join("\n", child.Lines) + "\nstderr:\n" + child.StderrTail);
                    Assert.Equal(0, child.Process.ExitCode, "child exit code; stderr:\n" + child.StderrTail);
                    Assert.True(child.Lines.Contains("reconnected same-id"), "the child reconnected: " + string.Join(" | ", child.Lines));
                    Assert.True(child.Lines.Contains("update 1"), "the child got its update");
                    Assert.Equal(mode == "dispose", child.Lines.Contains("disposed"), "Dispose() returned in the child");
                }
                finally
                {
                    child.Dispose();
                }
            }
        }

        private static int Child(string[] args)
        {
            string mode = args[1], url = args[2], control = args[3];
            if (mode == "return-with-publishes")
            {
                return ChildReturnsWithPublishesInFlight(url);
            }
            if (mode == "exit-in-handler")
            {
                return ChildExitsFromHandler(url);
            }
            var states = new StateRecorder();
            var updates = new UpdateCollector();
            var session = Authenticated
                .ReconnectionStrategy(new DelayThenStart(50))
                .SessionStateChangedHandler(states.Handler)
                .Open(url);
            string id = session.SessionId;
            string topic = UniqueTopic("child");
            session.Subscribe(topic, updates.Handler);
            Http.Request("POST", control, "/cut?mode=rst");
            states.WaitFor(SessionState.CONNECTED_ACTIVE, 2);
            Console.WriteLine(session.SessionId == id ? "reconnected same-id" : "reconnected other-id");
            session.Publish(topic, "1");
            updates.WaitForCount(1);
            Console.WriteLine("update " + updates.Values[0]);
            if (mode == "dispose")
            {
                session.Dispose();
                Console.WriteLine("disposed");
            }
            Console.WriteLine("main returns");
            return 0;
        }

        /// <summary>Child: 2000 PublishAsync calls and two background threads publishing in a
        /// loop, then Main returns once a few were applied, the session never disposed.</summary>
        private static int ChildReturnsWithPublishesInFlight(string url)
        {
            var session = Authenticated.Open(url);
            string topic = UniqueTopic("return-with-publishes");
            int applied = 0;
            var underWay = new ManualResetEvent(false);
            for (int t = 0; t < 2; t++)
            {
                string mine = topic + "/t" + t;
                new Thread(() => PublishLoop(session, mine, ref applied, underWay)) { IsBackground = true }.Start();
            }
            for (int i = 0; i < 2000; i++)
            {
                session.PublishAsync(topic + "/async", i.ToString());
            }
            if (!underWay.WaitOne(Assert.Guard))
            {
                Console.WriteLine("nothing was applied");
                return 1;
            }
            Console.WriteLine("main returns");
            return 0;
        }

        /// <summary>Child: Environment.Exit(7) from a topic handler while two threads publish
        /// in a loop on another session. Both sessions have state handlers, as programs
        /// usually do: managed code then ran on several of Tether's threads, which mono waits
        /// for at exit.</summary>
        private static int ChildExitsFromHandler(string url)
        {
            var states = new StateRecorder();
            var publisher = Authenticated.SessionStateChangedHandler(states.Handler).Open(url);
            var subscriber = Authenticated.SessionStateChangedHandler(states.Handler).Open(url);
            // Runs after the binding's own exit hook (registered by the first Open).
            AppDomain.CurrentDomain.ProcessExit += (s, e) =>
                Console.WriteLine("at exit: subscriber " + subscriber.State + ", publisher " + publisher.State);
            string topic = UniqueTopic("exit-in-handler");
            subscriber.Subscribe(topic + "/exit", u =>
            {
                Console.WriteLine("handler exits");
                Environment.Exit(7);
            });
            int applied = 0;
            var underWay = new ManualResetEvent(false);
            for (int t = 0; t < 2; t++)
            {
                string mine = topic + "/t" + t;
                new Thread(() => PublishLoop(publisher, mine, ref applied, underWay)).Start();
            }
            if (!underWay.WaitOne(Assert.Guard))
            {
                Console.WriteLine("nothing was applied");
                return 1;
            }
            publisher.Publish(topic + "/exit", "now");
            // The handler ends the process; this only bounds the wait for it.
            new ManualResetEvent(false).WaitOne(Assert.Guard);
            Console.WriteLine("the handler did not end the process");
            return 1;
        }

        /// <summary>Publishes 1, 2, 3, ... on <paramref name="topic"/> until the session closes
        /// (the end of the program); sets <paramref name="underWay"/> after 100 applied in
        /// all.</summary>
        private static void PublishLoop(ISession session, string topic, ref int applied, ManualResetEvent underWay)
        {
            try
            {
                for (int i = 1; ; i++)
                {
                    session.Publish(topic, i.ToString());
                    if (Interlocked.Increment(ref applied) == 100)
                    {
                        underWay.Set();
                    }
                }
            }
            catch (SessionClosedException)
            {
                // The program is ending: its sessions were closed.
            }
        }

        /// <summary>What a child run of this program did.</summary>
        private sealed class ChildRun
        {
            internal int ExitCode;
            internal List<string> Stdout;
            internal string Stderr;

            public override string ToString() =>
                "\n  stdout:\n    " + string.Join("\n    ", Stdout) + "\n  stderr:\n" + Stderr;
        }

        /// <summary>Runs this program as a child (`--child MODE URL CONTROL`) to its end (the
        /// guard kills a child that does not end by itself).</summary>
        private static ChildRun RunChild(string mode, string url, string control)
        {
            string exe = typeof(Program).Assembly.Location;
            var child = new ChildProcess("mono", "\"" + exe + "\" --child " + mode + " " + url + " " + control);
            try
            {
                child.CloseStdin();
                Assert.True(child.Process.WaitForExit((int)Assert.Guard.TotalMilliseconds),
                    "the child (" + mode + ") exited by itself; stdout:\n" + string.Join("\n", child.Lines) + "\nstderr:\n" + child.StderrTail);
                // The asynchronous readers are done once WaitForExit() without a timeout returns.
                child.Process.WaitForExit();
                return new ChildRun { ExitCode = child.Process.ExitCode, Stdout = child.Lines, Stderr = child.StderrTail };
            }
            finally
            {
                child.Dispose();
            }
        }

        private static void Example()
        {
            using (var proxy = new FaultProxy(server.Address))
            {
                string exe = Path.Combine(Path.GetDirectoryName(typeof(Program).Assembly.Location), "SessionReconnection.exe");
                Assert.True(File.Exists(exe), exe + " is built");
                var example = new ChildProcess("mono", "\"" + exe + "\" " + proxy.Url);
                try
                {
                    example.WaitForLine(l => l == "The session has connected.", "the first connection");
                    example.WaitForLine(l => l == "Press Enter to close the session.", "the prompt");
                    Assert.Equal(1, proxy.Cut(), "connections cut");
                    example.WaitForLine(l => l == "The session has been disconnected.", "the disconnection");
                    example.WaitForLine(l => l == "Attempting to reconnect...", "the strategy's attempt");
                    string reconnected = example.WaitForLine(l => l.StartsWith("The session has reconnected", StringComparison.Ordinal), "the reconnection");
                    example.WaitForLine(l => l == "The session has connected.", "connected again", 2);
                    example.WriteLine("");
                    example.WaitForLine(l => l == "The session has been closed.", "the close");
                    Assert.True(example.Process.WaitForExit((int)Assert.Guard.TotalMilliseconds), "the example exits by itself");
                    Assert.Equal(0, example.Process.ExitCode, "exit code");
                    Assert.True(System.Text.RegularExpressions.Regex.IsMatch(reconnected, "session id [0-9a-f]{32}"), reconnected);
                    Console.WriteLine("     example: " + string.Join(" | ", example.Lines));
                }
                finally
                {
                    example.Dispose();
                }
            }
        }
    }
}
