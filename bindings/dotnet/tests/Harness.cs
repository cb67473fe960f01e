// Test infrastructure: the real server and fault proxy binaries as child processes, the
// proxy's HTTP control API, a state recorder, a tiny test runner. No test framework is needed:
// Debian's mono has none, and the runner prints the closing `N passed, N failed` line itself.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using System.Threading;
using System.Threading.Tasks;

namespace Tether.Tests
{
    /// <summary>Thrown by a test that cannot run here (a conformance scenario whose step the
    /// binding cannot do yet): counted as skipped, never as passed.</summary>
    internal sealed class TestSkipped : Exception
    {
        public TestSkipped(string message)
            : base(message)
        {
        }
    }

    internal sealed class TestFailure : Exception
    {
        public TestFailure(string message)
            : base(message)
        {
        }
    }

    internal static class Assert
    {
        /// <summary>The bound used only as a failure guard when waiting for events.</summary>
        internal static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

        internal static void True(bool condition, string what)
        {
            if (!condition)
            {
                throw new TestFailure(what);
            }
        }

        internal static void Equal<T>(T expected, T actual, string what)
        {
            if (!EqualityComparer<T>.Default.Equals(expected, actual))
            {
                throw new TestFailure(what + ": expected <" + expected + ">, got <" + actual + ">");
            }
        }

        internal static void Sequence<T>(IEnumerable<T> expected, IEnumerable<T> actual, string what)
        {
            var e = expected.ToList();
            var a = actual.ToList();
            if (!e.SequenceEqual(a))
            {
                throw new TestFailure(what + ":\n  expected [" + string.Join(", ", e) + "]\n  got      [" + string.Join(", ", a) + "]");
            }
        }

        internal static TException Throws<TException>(Action action, string what)
            where TException : Exception
        {
            try
            {
                action();
            }
            catch (TException e)
            {
                if (e.GetType() != typeof(TException) && !typeof(TException).IsAssignableFrom(e.GetType()))
                {
                    throw new TestFailure(what + ": threw " + e.GetType().Name);
                }
                return e;
            }
            catch (Exception e)
            {
                throw new TestFailure(what + ": expected " + typeof(TException).Name + ", got " + e.GetType().Name + ": " + e.Message);
            }
            throw new TestFailure(what + ": expected " + typeof(TException).Name + ", nothing was thrown");
        }

        /// <summary>Waits for a signal; the bound is only a failure guard.</summary>
        internal static void Signalled(WaitHandle handle, string what)
        {
            if (!handle.WaitOne(Guard))
            {
                throw new TestFailure("timed out waiting for " + what);
            }
        }

        internal static T Completes<T>(Task<T> task, string what)
        {
            if (!task.Wait(Guard))
            {
                throw new TestFailure("timed out waiting for " + what);
            }
            return task.Result;
        }
    }

    /// <summary>Records a session's state changes, in the order delivered, and lets a test
    /// wait for one.</summary>
    internal sealed class StateRecorder
    {
        private readonly List<SessionListenerEventArgs> events = new List<SessionListenerEventArgs>();
        private readonly List<int> threads = new List<int>();

        public void Handler(object sender, SessionListenerEventArgs e)
        {
            lock (events)
            {
                events.Add(e);
                threads.Add(Thread.CurrentThread.ManagedThreadId);
                Monitor.PulseAll(events);
            }
        }

        public List<string> Transitions
        {
            get
            {
                lock (events)
                {
                    return events.Select(e => e.OldState + "->" + e.NewState).ToList();
                }
            }
        }

        public List<int> Threads
        {
            get
            {
                lock (events)
                {
                    return threads.ToList();
                }
            }
        }

        /// <summary>Waits until the <paramref name="occurrence"/>-th entry into
        /// <paramref name="state"/> has been delivered.</summary>
        public void WaitFor(SessionState state, int occurrence = 1)
        {
            var deadline = DateTime.UtcNow + Assert.Guard;
            lock (events)
            {
                while (events.Count(e => e.NewState == state) < occurrence)
                {
                    var left = deadline - DateTime.UtcNow;
                    if (left <= TimeSpan.Zero)
                    {
                        throw new TestFailure("timed out waiting for " + state + " #" + occurrence
                            + "; seen [" + string.Join(", ", events) + "]");
                    }
                    Monitor.Wait(events, left);
                }
            }
        }
    }

    /// <summary>Collects topic updates and lets a test wait for a number of them.</summary>
    internal sealed class UpdateCollector
    {
        private readonly List<string> values = new List<string>();

        public void Handler(TopicUpdate update)
        {
            lock (values)
            {
                values.Add(update.ValueAsString);
                Monitor.PulseAll(values);
            }
        }

        public List<string> Values
        {
            get
            {
                lock (values)
                {
                    return values.ToList();
                }
            }
        }

        public void WaitForCount(int count)
        {
            var deadline = DateTime.UtcNow + Assert.Guard;
            lock (values)
            {
                while (values.Count < count)
                {
                    var left = deadline - DateTime.UtcNow;
                    if (left <= TimeSpan.Zero)
                    {
                        throw new TestFailure("timed out waiting for " + count + " updates; got " + values.Count
                            + ": [" + string.Join(", ", values) + "]");
                    }
                    Monitor.Wait(values, left);
                }
            }
        }
    }

    internal static class Json
    {
        /// <summary>A string or number field of a flat JSON object line.</summary>
        internal static string Field(string json, string name)
        {
            var m = Regex.Match(json, "\"" + Regex.Escape(name) + "\"\\s*:\\s*(?:\"([^\"]*)\"|(-?[0-9]+|true|false))");
            if (!m.Success)
            {
                throw new TestFailure("no field " + name + " in " + json);
            }
            return m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value;
        }
    }

    /// <summary>A child process whose first stdout line is JSON; stderr is kept (the last
    /// lines) for failure reports.</summary>
    internal sealed class ChildProcess : IDisposable
    {
        private readonly Process process;
        private readonly Queue<string> stderrTail = new Queue<string>();
        private readonly List<string> lines = new List<string>();
        private bool stdoutClosed;

        internal ChildProcess(string file, string arguments, IDictionary<string, string> env = null)
        {
            var info = new ProcessStartInfo(file, arguments)
            {
                UseShellExecute = false,
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            if (env != null)
            {
                foreach (var kv in env)
                {
                    info.EnvironmentVariables[kv.Key] = kv.Value;
                }
            }
            process = new Process { StartInfo = info };
            process.OutputDataReceived += (s, e) =>
            {
                lock (lines)
                {
                    if (e.Data == null)
                    {
                        stdoutClosed = true;
                    }
                    else
                    {
                        lines.Add(e.Data);
                    }
                    Monitor.PulseAll(lines);
                }
            };
            process.ErrorDataReceived += (s, e) =>
            {
                if (e.Data == null)
                {
                    return;
                }
                lock (stderrTail)
                {
                    stderrTail.Enqueue(e.Data);
                    while (stderrTail.Count > 40)
                    {
                        stderrTail.Dequeue();
                    }
                }
            };
            process.Start();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        internal Process Process => process;

        internal List<string> Lines
        {
            get
            {
                lock (lines)
                {
                    return lines.ToList();
                }
            }
        }

        internal string StderrTail
        {
            get
            {
                lock (stderrTail)
                {
                    return string.Join("\n", stderrTail);
                }
            }
        }

        /// <summary>Waits for a stdout line matching <paramref name="predicate"/>, the
        /// <paramref name="occurrence"/>-th one; returns it.</summary>
        internal string WaitForLine(Func<string, bool> predicate, string what, int occurrence = 1)
        {
            var deadline = DateTime.UtcNow + Assert.Guard;
            lock (lines)
            {
                while (true)
                {
                    var found = lines.Where(predicate).ToList();
                    if (found.Count >= occurrence)
                    {
                        return found[occurrence - 1];
                    }
                    var left = deadline - DateTime.UtcNow;
                    if (stdoutClosed || left <= TimeSpan.Zero)
                    {
                        throw new TestFailure((stdoutClosed ? "output ended" : "timed out")
                            + " waiting for " + what + "; stdout:\n" + string.Join("\n", lines)
                            + "\nstderr (tail):\n" + StderrTail);
                    }
                    Monitor.Wait(lines, left);
                }
            }
        }

        internal void WriteLine(string line)
        {
            process.StandardInput.WriteLine(line);
            process.StandardInput.Flush();
        }

        internal void CloseStdin()
        {
            try
            {
                process.StandardInput.Close();
            }
            catch (IOException)
            {
            }
        }

        public void Dispose()
        {
            CloseStdin();
            if (!process.WaitForExit(10000))
            {
                try
                {
                    process.Kill();
                }
                catch (InvalidOperationException)
                {
                }
                process.WaitForExit(10000);
            }
            process.Dispose();
        }
    }

    internal static class Binaries
    {
        /// <summary>target/debug, from TETHER_BIN_DIR or next to this program
        /// (target/dotnet/../debug).</summary>
        internal static string Dir
        {
            get
            {
                var env = Environment.GetEnvironmentVariable("TETHER_BIN_DIR");
                if (!string.IsNullOrEmpty(env))
                {
                    return env;
                }
                var here = Path.GetDirectoryName(typeof(Binaries).Assembly.Location);
                return Path.GetFullPath(Path.Combine(here, "..", "debug"));
            }
        }

        internal static string Path_(string name)
        {
            var p = Path.Combine(Dir, name);
            if (!File.Exists(p))
            {
                throw new TestFailure(p + " is missing: cargo build -p tether-server -p tether-testkit");
            }
            return p;
        }
    }

    /// <summary>`tether-server --dev` on a free loopback port. The server has no
    /// exit-on-stdin-close option, so it runs under a small shell watchdog that kills it when
    /// this process's end of the stdin pipe closes (also if this process dies). The kill is a
    /// SIGTERM, so Dispose drains the server (sessions are sent away with reason
    /// server_draining and its retry-after hint, and saved when it has a state directory) and
    /// waits for it to exit.</summary>
    internal sealed class TestServer : IDisposable
    {
        private readonly ChildProcess child;

        internal TestServer()
            : this("--dev", "127.0.0.1:0")
        {
        }

        /// <summary>A server started with <paramref name="arguments"/> (`--dev`, or `--config
        /// FILE`, ...), listening on <paramref name="listen"/>.</summary>
        internal TestServer(string arguments, string listen)
        {
            string server = Binaries.Path_("tether-server");
            // sh -c 'SCRIPT' SERVER ARGS...: $0 is the server, $@ its arguments.
            const string script = "$0 $@ </dev/null & pid=$!; trap 'kill $pid 2>/dev/null; wait $pid' EXIT; cat >/dev/null";
            child = new ChildProcess("/bin/sh", "-c \"" + script + "\" " + server + " " + arguments + " --listen " + listen);
            string line = child.WaitForLine(l => l.Contains("\"listen\""), "the server's listen line");
            Address = Json.Field(line, "listen");
        }

        internal string Address { get; }

        internal string Url => "ws://" + Address;

        /// <summary>A configuration file (principal control / password, every permission) in a
        /// new directory, which is also the server's state directory: a server started with
        /// it, drained (Dispose) and started again on the same address keeps its sessions.
        /// Drains send sessions away with a retry-after hint of
        /// <paramref name="retryAfterMs"/>. Returns the file; the caller deletes the
        /// directory.</summary>
        internal static string RestartableConfig(int retryAfterMs)
        {
            string dir = Path.Combine(Path.GetTempPath(), "tether-dotnet-" + Process.GetCurrentProcess().Id + "-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(dir);
            string hash;
            var info = new ProcessStartInfo(Binaries.Path_("tether-server"), "hash-password")
            {
                UseShellExecute = false,
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
            };
            using (var hasher = Process.Start(info))
            {
                hasher.StandardInput.WriteLine("password");
                hasher.StandardInput.Close();
                hash = hasher.StandardOutput.ReadToEnd().Trim();
                hasher.WaitForExit();
            }
            string file = Path.Combine(dir, "server.toml");
            File.WriteAllText(file,
                "listen = \"127.0.0.1:0\"\n"
                + "state_dir = \"" + dir + "\"\n"
                + "[drain]\n"
                + "retry_after_ms = " + retryAfterMs + "\n"
                + "[[principals]]\n"
                + "name = \"control\"\n"
                + "password_hash = \"" + hash + "\"\n"
                + "subscribe = [\"**\"]\n"
                + "publish = [\"**\"]\n");
            return file;
        }

        public void Dispose() => child.Dispose();
    }

    /// <summary>`tether-faultproxy` in front of a server, driven over its HTTP control API.</summary>
    internal sealed class FaultProxy : IDisposable
    {
        private readonly ChildProcess child;

        internal FaultProxy(string upstream)
        {
            child = new ChildProcess(Binaries.Path_("tether-faultproxy"), "--upstream " + upstream + " --exit-on-stdin-close");
            string line = child.WaitForLine(l => l.Contains("\"proxy\""), "the proxy's address line");
            Address = Json.Field(line, "proxy");
            Control = Json.Field(line, "control");
        }

        internal string Address { get; }

        internal string Control { get; }

        internal string Url => "ws://" + Address;

        internal string Post(string pathAndQuery) => Http.Request("POST", Control, pathAndQuery);

        internal string Get(string pathAndQuery) => Http.Request("GET", Control, pathAndQuery);

        /// <summary>Cuts every current connection; returns how many.</summary>
        internal int Cut(string mode = "rst") => int.Parse(Json.Field(Post("/cut?mode=" + mode), "cut"));

        public void Dispose() => child.Dispose();
    }

    internal static class Http
    {
        /// <summary>One HTTP/1.1 request (the control API closes every connection); the body of
        /// a 200 answer, else a TestFailure.</summary>
        internal static string Request(string method, string hostPort, string pathAndQuery)
        {
            int colon = hostPort.LastIndexOf(':');
            using (var client = new TcpClient())
            {
                client.Connect(hostPort.Substring(0, colon), int.Parse(hostPort.Substring(colon + 1)));
                using (var stream = client.GetStream())
                {
                    var request = method + " " + pathAndQuery + " HTTP/1.1\r\nHost: " + hostPort
                        + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    var bytes = Encoding.ASCII.GetBytes(request);
                    stream.Write(bytes, 0, bytes.Length);
                    var reader = new StreamReader(stream, Encoding.UTF8);
                    string response = reader.ReadToEnd();
                    int split = response.IndexOf("\r\n\r\n", StringComparison.Ordinal);
                    string status = response.Substring(0, response.IndexOf("\r\n", StringComparison.Ordinal));
                    string body = split >= 0 ? response.Substring(split + 4) : "";
                    if (!status.Contains(" 200 "))
                    {
                        throw new TestFailure(method + " " + pathAndQuery + ": " + status + " " + body);
                    }
                    return body;
                }
            }
        }
    }

    /// <summary>Runs named tests in order, each with a failure guard, and prints
    /// `N passed, N failed` last.</summary>
    internal sealed class Runner
    {
        private static readonly TimeSpan TestGuard = TimeSpan.FromSeconds(90);
        private readonly List<Tuple<string, Action, TimeSpan>> tests = new List<Tuple<string, Action, TimeSpan>>();

        internal void Add(string name, Action body) => Add(name, body, TestGuard);

        /// <summary>A test with its own failure guard (one that repeats a scenario).</summary>
        internal void Add(string name, Action body, TimeSpan guard) =>
            tests.Add(Tuple.Create(name, body, guard));

        internal int Run(string filter)
        {
            int passed = 0, failed = 0, skipped = 0;
            foreach (var test in tests)
            {
                string name = test.Item1;
                TimeSpan guard = test.Item3;
                if (filter != null && !name.Contains(filter))
                {
                    continue;
                }
                var started = DateTime.UtcNow;
                Exception failure = null;
                var task = Task.Factory.StartNew(test.Item2, TaskCreationOptions.LongRunning);
                try
                {
                    if (!task.Wait(guard))
                    {
                        failure = new TestFailure("did not finish within " + guard.TotalSeconds + " s (hung?)");
                    }
                }
                catch (AggregateException e)
                {
                    failure = e.InnerException;
                }
                double seconds = (DateTime.UtcNow - started).TotalSeconds;
                if (failure is TestSkipped)
                {
                    skipped++;
                    Console.WriteLine("skip {0}: {1}", name, failure.Message);
                }
                else if (failure == null)
                {
                    passed++;
                    Console.WriteLine("ok   {0} ({1:0.00} s)", name, seconds);
                }
                else
                {
                    failed++;
                    Console.WriteLine("FAIL {0} ({1:0.00} s)", name, seconds);
                    foreach (var line in failure.ToString().Split('\n'))
                    {
                        Console.WriteLine("     " + line);
                    }
                }
            }
            Console.WriteLine("{0} passed, {1} failed, {2} skipped", passed, failed, skipped);
            return failed;
        }
    }
}
