//! The C ABI's suite (`crates/tether-ffi`).
//!
//! `cargo test --workspace` already checks the header (fresh against cbindgen, strict C99 and
//! C++ clean) and the crate's unit tests. This suite builds the cdylib and staticlib, then runs
//! the C end-to-end tests behind the `c-tests` feature: the C test program (against the real
//! server through the fault proxy), the same program under valgrind memcheck, the seed's C
//! example ported to `examples/c/` (built by its Makefile through pkg-config, surviving a proxy
//! cut), `make install` with its pkg-config file, and the exit scenarios (programs that end
//! with publishes in flight, each in a child process; `cargo xtask soak` repeats them).

use std::process::{Command, Stdio};

use crate::test::{Counts, cargo, root, run_parsed, run_step};

/// The library built and the tools there, ready to run the C suite.
enum Setup {
    /// The crate is not in the tree.
    Absent,
    /// A step failed (it said why).
    Failed,
    Ready,
}

fn setup() -> Setup {
    if !root().join("crates/tether-ffi").is_dir() {
        return Setup::Absent;
    }
    if !ensure_tools() {
        return Setup::Failed;
    }
    // Exactly the build the tests repeat (a no-op then): `cargo test` does not build the cdylib
    // and staticlib that C links against. The tests embed the server and the fault proxy as
    // libraries (dev-dependencies), so the `tether-server` / `tether-faultproxy` binaries are
    // not needed; building them with this command would also change feature unification and
    // make the tests' own `cargo build -p tether-ffi` recompile.
    let mut build = cargo();
    build.args(["build", "-p", "tether-ffi"]);
    if !run_step("cargo build -p tether-ffi", build) {
        return Setup::Failed;
    }
    Setup::Ready
}

/// `cargo test -p tether-ffi --features c-tests --test c_suite [filter] -- --nocapture`.
fn c_suite(filter: Option<&str>) -> Command {
    let mut tests = cargo();
    tests.args([
        "test",
        "-p",
        "tether-ffi",
        "--features",
        "c-tests",
        "--test",
        "c_suite",
    ]);
    tests.args(filter);
    tests.args(["--", "--nocapture"]);
    tests
}

pub(crate) fn test(counts: &mut Counts) -> Option<bool> {
    match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready => {}
    }
    Some(run_parsed(
        "cargo test -p tether-ffi --features c-tests --test c_suite (C tests, exit scenarios, valgrind, example, pkg-config)",
        c_suite(None),
        counts,
        parse,
    ))
}

/// The conformance scenarios through the C API (the `conformance_scenarios` test of the C
/// suite: `tests/c/conformance.c` against the fixture).
pub(crate) fn conformance(counts: &mut Counts) -> Option<bool> {
    match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready => {}
    }
    Some(run_parsed(
        "cargo test -p tether-ffi --features c-tests --test c_suite conformance_scenarios",
        c_suite(Some("conformance_scenarios")),
        counts,
        parse,
    ))
}

/// gcc, make, valgrind and coreutils come with the machine; pkg-config may not.
fn ensure_tools() -> bool {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("pkg-config") {
        let mut install = Command::new("apt-get");
        install.args(["install", "-y", "--no-install-recommends", "pkgconf"]);
        if !run_step("apt-get install -y pkgconf", install) {
            let mut update = Command::new("apt-get");
            update.arg("update");
            let mut again = Command::new("apt-get");
            again.args(["install", "-y", "--no-install-recommends", "pkgconf"]);
            if !(run_step("apt-get update", update)
                && run_step("apt-get install -y pkgconf", again))
            {
                return false;
            }
        }
    }
    let missing: Vec<_> = ["gcc", "g++", "make", "valgrind", "pkg-config", "stdbuf"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        eprintln!("the C suite needs {missing:?}");
        return false;
    }
    true
}

/// Counts cargo's `test result: ok. 4 passed; 0 failed; ...` lines and the C runner's own
/// closing `13 passed, 0 failed` lines.
fn parse(line: &str, counts: &mut Counts) {
    if let Some(rest) = line.strip_prefix("test result: ") {
        for part in rest.split([';', '.']) {
            add(part, counts);
        }
        return;
    }
    let parts: Vec<&str> = line.split(", ").collect();
    let is_summary = (2..=3).contains(&parts.len())
        && parts[0].ends_with(" passed")
        && parts[1].ends_with(" failed")
        && parts.iter().all(|p| {
            let mut words = p.split_whitespace();
            matches!(
                (
                    words.next().map(str::parse::<u64>),
                    words.next(),
                    words.next()
                ),
                (Some(Ok(_)), Some(_), None)
            )
        });
    if is_summary {
        for part in parts {
            add(part, counts);
        }
    }
}

fn add(part: &str, counts: &mut Counts) {
    let mut words = part.split_whitespace();
    if let (Some(n), Some(kind)) = (words.next(), words.next())
        && let Ok(n) = n.parse::<u64>()
    {
        match kind {
            "passed" => counts.passed += n,
            "failed" => counts.failed += n,
            "ignored" | "skipped" => counts.ignored += n,
            _ => {}
        }
    }
}

/// The exit scenarios (`tests/c/exit_scenarios.c`, each run in a child process, natively and
/// under valgrind: the `exit_scenario_*` tests of the C suite), each `runs` times
/// (`cargo xtask soak`).
pub(crate) fn exit_soak(runs: u32) -> Option<bool> {
    match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready => {}
    }
    let mut tests = c_suite(Some("exit_scenario"));
    tests.env("TETHER_EXIT_RUNS", runs.to_string());
    let mut counts = Counts::default();
    let ok = run_parsed(
        &format!(
            "TETHER_EXIT_RUNS={runs} cargo test -p tether-ffi --features c-tests --test c_suite exit_scenario"
        ),
        tests,
        &mut counts,
        parse,
    );
    if counts.passed == 0 {
        eprintln!("the C suite ran no exit scenario");
    }
    Some(ok && counts.passed > 0 && counts.failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cargo_and_c_runner_lines() {
        let mut c = Counts::default();
        parse(
            "test result: ok. 4 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.0s",
            &mut c,
        );
        parse("13 passed, 0 failed", &mut c);
        parse("7 passed, 2 failed, 1 skipped", &mut c);
        parse("test create_and_close ... ok", &mut c);
        parse("reconnect.c: 3 passed, the rest failed", &mut c);
        assert_eq!((c.passed, c.failed, c.ignored), (24, 3, 3));
    }
}
