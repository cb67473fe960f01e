// The C# runner of the conformance scenarios (conformance/scenarios.txt): every scenario against
// the real server behind the fault proxy (both from the fixture, tether-conformance-fixture),
// through this binding's API. A scenario whose step the binding cannot do yet is reported as
// skipped ("not supported: <reason>"), never passed. Results go to
// target/conformance/csharp.txt for `cargo xtask conformance`.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace Tether.Tests
{
    internal sealed class Unsupported : Exception
    {
        internal Unsupported(string message) : base(message) { }
    }

    internal static class Conformance
    {
        private static readonly TimeSpan Guard = TimeSpan.FromSeconds(20);
        private static readonly Dictionary<string, string> Results = new Dictionary<string, string>();
        private static ConformanceFixture fixture;

        internal sealed class Step
        {
            internal string Verb;
            internal Dictionary<string, string> Args;
            internal int Line;

            internal string this[string key] => Args.TryGetValue(key, out var v) ? v : null;

            internal string Need(string key) => this[key] ?? throw new TestFailure(key + " is missing");
        }

        private static string Root
        {
            get
            {
                var here = Path.GetDirectoryName(typeof(Conformance).Assembly.Location);
                return Path.GetFullPath(Path.Combine(here, "..", ".."));
            }
        }

        internal static List<KeyValuePair<string, List<Step>>> Load()
        {
            var scenarios = new List<KeyValuePair<string, List<Step>>>();
            var lines = File.ReadAllLines(Path.Combine(Root, "conformance", "scenarios.txt"));
            for (int i = 0; i < lines.Length; i++)
            {
                string line = lines[i].Trim();
                if (line.Length == 0 || line.StartsWith("#", StringComparison.Ordinal))
                {
                    continue;
                }
                var words = line.Split(new[] { ' ', '\t' }, StringSplitOptions.RemoveEmptyEntries);
                if (words[0] == "scenario")
                {
                    scenarios.Add(new KeyValuePair<string, List<Step>>(words[1], new List<Step>()));
                }
                else if (words[0] != "about")
                {
                    var args = words.Skip(1).ToDictionary(w => w.Substring(0, w.IndexOf('=')), w => w.Substring(w.IndexOf('=') + 1));
                    scenarios[scenarios.Count - 1].Value.Add(new Step { Verb = words[0], Args = args, Line = i + 1 });
                }
            }
            return scenarios;
        }

        /// <summary>Adds one test per scenario; the results file is written after the last.</summary>
        internal static void Register(Runner runner)
        {
            var scenarios = Load();
            foreach (var scenario in scenarios)
            {
                string name = scenario.Key;
                var steps = scenario.Value;
                runner.Add("conformance: " + name, () =>
                {
                    var outcome = RunScenario(steps);
                    lock (Results)
                    {
                        Results[name] = name + "\t" + outcome.Key + "\t" + outcome.Value.Replace('\t', ' ').Replace('\n', ' ').Replace('\r', ' ');
                        if (Results.Count == scenarios.Count)
                        {
                            string dir = Environment.GetEnvironmentVariable("TETHER_CONFORMANCE_OUT") ?? Path.Combine(Root, "target", "conformance");
                            Directory.CreateDirectory(dir);
                            File.WriteAllText(Path.Combine(dir, "csharp.txt"), string.Concat(scenarios.Select(s => Results[s.Key] + "\n")));
                            fixture?.Dispose();
                            fixture = null;
                        }
                    }
                    if (outcome.Key == "unsupported")
                    {
                        throw new TestSkipped("not supported: " + outcome.Value);
                    }
                    if (outcome.Key == "FAIL")
                    {
                        throw new TestFailure(outcome.Value);
                    }
                }, TimeSpan.FromSeconds(120));
            }
        }

        private static KeyValuePair<string, string> RunScenario(List<Step> steps)
        {
            fixture = fixture ?? new ConformanceFixture();
            var runner = new ScenarioRunner(fixture);
            var outcome = new KeyValuePair<string, string>("pass", "");
            foreach (var step in steps)
            {
                try
                {
                    runner.Run(step);
                }
                catch (Unsupported e)
                {
                    outcome = new KeyValuePair<string, string>("unsupported", "line " + step.Line + ": " + step.Verb + ": " + e.Message);
                    break;
                }
                catch (Exception e)
                {
                    outcome = new KeyValuePair<string, string>("FAIL", "line " + step.Line + ": " + step.Verb + ": " + e.GetType().Name + ": " + e.Message);
                    break;
                }
            }
            try
            {
                runner.Finish();
            }
            catch (Exception e)
            {
                if (outcome.Key == "pass")
                {
                    outcome = new KeyValuePair<string, string>("FAIL", "closing at the end: " + e.Message);
                }
            }
            return outcome;
        }

        /// <summary>The `exit_child` program: opens, subscribes, publishes, gets its update,
        /// prints `done` and returns from Main with the session open.</summary>
        internal static int Child(string url)
        {
            var got = new ManualResetEvent(false);
            var session = Sessions.Principal("control").Password("password").Open(url);
            session.Subscribe("exit/t", u => got.Set());
            session.Publish("exit/t", "bye");
            if (!got.WaitOne(Guard))
            {
                Console.WriteLine("no update");
                return 1;
            }
            Console.WriteLine("done");
            return 0;
        }

        private sealed class ConformanceFixture : IDisposable
        {
            private readonly ChildProcess child;
            private readonly string control;

            internal ConformanceFixture()
            {
                string exe = Binaries.Path_("tether-conformance-fixture");
                child = new ChildProcess(exe, "");
                control = child.WaitForLine(l => l.StartsWith("control=", StringComparison.Ordinal), "the fixture's line").Substring("control=".Length);
            }

            internal Dictionary<string, string> Call(string path, IDictionary<string, string> query = null)
            {
                string q = query == null ? "" : string.Join("&", query.Select(kv => kv.Key + "=" + Uri.EscapeDataString(kv.Value)));
                string body = Http.Request("GET", control, "/" + path + (q.Length > 0 ? "?" + q : "")).Trim();
                var words = body.Split(' ');
                if (words[0] != "ok")
                {
                    throw new TestFailure("fixture /" + path + ": " + body);
                }
                return words.Skip(1).Where(w => w.Contains("=")).ToDictionary(w => w.Substring(0, w.IndexOf('=')), w => w.Substring(w.IndexOf('=') + 1));
            }

            public void Dispose() => child.Dispose();
        }

        private sealed class Change
        {
            internal SessionState New;
            internal string Reason;
        }

        /// <summary>strategy=manual: hands each attempt to the steps and counts the success /
        /// failure hooks.</summary>
        private sealed class ManualStrategy : IReconnectionStrategy, IReconnectionOutcome
        {
            private readonly Action<IReconnectionAttempt> onAttempt;
            private readonly Action<bool> onOutcome;

            internal ManualStrategy(Action<IReconnectionAttempt> onAttempt, Action<bool> onOutcome)
            {
                this.onAttempt = onAttempt;
                this.onOutcome = onOutcome;
            }

            public Task PerformReconnection(IReconnectionAttempt attempt)
            {
                onAttempt(attempt);
                return Task.CompletedTask;
            }

            public void OnSuccess(ReconnectionAttemptInfo attempt) => onOutcome(true);

            public void OnFailure(ReconnectionAttemptInfo attempt) => onOutcome(false);
        }

        private sealed class ScenarioRunner
        {
            private readonly ConformanceFixture fixture;
            private readonly object gate = new object();
            private Dictionary<string, string> env = new Dictionary<string, string>();
            private ISession session;
            private readonly List<Change> changes = new List<Change>();
            private readonly List<IReconnectionAttempt> attempts = new List<IReconnectionAttempt>();
            private readonly Dictionary<string, List<string>> updates = new Dictionary<string, List<string>>();
            private readonly Dictionary<string, ManualResetEvent> consumers = new Dictionary<string, ManualResetEvent>();
            private readonly Dictionary<string, Task> sends = new Dictionary<string, Task>();
            private readonly List<GapReportEventArgs> gaps = new List<GapReportEventArgs>();
            private int successes;
            private int failures;
            private int cursor;
            private TimeSpan timeout = TimeSpan.FromSeconds(60);
            private TimeSpan lastElapsed = TimeSpan.Zero;

            internal ScenarioRunner(ConformanceFixture fixture)
            {
                this.fixture = fixture;
            }

            private void Record(Action change)
            {
                lock (gate)
                {
                    change();
                    Monitor.PulseAll(gate);
                }
            }

            private T Wait<T>(string what, Func<T> check) where T : class
            {
                var deadline = DateTime.UtcNow + Guard;
                lock (gate)
                {
                    while (true)
                    {
                        var got = check();
                        if (got != null)
                        {
                            return got;
                        }
                        var left = deadline - DateTime.UtcNow;
                        if (left <= TimeSpan.Zero)
                        {
                            throw new TestFailure("timed out waiting for " + what);
                        }
                        Monitor.Wait(gate, left);
                    }
                }
            }

            private ISession Session => session ?? throw new TestFailure("no session: `open` first");

            internal void Finish()
            {
                foreach (var c in consumers.Values)
                {
                    c.Set();
                }
                session?.Dispose();
            }

            private static string ErrorName(Exception e)
            {
                if (e is OutcomeUnknownException)
                {
                    return "outcome_unknown";
                }
                if (e is SessionClosedException)
                {
                    return "closed";
                }
                if (e is AccessDeniedException)
                {
                    return "access_denied";
                }
                if (e is InvalidTopicException)
                {
                    return "invalid_topic";
                }
                if (e is TetherException t)
                {
                    switch (t.Code)
                    {
                        case TetherErrorCode.InvalidTopic: return "invalid_topic";
                        case TetherErrorCode.QueueFull: return "queue_full";
                        default: return "other (" + t.Code + ")";
                    }
                }
                if (e is ArgumentException a && a.InnerException is TetherException inner)
                {
                    return ErrorName(inner);
                }
                if (e is ArgumentException)
                {
                    return "other (ArgumentException: " + e.Message + ")";
                }
                throw e;
            }

            private static void Expect(Step step, string got)
            {
                string want = step["expect"] ?? "ok";
                if (got != want)
                {
                    throw new TestFailure("outcome " + got + ", expected " + want);
                }
            }

            private static string Outcome(Action action)
            {
                try
                {
                    action();
                    return "ok";
                }
                catch (Exception e) when (!(e is TestFailure))
                {
                    return ErrorName(e);
                }
            }

            internal void Run(Step step)
            {
                switch (step.Verb)
                {
                    case "env":
                        env = fixture.Call("env", step.Args);
                        return;
                    case "open":
                        Open(step);
                        return;
                    case "subscribe":
                    {
                        string topic = step.Need("topic");
                        ManualResetEvent paused = null;
                        if (step["consumer"] == "paused")
                        {
                            paused = new ManualResetEvent(false);
                            consumers[topic] = paused;
                        }
                        Session.Subscribe(topic, u =>
                        {
                            // A paused consumer holds the callback thread until resume_consumer.
                            paused?.WaitOne(Guard);
                            Record(() =>
                            {
                                if (!updates.TryGetValue(u.Topic, out var list))
                                {
                                    updates[u.Topic] = list = new List<string>();
                                }
                                list.Add(Encoding.UTF8.GetString(u.Value));
                            });
                        });
                        return;
                    }
                    case "resume_consumer":
                        consumers[step.Need("topic")].Set();
                        return;
                    case "publish":
                        Expect(step, Outcome(() => Session.Publish(step.Need("topic"), step.Need("value"))));
                        return;
                    case "send":
                    {
                        Task sent = null;
                        Expect(step, Outcome(() => sent = Session.SendAsync(step.Need("topic"), step.Need("value"))));
                        if (sent != null && step["as"] != null)
                        {
                            sends[step["as"]] = sent;
                        }
                        return;
                    }
                    case "await_send":
                    {
                        var sent = sends[step.Need("name")];
                        Expect(step, Outcome(() =>
                        {
                            try
                            {
                                if (!sent.Wait(Guard))
                                {
                                    throw new TestFailure("send " + step["name"] + " did not complete");
                                }
                            }
                            catch (AggregateException e)
                            {
                                throw e.InnerException;
                            }
                        }));
                        return;
                    }
                    case "server_publish":
                        fixture.Call("publish", step.Args);
                        return;
                    case "expect_received":
                    {
                        string topic = step.Need("topic");
                        int count = int.Parse(step["count"] ?? "1");
                        string last = step["last"];
                        Wait(count + " update(s) of " + topic + ", the last " + last, () =>
                            updates.TryGetValue(topic, out var got) && got.Count >= count && (last == null || got[got.Count - 1] == last) ? "" : null);
                        return;
                    }
                    case "cut":
                        fixture.Call("cut", new Dictionary<string, string> { { "mode", step["mode"] ?? "rst" } });
                        return;
                    case "stall":
                    case "refuse":
                    case "heal":
                    case "drain":
                        fixture.Call(step.Verb);
                        return;
                    case "expect_state":
                    {
                        var want = (SessionState)Enum.Parse(typeof(SessionState), step.Need("state"));
                        var at = Wait("the session to enter " + want, () =>
                        {
                            for (int i = cursor; i < changes.Count; i++)
                            {
                                if (changes[i].New == want)
                                {
                                    return (object)i;
                                }
                            }
                            return null;
                        });
                        cursor = (int)at + 1;
                        string reason = changes[(int)at].Reason;
                        if (step["reason"] != null && reason != step["reason"])
                        {
                            throw new TestFailure("entered " + want + " with reason " + (reason ?? "none") + ", expected " + step["reason"]);
                        }
                        return;
                    }
                    case "wait_state":
                    {
                        var want = (SessionState)Enum.Parse(typeof(SessionState), step.Need("state"));
                        // The session's own state, asked again on each recorded event or every
                        // 20 ms (the binding has no wait for it; a paused consumer holds the
                        // thread of the state handler).
                        var deadline = DateTime.UtcNow + Guard;
                        while (Session.State != want)
                        {
                            if (DateTime.UtcNow > deadline)
                            {
                                throw new TestFailure("timed out waiting for " + want + " (now " + Session.State + ")");
                            }
                            lock (gate)
                            {
                                Monitor.Wait(gate, 20);
                            }
                        }
                        return;
                    }
                    case "expect_attempt":
                        ExpectAttempt(step);
                        return;
                    case "decide":
                    {
                        IReconnectionAttempt attempt;
                        lock (gate)
                        {
                            attempt = attempts.LastOrDefault() ?? throw new TestFailure("no attempt to decide");
                        }
                        if (attempt.IsDecided)
                        {
                            throw new TestFailure("the attempt was already decided");
                        }
                        Action decide = () =>
                        {
                            if (step.Need("action") == "start")
                            {
                                attempt.Start();
                            }
                            else
                            {
                                attempt.Abort();
                            }
                        };
                        if (step["from"] == "thread")
                        {
                            var t = new Thread(() => decide());
                            t.Start();
                            t.Join();
                        }
                        else
                        {
                            decide();
                        }
                        return;
                    }
                    case "expect_hooks":
                    {
                        int s = int.Parse(step.Need("success")), f = int.Parse(step.Need("failure"));
                        Wait(s + " success and " + f + " failure hook calls (now " + successes + ", " + failures + ")",
                            () => successes >= s && failures >= f ? "" : null);
                        if (successes != s || failures != f)
                        {
                            throw new TestFailure("hooks called " + successes + " (success) and " + failures + " (failure) times, expected " + s + " and " + f);
                        }
                        return;
                    }
                    case "expect_gap":
                    {
                        string topic = step.Need("topic");
                        Wait("a gap report naming " + topic, () =>
                            gaps.Any(g => g.Topics.Any(t => t.Topic == topic && t.Count > 0)) ? "" : null);
                        return;
                    }
                    case "expect_ping_period":
                    {
                        var period = Session.PingPeriod;
                        long want = long.Parse(step.Need("ms"));
                        if (period == null || (long)period.Value.TotalMilliseconds != want)
                        {
                            throw new TestFailure("ping period " + period + ", expected " + want + " ms");
                        }
                        return;
                    }
                    case "expect_proxy":
                        fixture.Call("wait_refused", new Dictionary<string, string> { { "n", step.Need("refused") } });
                        return;
                    case "close":
                        Session.Close();
                        return;
                    case "expect_closed":
                    {
                        var s = Session;
                        Wait("the session to close", () => changes.Any(c => (int)c.New >= (int)SessionState.CLOSED_BY_CLIENT) ? "" : null);
                        if (s.State.ToString() != step["state"] || s.CloseReason != step["reason"])
                        {
                            throw new TestFailure("closed in " + s.State + " (" + s.CloseReason + "), expected " + step["state"] + " (" + step["reason"] + ")");
                        }
                        return;
                    }
                    case "exit_child":
                        ExitChild();
                        return;
                    default:
                        throw new TestFailure("unknown step " + step.Verb);
                }
            }

            private void Open(Step step)
            {
                if (step["timeout_ms"] != null)
                {
                    timeout = TimeSpan.FromMilliseconds(int.Parse(step["timeout_ms"]));
                }
                Func<string, int, int> ms = (key, d) => int.Parse(step[key] ?? d.ToString());
                var factory = Sessions.Principal(step["principal"] ?? "control").Password("password")
                    .ReconnectionTimeout((int)timeout.TotalMilliseconds)
                    .SessionStateChangedHandler((sender, e) =>
                    {
                        if (e.OldState != SessionState.CONNECTING)
                        {
                            Record(() => changes.Add(new Change { New = e.NewState, Reason = e.Reason }));
                        }
                    })
                    .GapHandler((sender, e) => Record(() => gaps.Add(e)));
                if (step["ca"] == "fixture")
                {
                    factory = factory.TlsRootCertificatePem(File.ReadAllText(env["ca"]));
                }
                if (step["strict"] == "1")
                {
                    factory = factory.Strict(true);
                }
                if (step["queue"] != null)
                {
                    factory = factory.SendQueue(int.Parse(step["queue"]), 8 << 20);
                }
                if (step["close_timeout_ms"] != null)
                {
                    factory = factory.CloseTimeout(TimeSpan.FromMilliseconds(int.Parse(step["close_timeout_ms"])));
                }
                if (step["ping_ms"] != null)
                {
                    factory = factory.PingPeriod(TimeSpan.FromMilliseconds(int.Parse(step["ping_ms"])));
                }
                if (step["delivery_limit"] != null)
                {
                    factory = factory.DeliveryLimit(int.Parse(step["delivery_limit"]));
                }
                int maxAttempts = int.Parse(step["max_attempts"] ?? "0");
                switch (step["strategy"])
                {
                    case null:
                        break;
                    case "manual":
                        factory = factory.ReconnectionStrategy(new ManualStrategy(
                            attempt => Record(() => attempts.Add(attempt)),
                            success => Record(() =>
                            {
                                if (success)
                                {
                                    successes++;
                                }
                                else
                                {
                                    failures++;
                                }
                            })));
                        break;
                    case "default":
                        break;
                    case "constant":
                        factory = factory.ReconnectionStrategy(ReconnectionStrategies.RepeatingAttempt(maxAttempts, ms("delay_ms", 0)));
                        break;
                    case "backoff":
                        factory = factory.ReconnectionStrategy(ReconnectionStrategies.ExponentialBackoff(
                            ms("initial_ms", 250), 2.0, ms("max_ms", 10000),
                            (Jitter)Enum.Parse(typeof(Jitter), step["jitter"] ?? "full", true), maxAttempts));
                        break;
                    case "abort":
                        factory = factory.ReconnectionStrategy(ReconnectionStrategies.AbortImmediately);
                        break;
                    default:
                        throw new TestFailure("strategy=" + step["strategy"]);
                }
                ISession opened;
                try
                {
                    opened = factory.Open(env["url"]);
                }
                catch (TetherException e)
                {
                    if (step["expect"] == "error")
                    {
                        return;
                    }
                    throw new TestFailure("cannot open: " + e.Message);
                }
                if (step["expect"] == "error")
                {
                    opened.Dispose();
                    throw new TestFailure("opened, but it should have failed");
                }
                session?.Dispose();
                session = opened;
            }

            private void ExpectAttempt(Step step)
            {
                int n = int.Parse(step["number"] ?? "1");
                var attempt = Wait("reconnection attempt " + n, () => attempts.Count >= n ? attempts[n - 1] : null);
                var wrong = new List<string>();
                if (attempt.Number != n)
                {
                    wrong.Add("number " + attempt.Number);
                }
                if (step["last_reason"] != null && attempt.LastReason != step["last_reason"])
                {
                    wrong.Add("last reason " + attempt.LastReason);
                }
                string retry = step["retry_after"];
                if (retry == "none" && attempt.RetryAfter != null)
                {
                    wrong.Add("retry-after " + attempt.RetryAfter + ", expected none");
                }
                else if (retry != null && retry != "none" && (attempt.RetryAfter == null || (long)attempt.RetryAfter.Value.TotalMilliseconds != long.Parse(retry)))
                {
                    wrong.Add("retry-after " + attempt.RetryAfter + ", expected " + retry + " ms");
                }
                if (attempt.Remaining <= TimeSpan.Zero || attempt.Remaining > timeout)
                {
                    wrong.Add("remaining " + attempt.Remaining + " (timeout " + timeout + ")");
                }
                if (attempt.Elapsed < lastElapsed)
                {
                    wrong.Add("elapsed " + attempt.Elapsed + " went back from " + lastElapsed);
                }
                lastElapsed = attempt.Elapsed;
                if (wrong.Count > 0)
                {
                    throw new TestFailure("attempt " + n + ": " + string.Join(", ", wrong));
                }
            }

            private void ExitChild()
            {
                string exe = typeof(Conformance).Assembly.Location;
                var child = new ChildProcess("mono", "\"" + exe + "\" --conformance-child " + env["url"]);
                try
                {
                    child.CloseStdin();
                    if (!child.Process.WaitForExit((int)Guard.TotalMilliseconds))
                    {
                        throw new TestFailure("the child did not exit; stdout:\n" + string.Join("\n", child.Lines) + "\nstderr:\n" + child.StderrTail);
                    }
                    child.Process.WaitForExit();
                    if (child.Process.ExitCode != 0 || !child.Lines.Any(l => l.Contains("done")))
                    {
                        throw new TestFailure("child: status " + child.Process.ExitCode + ", stdout:\n" + string.Join("\n", child.Lines) + "\nstderr:\n" + child.StderrTail);
                    }
                }
                finally
                {
                    child.Dispose();
                }
            }
        }
    }
}
