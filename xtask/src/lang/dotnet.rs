//! The .NET binding (`bindings/dotnet`, C# over the C ABI of `crates/tether-ffi`): installs
//! Debian's mono when `mcs` or `mono` is missing, builds `libtether_ffi.so` and the test
//! servers, compiles the binding, its test program and the ported seed example
//! (`examples/dotnet/SessionReconnection.cs`) with `mcs` (`make -C bindings/dotnet`), then runs
//! the test program with mono: end-to-end through the fault proxy, the example and the
//! process-exit checks included. It prints `N passed, N failed` last. `cargo xtask soak` runs
//! the tests named `exit scenario: ...` alone with `TETHER_EXIT_RUNS` set.

use std::process::Command;

use crate::apt::have;
use crate::test::{Counts, cargo, root, run_parsed, run_step};

/// What Debian's mono needs here: the compiler (which pulls in mscorlib, System, System.Core,
/// System.Xml and Microsoft.CSharp) and the runtime.
const MONO_PACKAGES: &[&str] = &["mono-mcs", "mono-runtime"];

/// A guard against a hung test program (its own per-test guards are 90 s): seconds.
const RUN_GUARD_SECONDS: &str = "900";

/// Installs mono (and make, if missing) with apt-get when they are not there yet.
fn ensure_tools() -> bool {
    let mut packages: Vec<&str> = Vec::new();
    if !(have("mcs", "--version") && have("mono", "--version")) {
        packages.extend(MONO_PACKAGES);
    }
    if !have("make", "--version") {
        packages.push("make");
    }
    let present =
        || have("mcs", "--version") && have("mono", "--version") && have("make", "--version");
    if !crate::apt::ensure("mono", &packages, present) {
        return false;
    }
    let missing: Vec<_> = [
        ("mcs", "--version"),
        ("mono", "--version"),
        ("make", "--version"),
        ("timeout", "--version"),
    ]
    .into_iter()
    .filter(|(t, a)| !have(t, a))
    .map(|(t, _)| t)
    .collect();
    if !missing.is_empty() {
        eprintln!("the .NET suite needs {missing:?}");
        return false;
    }
    true
}

/// The binding and its test program built, the test servers too.
enum Setup {
    /// The binding is not in the tree.
    Absent,
    /// A step failed (it said why).
    Failed,
    Ready,
}

fn setup() -> Setup {
    let dir = root().join("bindings").join("dotnet");
    if !dir.join("Makefile").is_file() {
        return Setup::Absent;
    }
    if !ensure_tools() {
        return Setup::Failed;
    }
    let mut ffi = cargo();
    ffi.args(["build", "-p", "tether-ffi"]);
    if !run_step("cargo build -p tether-ffi (for the .NET binding)", ffi) {
        return Setup::Failed;
    }
    if !super::build_test_servers(".NET") {
        return Setup::Failed;
    }
    let mut build = Command::new("make");
    build.arg("-C").arg(&dir).arg("all");
    if !run_step(
        "make -C bindings/dotnet (mcs: Tether.dll, Tether.Tests.exe, SessionReconnection.exe)",
        build,
    ) {
        return Setup::Failed;
    }
    Setup::Ready
}

/// `mono target/dotnet/Tether.Tests.exe [filter]` under a guard, with the library on the
/// loader path.
fn test_program(filter: Option<&str>) -> Command {
    let root = root();
    let bin = root.join("target").join("debug");
    let library_path = match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", bin.display()),
        _ => bin.display().to_string(),
    };
    let mut tests = Command::new("timeout");
    tests
        .args(["-k", "10", RUN_GUARD_SECONDS, "mono", "--debug"])
        .arg(root.join("target").join("dotnet").join("Tether.Tests.exe"))
        .args(filter)
        .current_dir(&root)
        .env("LD_LIBRARY_PATH", library_path)
        .env("TETHER_BIN_DIR", &bin);
    tests
}

pub(crate) fn test(counts: &mut Counts) -> Option<bool> {
    match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready => {}
    }
    Some(run_parsed(
        "mono target/dotnet/Tether.Tests.exe (through the fault proxy, the example included)",
        test_program(None),
        counts,
        summary_line,
    ))
}

/// The conformance scenarios alone (the tests named `conformance: ...`).
pub(crate) fn conformance(counts: &mut Counts) -> Option<bool> {
    match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready => {}
    }
    Some(run_parsed(
        "mono target/dotnet/Tether.Tests.exe 'conformance: '",
        test_program(Some("conformance: ")),
        counts,
        summary_line,
    ))
}

/// The exit scenarios (the tests named `exit scenario: ...`: processes that end with work in
/// flight or exit from a handler, each run as a child mono process, and Close with publishes
/// in flight), each `runs` times (`cargo xtask soak`).
pub(crate) fn exit_soak(runs: u32) -> Option<bool> {
    match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready => {}
    }
    let mut tests = test_program(Some(EXIT_SCENARIOS));
    tests.env("TETHER_EXIT_RUNS", runs.to_string());
    let mut counts = Counts::default();
    let ok = run_parsed(
        &format!("TETHER_EXIT_RUNS={runs} mono target/dotnet/Tether.Tests.exe '{EXIT_SCENARIOS}'"),
        tests,
        &mut counts,
        summary_line,
    );
    if counts.passed == 0 {
        eprintln!("the .NET test program ran no exit scenario");
    }
    Some(ok && counts.passed > 0 && counts.failed == 0)
}

/// The name filter of the exit scenario tests.
const EXIT_SCENARIOS: &str = "exit scenario";

/// The test program's closing line, `N passed, N failed, N skipped` (the skipped part may be
/// absent).
fn summary_line(line: &str, counts: &mut Counts) {
    let parts: Vec<&str> = line.split(", ").collect();
    if !(2..=3).contains(&parts.len()) {
        return;
    }
    let number = |part: &str, word: &str| {
        part.strip_suffix(word)
            .and_then(|n| n.strip_suffix(' '))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let (Some(p), Some(f)) = (number(parts[0], "passed"), number(parts[1], "failed")) else {
        return;
    };
    let s = match parts.get(2) {
        Some(part) => match number(part, "skipped") {
            Some(s) => s,
            None => return,
        },
        None => 0,
    };
    counts.passed += p;
    counts.failed += f;
    counts.ignored += s;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_the_summary_line() {
        let mut c = Counts::default();
        for line in [
            "ok   open, id and close (0.94 s)",
            "     example: The session has connected. | 3 passed, 1 failed",
            "21 passed, 0 failed",
            "2 passed, 3 failed",
            "x passed, 1 failed",
            "1 passed, 1 failed, 1 skipped",
            "1 passed, 1 failed, 1 ignored",
        ] {
            summary_line(line, &mut c);
        }
        assert_eq!((c.passed, c.failed, c.ignored), (24, 4, 1));
    }
}
