//! `cargo xtask bench`: Tether against raw tokio-tungstenite, measured in the same run.
//!
//! | # | measure | baseline | target |
//! |---|---|---|---|
//! | a | resume: reconnection attempt started → `CONNECTED_ACTIVE` (p50/p95/p99) | raw TCP + WebSocket connect, same path | ≤ 1.1× |
//! | b | one session, 100 B messages/s, both directions | raw tokio-tungstenite stream | ≥ 0.7× |
//! | c | server RSS per idle session | raw tokio-tungstenite server, idle connections | ≤ 7 KiB |
//! | d | fan-out, 1 topic: deliveries/s, p99 latency | raw broadcast: a raw tokio-tungstenite server writing the same updates to as many raw clients | ≥ 0.7×, p99 ≤ 2× |
//! | e | storm: every session cut at once → all active again | — | < 5 s, zero loss, server responsive |
//! | f | criterion microbenches of the codec and the recovery buffer | — | report |
//! | g | login storm: N fresh opens with a password and with a signed token: time, server CPU | — | token: < 5 s |
//! | r | the Redis store: resume same/other node, publishes/s, fan-out; raw Redis appends | the memory store, same run | report |
//! | k | rolling restart of a three-node cluster under N sessions: drain time, time until all are back | — | zero loss, zero sessions ended |
//! | h | one session through the Node.js and Python packages, 100 B messages/s, both directions | raw Node.js `ws`, raw Python `websockets`, against a raw tokio-tungstenite server | Node.js server → client ≥ 1.0× |
//!
//! `cargo xtask bench` builds the release binaries and re-runs itself from `target/release`
//! (`--built`), so that the load generator is a release build too. Servers whose memory is
//! measured, and the storm's fault proxies and probe, run in child processes
//! (`target/release/tether-server`, and this xtask with the hidden `--child ROLE` option).
//! For (h) it also builds the release addon of the Node.js package, installs the Python package
//! (release) and `websockets` into `target/bench-h/venv`, and `ws` into `target/bench-h/node`
//! (see `bindings.rs`). Targets are printed, never asserted. Results: BENCHMARKS.md.

mod bindings;
mod child;
mod cluster;
mod fanout;
mod logins;
mod memory;
mod micro;
mod raw;
mod report;
mod resume;
mod rolling;
mod stats;
mod storm;
mod throughput;

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::{Session, SessionBuilder, Subscription};
use tokio::sync::Semaphore;

use child::Launcher;
use report::Report;

/// `cargo xtask bench` options.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Args {
    /// Tiny sizes: checks that every measure still runs (seconds; the test suite runs it).
    #[arg(long)]
    quick: bool,
    /// Runs of measures a–e; the table shows the median and the spread (default 3, quick 1).
    #[arg(long)]
    runs: Option<u32>,
    /// Only these measures, e.g. `--only a,b`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<char>,
    /// Where to write the results (default bench/results.json).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Measure with the binaries next to this executable, without building first.
    #[arg(long, hide = true)]
    built: bool,
    /// Run as a child process of the bench: `raw:<read buffer>` (the raw tokio-tungstenite
    /// server), `proxy:<upstream>` (a fault proxy) or `tether:<config>`.
    #[arg(long, hide = true, value_name = "ROLE")]
    child: Option<String>,
}

/// How big each measure is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// (a) resumes measured (after a few warm-up ones).
    pub(crate) resumes: usize,
    /// (b) messages per direction.
    pub(crate) messages: u64,
    /// (c) idle sessions.
    pub(crate) idle_sessions: usize,
    /// (d) subscribers.
    pub(crate) subscribers: usize,
    /// (d) updates published.
    pub(crate) updates: u64,
    /// (e) sessions cut at once.
    pub(crate) storm_sessions: usize,
    /// (h) messages per direction through each language package.
    pub(crate) binding_messages: u64,
}

impl Sizes {
    pub(crate) fn full() -> Sizes {
        Sizes {
            resumes: 1000,
            messages: 1_000_000,
            idle_sessions: 10_000,
            subscribers: 10_000,
            updates: 100,
            storm_sessions: 10_000,
            binding_messages: 200_000,
        }
    }

    pub(crate) fn quick() -> Sizes {
        Sizes {
            resumes: 20,
            messages: 20_000,
            idle_sessions: 200,
            subscribers: 200,
            updates: 20,
            storm_sessions: 200,
            binding_messages: 2_000,
        }
    }

    /// Most sessions open at once.
    fn most(&self) -> usize {
        self.idle_sessions
            .max(self.subscribers)
            .max(self.storm_sessions)
    }
}

/// How measure (f) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Micro {
    /// `cargo bench -p tether-protocol` (criterion).
    Criterion,
    /// The same operations timed in this process (the test suite cannot run cargo).
    #[cfg_attr(not(test), allow(dead_code))]
    InProcess,
}

/// One invocation of the suite.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) sizes: Sizes,
    pub(crate) runs: u32,
    pub(crate) only: Vec<char>,
    pub(crate) launcher: Launcher,
    pub(crate) micro: Micro,
    /// (h): the packages to measure; `None` skips (h) (the quick test, without the Node.js
    /// and Python suites' builds).
    pub(crate) bindings: Option<bindings::Bindings>,
}

impl Plan {
    fn wants(&self, measure: char) -> bool {
        self.only.is_empty() || self.only.contains(&measure)
    }
}

/// The command.
pub(crate) fn command(args: Args) -> bool {
    if let Some(role) = &args.child {
        return child::child_main(role);
    }
    if !args.built {
        return build_and_rerun(&args);
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench: cannot find this executable: {e}");
            return false;
        }
    };
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let plan = Plan {
        quick: args.quick,
        sizes: if args.quick {
            Sizes::quick()
        } else {
            Sizes::full()
        },
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        only: args.only.iter().map(|c| c.to_ascii_lowercase()).collect(),
        launcher: Launcher::Binaries {
            server: dir.join(format!("tether-server{}", std::env::consts::EXE_SUFFIX)),
            xtask: exe,
        },
        micro: Micro::Criterion,
        bindings: Some(bindings::Bindings::release()),
    };
    let started = Instant::now();
    let report = run_suite(&plan);
    tether::shutdown(Duration::from_secs(5));
    report.print();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::test::root().join("bench").join("results.json"));
    match report.write_json(&out, &command_line(&args)) {
        Ok(()) => println!("results written to {}", out.display()),
        Err(e) => {
            eprintln!("bench: cannot write {}: {e}", out.display());
            return false;
        }
    }
    println!("bench took {:.0} s", started.elapsed().as_secs_f64());
    report.errors.is_empty()
}

/// The command line, as a person would type it.
fn command_line(args: &Args) -> String {
    let mut s = String::from("cargo xtask bench");
    if args.quick {
        s.push_str(" --quick");
    }
    if let Some(r) = args.runs {
        s.push_str(&format!(" --runs {r}"));
    }
    if !args.only.is_empty() {
        let only: Vec<String> = args.only.iter().map(|c| c.to_string()).collect();
        s.push_str(&format!(" --only {}", only.join(",")));
    }
    s
}

/// Builds the release binaries, then runs the release xtask with the same options.
fn build_and_rerun(args: &Args) -> bool {
    let mut build = crate::test::cargo();
    build.args(["build", "--release", "-p", "tether-server", "-p", "xtask"]);
    if !crate::test::run_step("cargo build --release -p tether-server -p xtask", build) {
        return false;
    }
    let wants_micro =
        args.only.is_empty() || args.only.iter().any(|c| c.eq_ignore_ascii_case(&'f'));
    if wants_micro {
        let mut bench = crate::test::cargo();
        bench.args([
            "bench",
            "-p",
            "tether-protocol",
            "--bench",
            "protocol",
            "--no-run",
        ]);
        if !crate::test::run_step("cargo bench -p tether-protocol --no-run", bench) {
            return false;
        }
    }
    let wants_bindings =
        args.only.is_empty() || args.only.iter().any(|c| c.eq_ignore_ascii_case(&'h'));
    if wants_bindings && !bindings::install() {
        return false;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::test::root().join("target"));
    let exe = target
        .join("release")
        .join(format!("xtask{}", std::env::consts::EXE_SUFFIX));
    let mut run = Command::new(&exe);
    run.current_dir(crate::test::root())
        .args(["bench", "--built"]);
    if args.quick {
        run.arg("--quick");
    }
    if let Some(r) = args.runs {
        run.args(["--runs", &r.to_string()]);
    }
    if !args.only.is_empty() {
        let only: Vec<String> = args.only.iter().map(|c| c.to_string()).collect();
        run.args(["--only", &only.join(",")]);
    }
    if let Some(out) = &args.out {
        run.arg("--out").arg(out);
    }
    println!("\n==> {} bench --built", exe.display());
    run.status().map(|s| s.success()).unwrap_or(false)
}

/// Runs every wanted measure `plan.runs` times ((f) once) and merges the samples.
pub(crate) fn run_suite(plan: &Plan) -> Report {
    let mut report = Report::new(plan.quick, plan.runs);
    // Each session costs a descriptor in this process and one in the server (and two in a
    // fault proxy, which are started as the limit requires): room for the most sessions and
    // some. Child processes inherit the limit.
    let mut sizes = plan.sizes;
    let fds = child::raise_fd_limit(2 * sizes.most() as u64 + 1024);
    let fit = fds.saturating_sub(512) as usize;
    if fit < sizes.most() {
        report.note(format!(
            "only {fds} file descriptors allowed: sizes cut to {fit} sessions"
        ));
        sizes.idle_sessions = sizes.idle_sessions.min(fit);
        sizes.subscribers = sizes.subscribers.min(fit);
        sizes.storm_sessions = sizes.storm_sessions.min(fit);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            report.error("setup", format!("cannot start a runtime: {e}"));
            return report;
        }
    };
    report.note(format!(
        "{} cores; load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        child::load_average()
    ));
    for run in 1..=plan.runs {
        if plan.runs > 1 {
            println!("--- run {run} of {}", plan.runs);
        }
        let l = &plan.launcher;
        let measures: [(char, &str); 9] = [
            ('a', "resume latency"),
            ('b', "one-session throughput"),
            ('c', "idle memory"),
            ('d', "fan-out"),
            ('e', "reconnection storm"),
            ('g', "login storm"),
            ('r', "redis store"),
            ('k', "rolling restart"),
            ('h', "language packages"),
        ];
        for (id, name) in measures {
            if !plan.wants(id) {
                continue;
            }
            if id == 'h' && plan.bindings.is_none() {
                if run == 1 {
                    report
                        .note("(h) skipped: the Node.js and Python packages are not built".into());
                }
                continue;
            }
            let packages = plan.bindings.clone();
            println!("[{id}] {name}...");
            let started = Instant::now();
            let result = runtime.block_on(async {
                match id {
                    'a' => resume::run(sizes.resumes).await,
                    'b' => throughput::run(sizes.messages).await,
                    'c' => memory::run(l, sizes.idle_sessions).await,
                    'd' => fanout::run(l, sizes.subscribers, sizes.updates).await,
                    'g' => logins::run(l, sizes.storm_sessions).await,
                    'r' => {
                        cluster::run(cluster::Scale {
                            resumes: (sizes.resumes / 4).max(10),
                            messages: (sizes.messages / 10).max(1000),
                            subscribers: (sizes.subscribers / 10).max(20),
                            updates: sizes.updates,
                        })
                        .await
                    }
                    'k' => rolling::run(l, sizes.storm_sessions).await,
                    'h' => match &packages {
                        Some(b) => bindings::run(b, sizes.binding_messages).await,
                        None => Ok(Vec::new()),
                    },
                    _ => storm::run(l, sizes.storm_sessions).await,
                }
            });
            match result {
                Ok(samples) => {
                    for s in &samples {
                        println!("    {}", s.one_line());
                    }
                    report.add(samples);
                }
                Err(e) => {
                    eprintln!("    [{id}] failed: {e}");
                    report.error(&id.to_string(), e);
                }
            }
            println!("    ({:.1} s)", started.elapsed().as_secs_f64());
        }
    }
    if plan.wants('f') {
        println!("[f] microbenchmarks...");
        let result = match plan.micro {
            Micro::Criterion => micro::criterion(plan.quick),
            Micro::InProcess => Ok(micro::in_process(if plan.quick { 2_000 } else { 200_000 })),
        };
        match result {
            Ok(samples) => report.add(samples),
            Err(e) => report.error("f", e),
        }
    }
    report
}

/// Runs a future on Tether's own runtime (where sessions live) and waits for it.
pub(crate) async fn on_tether<F, T>(f: F) -> Result<T, String>
where
    F: Future<Output = Result<T, String>> + Send + 'static,
    T: Send + 'static,
{
    let handle = tether::runtime::handle().map_err(|e| format!("Tether's runtime: {e}"))?;
    handle
        .spawn(f)
        .await
        .map_err(|e| format!("task failed: {e}"))?
}

/// Opens `n` sessions with at most `parallel` handshakes at a time, each optionally
/// subscribed to `selector`. Runs on Tether's runtime.
pub(crate) async fn open_many<F>(
    n: usize,
    parallel: usize,
    make: F,
    selector: Option<&'static str>,
) -> Result<Vec<(Session, Option<Subscription>)>, String>
where
    F: Fn(usize) -> SessionBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (make, permits) = (make.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let session = make(i).open().await.map_err(|e| format!("open {i}: {e}"))?;
            let sub = match selector {
                Some(s) => Some(
                    session
                        .subscribe(s)
                        .await
                        .map_err(|e| format!("subscribe {i}: {e}"))?,
                ),
                None => None,
            };
            Ok::<_, String>((i, session, sub))
        });
    }
    let mut opened: Vec<(usize, Session, Option<Subscription>)> = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(o) => opened.push(o),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        close_all(opened.into_iter().map(|(_, s, _)| s).collect()).await;
        return Err(e);
    }
    opened.sort_by_key(|(i, _, _)| *i);
    Ok(opened.into_iter().map(|(_, s, sub)| (s, sub)).collect())
}

/// Closes sessions concurrently, giving up after a while.
pub(crate) async fn close_all(sessions: Vec<Session>) {
    let mut tasks = tokio::task::JoinSet::new();
    for s in sessions {
        tasks.spawn(async move { s.close().await });
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// The server configuration every measure uses: anonymous sessions may do anything (no argon2
/// per session), room for long bursts in the recovery buffers, no per-principal cap, and no
/// per-address connection rate limit (every bench connection comes from 127.0.0.1).
pub(crate) const SERVER_TOML: &str = r#"listen = "127.0.0.1:0"
[recovery]
max_frames = 1000000
max_bytes = 1073741824
[limits]
max_sessions_per_principal = 1000000
connection_attempts_per_second_per_address = 0
[anonymous]
enabled = true
subscribe = ["**"]
publish = ["**"]
"#;

/// [`SERVER_TOML`] for an in-process server.
pub(crate) fn server_config() -> Result<tether_server::ServerConfig, String> {
    tether_server::ServerConfig::from_toml(SERVER_TOML).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child process the quick run below starts: it re-runs this test binary with only
    /// this test and an environment variable saying which server to be.
    #[test]
    #[ignore = "a child process of quick_bench_produces_every_row, not a test of its own"]
    fn child_process() {
        if let Ok(role) = std::env::var(child::CHILD_ENV) {
            child::child_main(&role);
        }
    }

    /// `cargo xtask bench --quick`, in process: every measure runs and yields every row.
    /// Timings and ratios are not asserted (they mean nothing in a debug build under load).
    #[test]
    fn quick_bench_produces_every_row() {
        let plan = Plan {
            quick: true,
            sizes: Sizes::quick(),
            runs: 1,
            only: Vec::new(),
            launcher: Launcher::Harness {
                exe: std::env::current_exe().expect("test executable"),
                test: "bench::tests::child_process".into(),
            },
            micro: Micro::InProcess,
            // The debug builds of the Node.js and Python suites, when they ran before.
            bindings: bindings::Bindings::debug(),
        };
        if plan.bindings.is_none() {
            println!("(h) skipped: the Node.js and Python suites' builds are not there");
        }
        let report = run_suite(&plan);
        report.print();
        assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
        let keys = report.keys();
        for key in report::EXPECTED_KEYS {
            if key.starts_with("h.") && plan.bindings.is_none() {
                continue;
            }
            assert!(keys.contains(key), "row {key} missing; rows: {keys:?}");
        }
        let dir = std::env::temp_dir().join(format!("tether-bench-test-{}", std::process::id()));
        let out = dir.join("results.json");
        report
            .write_json(&out, "cargo xtask bench --quick")
            .expect("results written");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).expect("read back"))
                .expect("valid JSON");
        let rows = json["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), keys.len());
        let _ = std::fs::remove_dir_all(dir);
    }
}
