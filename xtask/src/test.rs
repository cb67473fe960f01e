//! `cargo xtask test`: every check, in order, with one summary at the end.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// No single step may take longer than this (a fresh clone builds and runs the slowest one,
/// `cargo test --workspace`, in about 5 minutes).
const STEP_LIMIT: Duration = Duration::from_secs(25 * 60);
/// The whole run stays under the 40 minutes CI allows (about 10 minutes on a fresh clone).
const RUN_LIMIT: Duration = Duration::from_secs(38 * 60);
static RUN_STARTED: OnceLock<Instant> = OnceLock::new();

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// A multi-threaded runtime for a command; `None` (with the reason printed) when none starts.
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            None
        }
    }
}

/// Counts from a test runner's output.
#[derive(Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
}

/// Reads one line of a runner's output and adds what it reports to the counts.
pub(crate) type LineParser = fn(&str, &mut Counts);

/// `cargo test`'s `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines.
fn cargo_test_line(line: &str, counts: &mut Counts) {
    if let Some(rest) = line.strip_prefix("test result: ") {
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(kind)) = (words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match kind {
                    "passed" => counts.passed += n,
                    "failed" => counts.failed += n,
                    "ignored" => counts.ignored += n,
                    _ => {}
                }
            }
        }
    }
}

/// [`run_counting`], for the other jobs.
pub(crate) fn run_counting_pub(name: &str, cmd: Command, counts: &mut Counts) -> bool {
    run_counting(name, cmd, counts)
}

/// Runs a command, echoing its output, and adds up `cargo test`'s result lines.
fn run_counting(name: &str, cmd: Command, counts: &mut Counts) -> bool {
    run_parsed(name, cmd, counts, cargo_test_line)
}

/// Runs a command, echoing its standard output line by line through `parse`.
pub(crate) fn run_parsed(
    name: &str,
    mut cmd: Command,
    counts: &mut Counts,
    parse: LineParser,
) -> bool {
    cmd.stdout(Stdio::piped());
    supervise(name, cmd, |child| {
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                parse(&line, counts);
            }
        }
    })
}

pub(crate) fn run_step(name: &str, cmd: Command) -> bool {
    supervise(name, cmd, |_| {})
}

/// Runs a step under its [`Watchdog`]: `read` consumes the child's output, if piped; the step
/// succeeds when the child exits with success before its deadline.
fn supervise(name: &str, mut cmd: Command, read: impl FnOnce(&mut Child)) -> bool {
    println!("\n==> {name}");
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot run {name}: {e}");
            return false;
        }
    };
    let watchdog = Watchdog::start(name, &child);
    read(&mut child);
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    watchdog.finish() && ok
}

/// Kills a step (with every process it started) that outlives its deadline, so that a hang
/// fails the run with its name instead of stalling CI.
struct Watchdog {
    done: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn start(name: &str, child: &Child) -> Watchdog {
        let started = *RUN_STARTED.get_or_init(Instant::now);
        Watchdog::with_limit(
            name,
            child,
            STEP_LIMIT.min(RUN_LIMIT.saturating_sub(started.elapsed())),
        )
    }

    fn with_limit(name: &str, child: &Child, limit: Duration) -> Watchdog {
        let (done, wait) = mpsc::channel::<()>();
        let (name, pid) = (name.to_string(), child.id());
        let thread = std::thread::spawn(move || match wait.recv_timeout(limit) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "\nTIMED OUT: `{name}` ran past its {} s deadline; killing it",
                    limit.as_secs()
                );
                kill_tree(pid);
                false
            }
            _ => true,
        });
        Watchdog { done, thread }
    }

    /// Whether the step ended before its deadline.
    fn finish(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(false)
    }
}

/// SIGKILLs `pid` and all its descendants (found through /proc), children first seen first.
fn kill_tree(pid: u32) {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // The field after the parenthesised command name is the state, then the parent.
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
                && let Some(ppid) = rest.split_whitespace().nth(1)
                && let Ok(ppid) = ppid.parse::<u32>()
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(tree.iter().map(u32::to_string))
        .status();
}

pub(crate) fn run(lint: bool) -> bool {
    let started = *RUN_STARTED.get_or_init(Instant::now);
    let mut steps: Vec<(String, bool)> = Vec::new();
    let mut counts = Counts::default();
    if lint {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        steps.push((
            "cargo fmt --check".into(),
            run_step("cargo fmt --all -- --check", fmt),
        ));
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        steps.push((
            "cargo clippy".into(),
            run_step(
                "cargo clippy --workspace --all-targets -- -D warnings",
                clippy,
            ),
        ));
    }
    crate::conformance::clear_results();
    if !crate::apt::ensure_redis() {
        steps.push(("redis-server (apt-get)".into(), false));
    }
    let mut tests = cargo();
    tests.args(["test", "--workspace"]);
    steps.push((
        "cargo test".into(),
        run_counting("cargo test --workspace", tests, &mut counts),
    ));
    for (name, suite) in crate::lang::SUITES {
        match suite(&mut counts) {
            Some(ok) => steps.push(((*name).into(), ok)),
            None => println!("\n==> {name}: not in the tree yet, skipped"),
        }
    }

    // The conformance runners ran inside the suites above; their matrix (a FAIL there has
    // already failed its suite).
    crate::conformance::print_matrix();

    println!("\n==> summary ({:.0} s)", started.elapsed().as_secs_f64());
    for (name, ok) in &steps {
        println!("  {} {name}", if *ok { "ok  " } else { "FAIL" });
    }
    let all_ok = steps.iter().all(|(_, ok)| *ok);
    if counts.failed == 0 && !all_ok {
        // A step failed without a failing test (lint, build): count it so the line is honest.
        counts.failed = steps.iter().filter(|(_, ok)| !ok).count() as u64;
    }
    println!(
        "{} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    all_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_past_its_deadline_is_killed_with_its_children() {
        // A shell whose own child would keep the step's output open forever.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 600 & wait"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let watchdog = Watchdog::with_limit("sleeper", &child, Duration::from_millis(200));
        let mut rest = String::new();
        // Reaching the end of the output means every holder of the pipe, grandchild included,
        // is gone.
        std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut rest)
            .expect("read");
        assert!(!child.wait().expect("wait").success());
        assert!(!watchdog.finish(), "the step is reported as timed out");
    }

    #[test]
    fn a_step_within_its_deadline_is_left_alone() {
        let mut child = Command::new("true").spawn().expect("true");
        let watchdog = Watchdog::with_limit("quick", &child, Duration::from_secs(600));
        assert!(child.wait().expect("wait").success());
        assert!(watchdog.finish());
    }
}
