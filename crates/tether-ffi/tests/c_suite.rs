//! Drives the C tests (`tests/c/test_tether.c`) and the C example (`examples/c/reconnect.c`)
//! against a real server behind the fault proxy, on loopback. The C programs are compiled with
//! gcc against the library `cargo build -p tether-ffi` produces; the suite also runs under
//! valgrind memcheck and fails on definitely-lost blocks or invalid accesses.
//!
//! Run with `--nocapture` to see the C runner's own `N passed, N failed` lines.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tether_server::config::PrincipalConfig;
use tether_server::{Server, ServerConfig};
use tether_testkit::{CutMode, FaultProxy, serve_control};

/// Bound for things that should happen soon (a failing test fails instead of hanging).
const BOUND: Duration = Duration::from_secs(120);

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn workspace() -> PathBuf {
    crate_dir()
        .parent()
        .and_then(Path::parent)
        .expect("the crate lives in crates/")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    workspace().join("target")
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tether-ffi-c");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The C programs are heavy (valgrind, a 5 s example): one at a time, so that none starves.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the variables cargo sets for this test process: a nested `cargo build` would
/// otherwise see a different `CARGO_MANIFEST_DIR` (which some build scripts, ring's among them,
/// track) and rebuild half the dependency tree.
fn cargo_env(cmd: &mut Command) -> &mut Command {
    const SET_FOR_TESTS: [&str; 7] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str()
            && SET_FOR_TESTS.iter().any(|p| k.starts_with(p))
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("CARGO", env!("CARGO"))
}

/// `cargo build -p tether-ffi` (a no-op when fresh): `cargo test` does not build the cdylib and
/// staticlib that C links against.
fn build_library() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = cargo_env(&mut Command::new(env!("CARGO")))
            .args(["build", "-p", "tether-ffi", "--lib"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p tether-ffi failed");
    });
}

/// Compiles `tests/c/<name>.c`, linked statically against libtether_ffi.a, to
/// `target/tmp/tether-ffi-c/<name>`.
fn compile(name: &str) -> PathBuf {
    build_library();
    let exe = out_dir().join(name);
    let output = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-pthread"])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join(format!("tests/c/{name}.c")))
        .arg(target_dir().join("debug/libtether_ffi.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("run gcc");
    assert!(
        output.status.success(),
        "gcc {name}.c failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// The C test program.
fn test_program() -> PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| compile("test_tether")).clone()
}

/// The exit scenarios (`tests/c/exit_scenarios.c`).
fn exit_program() -> PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| compile("exit_scenarios")).clone()
}

/// A real server (with `control`/`password`, every permission, and `reader`/`secret`, allowed
/// `public/**` only) behind the fault proxy and its HTTP control API.
struct Env {
    proxy: FaultProxy,
    control: SocketAddr,
    server: Option<Server>,
    config: ServerConfig,
    runtime: tokio::runtime::Runtime,
}

impl Env {
    fn start() -> Env {
        Env::with(|_| {})
    }

    /// As [`Env::start`], with the server's configuration changed by `configure`.
    fn with(configure: impl FnOnce(&mut ServerConfig)) -> Env {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let mut config = ServerConfig::dev();
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.principals.push(PrincipalConfig {
            name: "reader".into(),
            password_hash: tether_server::auth::hash_password("secret"),
            subscribe: vec!["public/**".into()],
            publish: vec!["public/**".into()],
        });
        configure(&mut config);
        let (server, proxy, control) = runtime.block_on(async {
            let server = Server::bind(config.clone()).await.expect("server starts");
            let proxy =
                FaultProxy::start("127.0.0.1:0".parse().expect("address"), server.local_addr())
                    .await
                    .expect("proxy starts");
            let (control, _task) =
                serve_control(proxy.clone(), "127.0.0.1:0".parse().expect("address"))
                    .await
                    .expect("control API starts");
            (server, proxy, control)
        });
        Env {
            proxy,
            control,
            server: Some(server),
            config,
            runtime,
        }
    }

    /// Drains the server (every session is sent away with reason `server_draining` and the
    /// configured hint; with a state directory, saved there), then starts it again at once on
    /// the same address, from what the drain saved: a restart in place.
    fn drain_and_restart(&mut self) {
        let server = self.server.take().expect("the server runs");
        let addr = server.local_addr();
        let mut config = self.config.clone();
        config.listen = addr;
        let again = self.runtime.block_on(async move {
            let report = tokio::time::timeout(BOUND, server.drain(Duration::from_secs(10)))
                .await
                .expect("the drain ends")
                .expect("the drain saves the sessions");
            println!(
                "drained: {} sessions sent away, {} still connected, {:?} saved",
                report.sent_away, report.still_connected, report.saved
            );
            Server::bind(config).await.expect("the server starts again")
        });
        self.server = Some(again);
    }

    fn url(&self) -> String {
        format!("ws://{}", self.proxy.local_addr())
    }

    /// The server itself, not through the proxy.
    fn server_url(&self) -> String {
        let server = self.server.as_ref().expect("the server runs until drop");
        format!("ws://{}", server.local_addr())
    }

    /// The latest value the server holds for each topic matching `selector` (`prefix/*`),
    /// read by a session of this process: a new subscription receives the current values,
    /// then the sentinel the server publishes after it.
    fn latest_values(&self, prefix: &str) -> HashMap<String, String> {
        let server = self.server.as_ref().expect("the server runs until drop");
        let sentinel = format!("{prefix}/sentinel");
        self.runtime.block_on(async {
            let session = tether::Session::builder(&self.server_url())
                .principal("control")
                .password("password")
                .open()
                .await
                .expect("a checking session opens");
            let mut updates = session
                .subscribe(&format!("{prefix}/*"))
                .await
                .expect("subscribe");
            server
                .publish(&sentinel, "end")
                .await
                .expect("the server publishes");
            let mut values = HashMap::new();
            loop {
                let update = tokio::time::timeout(BOUND, updates.next())
                    .await
                    .expect("the sentinel arrives")
                    .expect("the subscription stays open");
                if *update.topic == *sentinel {
                    break;
                }
                values.insert(
                    update.topic.to_string(),
                    String::from_utf8_lossy(&update.value).into_owned(),
                );
            }
            session.close().await;
            values
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime
                .block_on(server.shutdown(Duration::from_millis(100)));
        }
        let proxy = self.proxy.clone();
        self.runtime.block_on(proxy.shutdown());
    }
}

/// Reads a child's stdout line by line on a thread, echoing each line (with `prefix`) unless
/// `prefix` is `None`.
fn lines(child: &mut Child, prefix: Option<&'static str>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(prefix) = prefix {
                println!("{prefix}{line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects the child's remaining lines until its stdout closes, then its exit status; kills
/// it if it stays silent for BOUND.
fn finish(
    child: &mut Child,
    rx: &mpsc::Receiver<String>,
    what: &str,
) -> (std::process::ExitStatus, Vec<String>) {
    finish_with(child, rx, what, &mut |_| {})
}

/// As [`finish`], calling `on_line` with each line as it comes.
fn finish_with(
    child: &mut Child,
    rx: &mpsc::Receiver<String>,
    what: &str,
    on_line: &mut dyn FnMut(&str),
) -> (std::process::ExitStatus, Vec<String>) {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(BOUND) {
            Ok(line) => {
                on_line(&line);
                seen.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} printed nothing for {BOUND:?}; it printed {seen:#?}");
            }
        }
    }
    (child.wait().expect("wait for the child"), seen)
}

/// Runs `program` (under `wrapper`, e.g. valgrind, when not empty) with `args` to its end:
/// its exit status, stdout lines (echoed with `echo` as prefix, if any) and stderr.
fn run_child(
    wrapper: &[&str],
    program: &Path,
    args: &[String],
    echo: Option<&'static str>,
    what: &str,
) -> (std::process::ExitStatus, Vec<String>, String) {
    run_child_with(wrapper, program, args, &[], echo, what, |_| {})
}

/// As [`run_child`], with environment variables `envs`, and `on_line` called with each line
/// of stdout as it comes (the harness's part in a test).
fn run_child_with(
    wrapper: &[&str],
    program: &Path,
    args: &[String],
    envs: &[(&str, String)],
    echo: Option<&'static str>,
    what: &str,
    mut on_line: impl FnMut(&str),
) -> (std::process::ExitStatus, Vec<String>, String) {
    let mut cmd = if let Some((first, rest)) = wrapper.split_first() {
        let mut c = Command::new(first);
        c.args(rest).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let rx = lines(&mut child, echo);
    let (status, output) = finish_with(&mut child, &rx, what, &mut on_line);
    let stderr = errors.join().unwrap_or_default();
    (status, output, stderr)
}

/// Parses the runner's closing `N passed, N failed` line.
fn summary(lines: &[String]) -> Option<(u32, u32)> {
    let last = lines.iter().rev().find(|l| l.contains(" passed, "))?;
    let mut words = last.split([' ', ',']).filter(|w| !w.is_empty());
    let passed = words.next()?.parse().ok()?;
    let _ = words.next();
    let failed = words.next()?.parse().ok()?;
    Some((passed, failed))
}

fn run_c_suite(
    wrapper: &[&str],
    tests: &[&str],
) -> (std::process::ExitStatus, Vec<String>, String) {
    let env = Env::start();
    let mut args = vec![env.url(), env.control.to_string()];
    args.extend(tests.iter().map(|t| t.to_string()));
    let envs = [("TETHER_SERVER_URL", env.server_url())];
    let result = run_child_with(
        wrapper,
        &test_program(),
        &args,
        &envs,
        Some(""),
        "the C tests",
        |_| {},
    );
    drop(env);
    result
}

/// valgrind memcheck: definitely-lost blocks and invalid reads or writes make it exit with 99.
const VALGRIND: [&str; 7] = [
    "valgrind",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite",
    "--show-leak-kinds=definite",
    "--error-exitcode=99",
    "--fair-sched=yes",
    "--quiet",
];

#[test]
fn c_tests_pass_against_the_server_through_the_fault_proxy() {
    let _serial = serial();
    let (status, output, stderr) = run_c_suite(&[], &[]);
    let counts = summary(&output);
    assert!(
        status.success() && matches!(counts, Some((p, 0)) if p >= 13),
        "C tests failed ({status}, {counts:?}); stderr:\n{stderr}"
    );
}

/// Memcheck over the scenarios that hand out and take back memory: sessions, strategies,
/// credentials, ids, error messages, subscriptions. Definitely-lost blocks and invalid reads or
/// writes fail the test.
#[test]
fn c_tests_are_clean_under_valgrind() {
    let _serial = serial();
    let tests = [
        "create_and_close",
        "strategy_start_reconnects_same_session",
        "strategy_abort_closes_failed",
        "subscribe_publish_across_a_cut",
        "invalid_arguments",
        "fallback_urls",
        "close_from_a_callback",
        "shutdown_from_a_callback",
        "shutdown",
    ];
    let (status, output, stderr) = run_c_suite(&VALGRIND, &tests);
    let counts = summary(&output);
    assert!(
        status.code() != Some(99),
        "valgrind found errors or definitely-lost blocks:\n{stderr}"
    );
    assert!(
        status.success() && counts == Some((tests.len() as u32, 0)),
        "C tests under valgrind failed ({status}, {counts:?}); stderr:\n{stderr}"
    );
}

/// The retry-after hint the drain test's server sends (the test program checks it).
const DRAIN_HINT_MS: u64 = 700;

/// The C program's `drain` test: when it prints `drain now`, the server drains (sending every
/// session away with reason `server_draining` and a 700 ms hint, saving them to its state
/// directory) and starts again at once on the same address. A user strategy reads the reason and
/// the hint through `session_reconnection_attempt_get` and waits that long; the default
/// strategy was handed the same facts; both sessions come back with their ids.
#[test]
fn c_drain_reaches_the_strategies() {
    let _serial = serial();
    let dir = out_dir().join(format!("drain-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut env = Env::with(|config| {
        config.drain.retry_after_ms = DRAIN_HINT_MS;
        config.state_dir = Some(dir.clone());
    });
    let args = [env.url(), env.control.to_string(), "drain".to_owned()];
    let envs = [
        ("TETHER_SERVER_URL", env.server_url()),
        ("TETHER_RETRY_AFTER_MS", DRAIN_HINT_MS.to_string()),
    ];
    let mut drained = false;
    let (status, output, stderr) = run_child_with(
        &[],
        &test_program(),
        &args,
        &envs,
        Some(""),
        "the C drain test",
        |line| {
            if line == "drain now" && !drained {
                drained = true;
                env.drain_and_restart();
            }
        },
    );
    assert!(drained, "the test never asked for the drain: {output:#?}");
    let counts = summary(&output);
    assert!(
        status.success() && counts == Some((1, 0)),
        "the C drain test failed ({status}, {counts:?}); stderr:\n{stderr}"
    );
    drop(env);
    let _ = std::fs::remove_dir_all(&dir);
}

/// How many times each exit scenario runs: `TETHER_EXIT_RUNS` (`cargo xtask soak` sets it),
/// 3 by default.
fn exit_runs() -> u32 {
    std::env::var("TETHER_EXIT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

/// `TETHER_ERROR_SESSION_CLOSED` (the crate is a cdylib and staticlib: tests cannot link it).
const SESSION_CLOSED: i32 = 10;

/// How the publisher threads of `tests/c/exit_scenarios.c` must have ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Threads {
    /// Joined after a close or shutdown from main: each one's last call failed with
    /// `SESSION_CLOSED` (never written, so not applied), and the server applied exactly the
    /// publishes it reported applied.
    Joined,
    /// A snapshot after `tether_shutdown` from a callback: a thread's call in flight may have
    /// been applied and not counted yet; one that failed was not applied.
    AfterShutdown,
    /// A snapshot while they still publish (exit without shutdown): at least what each reported
    /// applied was applied.
    Running,
}

/// An exit scenario of `tests/c/exit_scenarios.c`: its name, the exit status it ends with, the
/// line it prints about how it stopped Tether, how its threads ended and its last line.
struct ExitScenario {
    name: &'static str,
    status: i32,
    stopped: Option<&'static str>,
    threads: Threads,
    last: &'static str,
}

const SHUTDOWN_THEN_RETURN: ExitScenario = ExitScenario {
    name: "shutdown_then_return",
    status: 0,
    stopped: Some("tether_shutdown returned 1 (error 0 )"),
    threads: Threads::Joined,
    last: "main returns",
};
const EXIT_WITHOUT_SHUTDOWN: ExitScenario = ExitScenario {
    name: "exit_without_shutdown",
    status: 0,
    stopped: None,
    threads: Threads::Running,
    last: "exit now",
};
const CLOSE_IN_FLIGHT: ExitScenario = ExitScenario {
    name: "close_in_flight",
    status: 0,
    stopped: Some("session_close returned 1 (error 0 )"),
    threads: Threads::Joined,
    last: "main returns",
};
const EXIT_FROM_HANDLER: ExitScenario = ExitScenario {
    name: "exit_from_handler",
    status: 3,
    stopped: Some("tether_shutdown in the handler returned 0 (error 14 "),
    threads: Threads::AfterShutdown,
    last: "exit now",
};

/// One run of an exit scenario in a child process: its exit status, its output, and the values
/// the server applied against what the program was told. `Err` says what went wrong.
fn run_exit_scenario(
    env: &Env,
    wrapper: &[&str],
    scenario: &ExitScenario,
    run: u32,
) -> Result<(), String> {
    let prefix = format!(
        "c/exit/{}/{}-{run}{}",
        scenario.name,
        std::process::id(),
        if wrapper.is_empty() { "" } else { "-valgrind" }
    );
    let args = [env.url(), scenario.name.to_owned(), prefix.clone()];
    let (status, output, stderr) = run_child(wrapper, &exit_program(), &args, None, scenario.name);
    let report = |what: String| {
        format!(
            "{what}\n  exit status: {status}\n  stdout:\n    {}\n  stderr:\n{stderr}",
            output.join("\n    ")
        )
    };
    if status.code() != Some(scenario.status) {
        return Err(report(format!(
            "expected exit status {}, got {status}",
            scenario.status
        )));
    }
    // Nothing on stderr: no panic, no log line, no valgrind report.
    if !stderr.trim().is_empty() {
        return Err(report("it wrote to stderr".into()));
    }
    if output.last().map(String::as_str) != Some(scenario.last) {
        return Err(report(format!("the last line is not {:?}", scenario.last)));
    }
    if let Some(stopped) = scenario.stopped
        && !output.iter().any(|l| l.starts_with(stopped))
    {
        return Err(report(format!("no line starting with {stopped:?}")));
    }
    let latest = env.latest_values(&prefix);
    let mut threads = 0;
    for line in &output {
        let words: Vec<&str> = line.split(' ').collect();
        let ["thread", i, "ok", ok, "error", code] = words[..] else {
            continue;
        };
        threads += 1;
        let (Ok(ok), Ok(code)) = (ok.parse::<u64>(), code.parse::<i32>()) else {
            return Err(report(format!("unreadable line {line:?}")));
        };
        let applied = match latest.get(&format!("{prefix}/t{i}")) {
            None => 0,
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| report(format!("thread {i}: the server holds {v:?}")))?,
        };
        let consistent = match (scenario.threads, code) {
            (Threads::Joined, SESSION_CLOSED) => applied == ok,
            (Threads::AfterShutdown, SESSION_CLOSED) => applied == ok,
            (Threads::AfterShutdown, 0) => applied == ok || applied == ok + 1,
            (Threads::Running, 0) => applied >= ok,
            _ => false,
        };
        if !consistent {
            return Err(report(format!(
                "thread {i}: told {ok} publishes applied, then error {code}; the server applied \
                 {applied}"
            )));
        }
    }
    if threads != 8 {
        return Err(report(format!("{threads} thread lines, expected 8")));
    }
    Ok(())
}

/// Runs `scenario` `exit_runs()` times (under `wrapper` if not empty) against one server;
/// panics with every failed run.
fn exit_scenario(scenario: &ExitScenario, wrapper: &[&str]) {
    let runs = exit_runs();
    let env = Env::start();
    let failures: Vec<String> = (0..runs)
        .filter_map(|run| {
            run_exit_scenario(&env, wrapper, scenario, run)
                .err()
                .map(|e| format!("run {run}: {e}"))
        })
        .collect();
    println!(
        "exit scenario {}{}: {}/{runs} runs clean",
        scenario.name,
        if wrapper.is_empty() {
            ""
        } else {
            " under valgrind"
        },
        runs as usize - failures.len()
    );
    assert!(
        failures.is_empty(),
        "exit scenario {} failed:\n{}",
        scenario.name,
        failures.join("\n")
    );
}

/// Eight threads publish with blocking calls; main calls `tether_shutdown`, joins them and
/// returns from main: exit status 0, every publish the server applied reported applied.
#[test]
fn exit_scenario_shutdown_then_return() {
    let _serial = serial();
    exit_scenario(&SHUTDOWN_THEN_RETURN, &[]);
}

/// Eight threads publish; main calls `exit()` with no close, shutdown or free: no crash.
#[test]
fn exit_scenario_exit_without_shutdown() {
    let _serial = serial();
    exit_scenario(&EXIT_WITHOUT_SHUTDOWN, &[]);
}

/// Eight threads publish; main calls `session_close`: every publish queued before it is sent
/// and confirmed (reported applied, and applied), the later calls fail with
/// `TETHER_ERROR_SESSION_CLOSED` and were not applied.
#[test]
fn exit_scenario_close_in_flight() {
    let _serial = serial();
    exit_scenario(&CLOSE_IN_FLIGHT, &[]);
}

/// Eight threads publish; a topic handler calls `tether_shutdown` (false,
/// `TETHER_ERROR_WRONG_THREAD`) and `exit(3)`.
#[test]
fn exit_scenario_exit_from_handler() {
    let _serial = serial();
    exit_scenario(&EXIT_FROM_HANDLER, &[]);
}

/// The exit scenarios under valgrind memcheck: no invalid access, no definitely-lost block.
#[test]
fn exit_scenario_under_valgrind() {
    let _serial = serial();
    for scenario in [
        &SHUTDOWN_THEN_RETURN,
        &EXIT_WITHOUT_SHUTDOWN,
        &CLOSE_IN_FLIGHT,
        &EXIT_FROM_HANDLER,
    ] {
        exit_scenario(scenario, &VALGRIND);
    }
}

/// `tests/c/publish_loop.c`: one thread, blocking `session_publish` in a loop, straight to the
/// server; prints its rate (not asserted: measure with `TETHER_PUBLISH_LOOP_COUNT=10000` and
/// `--nocapture`, see the README).
#[test]
fn publish_loop_runs() {
    let _serial = serial();
    let count = std::env::var("TETHER_PUBLISH_LOOP_COUNT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(500);
    let program = compile("publish_loop");
    let env = Env::start();
    let (status, output, stderr) = run_child(
        &[],
        &program,
        &[env.server_url(), count.to_string()],
        Some("publish_loop: "),
        "publish_loop",
    );
    assert!(
        status.success()
            && output
                .iter()
                .any(|l| l.starts_with(&format!("{count} publishes in "))),
        "publish_loop failed ({status}): {output:#?}\n{stderr}"
    );
}

/// `examples/c/reconnect.c`, built by its Makefile through pkg-config, survives a proxy cut.
#[test]
fn reconnect_example_survives_a_cut() {
    let _serial = serial();
    build_library();
    let make = cargo_env(&mut Command::new("make"))
        .arg("-C")
        .arg(workspace().join("examples/c"))
        .arg(format!("BUILD={}", out_dir().join("examples").display()))
        .output()
        .expect("run make");
    assert!(
        make.status.success(),
        "make -C examples/c failed:\n{}{}",
        String::from_utf8_lossy(&make.stdout),
        String::from_utf8_lossy(&make.stderr)
    );
    let env = Env::start();
    // stdbuf: the example's stdout is a pipe here, and the test reacts to its lines as they come.
    let mut child = Command::new("stdbuf")
        .arg("-oL")
        .arg(out_dir().join("examples/reconnect"))
        .arg(env.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the example");
    let rx = lines(&mut child, Some("reconnect.c: "));
    let mut seen = Vec::new();
    let expect = |what: &str, seen: &mut Vec<String>| loop {
        match rx.recv_timeout(BOUND) {
            Ok(line) => {
                let found = line.contains(what);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => panic!("the example never printed {what:?}; it printed {seen:#?}"),
        }
    };
    expect("Session created (state=1, id=", &mut seen);
    assert_eq!(env.proxy.cut(CutMode::Rst), 1, "one connection to cut");
    expect("Reconnection successful", &mut seen);
    expect("to CLOSED_BY_CLIENT (3)", &mut seen);
    let (status, rest) = finish(&mut child, &rx, "the example");
    seen.extend(rest);
    assert!(status.success(), "the example exited with {status}");
    let expected = [
        "Session state changed from CONNECTING (0) to CONNECTED_ACTIVE (1)",
        "Session state changed from CONNECTED_ACTIVE (1) to RECOVERING_RECONNECT (2)",
        "Waiting for 0.000000 ms",
        "Session state changed from RECOVERING_RECONNECT (2) to CONNECTED_ACTIVE (1)",
    ];
    for line in expected {
        assert!(
            seen.iter().any(|l| l == line),
            "missing {line:?} in {seen:#?}"
        );
    }
}

/// `make install` lays out lib/, include/ and a pkg-config file that compiles and links the
/// example (dynamically, and statically with `pkg-config --static`).
#[test]
fn installed_library_is_usable_through_pkg_config() {
    let _serial = serial();
    build_library();
    let prefix = out_dir().join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    let install = cargo_env(&mut Command::new("make"))
        .arg("-C")
        .arg(crate_dir())
        .args(["install", "PROFILE=debug"])
        .arg(format!("PREFIX={}", prefix.display()))
        .output()
        .expect("run make install");
    assert!(
        install.status.success(),
        "make install failed:\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    for file in [
        "lib/libtether_ffi.so",
        "lib/libtether_ffi.a",
        "include/tether.h",
        "lib/pkgconfig/tether.pc",
    ] {
        assert!(prefix.join(file).is_file(), "{file} not installed");
    }
    let pkg = |args: &[&str]| {
        let out = Command::new("pkg-config")
            .args(args)
            .arg("tether")
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
            .output()
            .expect("run pkg-config");
        assert!(out.status.success(), "pkg-config {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(pkg(&["--modversion"]), env!("CARGO_PKG_VERSION"));
    let cflags = pkg(&["--cflags"]);
    assert!(
        cflags.contains(&format!("-I{}", prefix.join("include").display())),
        "{cflags}"
    );
    let static_libs = pkg(&["--static", "--libs"]);
    assert!(
        static_libs.contains("-lpthread") && static_libs.contains("-ldl"),
        "{static_libs}"
    );

    let example = workspace().join("examples/c/reconnect.c");
    let dynamic = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gcc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wno-unused-parameter -Werror \
             {example} -o {out} $(pkg-config --cflags --libs tether)",
            example = example.display(),
            out = out_dir().join("reconnect-installed").display(),
        ))
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("run gcc");
    assert!(
        dynamic.status.success(),
        "linking against the installed library failed:\n{}",
        String::from_utf8_lossy(&dynamic.stderr)
    );
    let fully_static = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gcc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wno-unused-parameter -Werror \
             {example} -o {out} $(pkg-config --cflags tether) {lib} \
             $(pkg-config --static --libs-only-l tether | sed 's/-ltether_ffi//')",
            example = example.display(),
            out = out_dir().join("reconnect-static").display(),
            lib = prefix.join("lib/libtether_ffi.a").display(),
        ))
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("run gcc");
    assert!(
        fully_static.status.success(),
        "static linking with the pkg-config private libraries failed:\n{}",
        String::from_utf8_lossy(&fully_static.stderr)
    );
}

/// The conformance scenarios (`conformance/scenarios.txt`) through the C API: the C runner
/// (`tests/c/conformance.c`) against the fixture's server and fault proxy, served over HTTP
/// from this process. It writes `target/conformance/c.txt` for `cargo xtask conformance`; a
/// step the C API cannot do makes its scenario "unsupported", never passed.
#[test]
fn conformance_scenarios() {
    let _serial = serial();
    let program = compile("conformance");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listen");
    let control = listener.local_addr().expect("address");
    let fixture = std::sync::Arc::new(tether_conformance::fixture::Fixture::default());
    runtime.spawn(tether_conformance::http::serve(listener, fixture.clone()));
    let results = tether_conformance::results_dir();
    std::fs::create_dir_all(&results).expect("results directory");
    let only = std::env::var("TETHER_CONFORMANCE_ONLY").ok();
    let mut args = vec![
        tether_conformance::scenario::default_path()
            .display()
            .to_string(),
        control.to_string(),
        results.join("c.txt").display().to_string(),
    ];
    args.extend(only);
    let (status, output, stderr) = run_child(
        &[],
        &program,
        &args,
        Some("conformance: "),
        "the C conformance runner",
    );
    runtime.block_on(fixture.end());
    assert!(
        status.success() && output.iter().any(|l| l.ends_with(" skipped")),
        "C conformance scenarios failed ({status}); stderr:\n{stderr}"
    );
}
