//! `cargo xtask test`: every check, in order, with one summary at the end.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

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
    println!("\n==> {name}");
    cmd.stdout(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot run {name}: {e}");
            return false;
        }
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            parse(&line, counts);
        }
    }
    child.wait().map(|s| s.success()).unwrap_or(false)
}

pub(crate) fn run_step(name: &str, mut cmd: Command) -> bool {
    println!("\n==> {name}");
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

pub(crate) fn run(lint: bool) -> bool {
    let started = Instant::now();
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
