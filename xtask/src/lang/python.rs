//! The Python binding (`bindings/python`, distribution `tether-session`, import `tether`):
//! builds the test servers, creates a fresh venv in `target/python-venv`, runs
//! `pip install ./bindings/python` into it (maturin from PyPI builds the native module from
//! source, debug profile, into the shared target/) with pytest, pytest-asyncio and mypy, checks
//! the types (mypy `--strict` over the package and the example, stubtest of the native
//! module's `.pyi`), then runs pytest over `bindings/python/tests` (through the fault proxy,
//! the example included). `cargo xtask soak` makes the same venv, then runs only
//! `tests/test_exit.py` with `TETHER_EXIT_RUNS` set.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::test::{Counts, root, run_parsed, run_step};

/// Test dependencies, installed next to the package.
const TEST_REQUIREMENTS: &[&str] = &["pytest>=8,<10", "pytest-asyncio>=1.0,<2", "mypy>=1.10"];

/// pytest's closing line: `===== 40 passed, 2 failed, 1 skipped, 1 error in 9.12s =====`
/// (or without the `=` in quiet mode). Every part must be `N word`, so test output that
/// merely mentions "passed" is not counted.
fn pytest_line(line: &str, counts: &mut Counts) {
    let line = line.trim().trim_matches('=').trim();
    let Some((summary, duration)) = line.rsplit_once(" in ") else {
        return;
    };
    if !duration
        .split_whitespace()
        .next()
        .is_some_and(|d| d.ends_with('s'))
    {
        return;
    }
    let mut found = Counts::default();
    for part in summary.split(", ") {
        let mut words = part.split_whitespace();
        let (Some(n), Some(kind), None) = (words.next(), words.next(), words.next()) else {
            return;
        };
        let Ok(n) = n.parse::<u64>() else {
            return;
        };
        match kind {
            "passed" | "xfailed" => found.passed += n,
            "failed" | "error" | "errors" | "xpassed" => found.failed += n,
            "skipped" => found.ignored += n,
            "deselected" | "warning" | "warnings" | "rerun" => {}
            _ => return,
        }
    }
    counts.passed += found.passed;
    counts.failed += found.failed;
    counts.ignored += found.ignored;
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn venv_bin(venv: &Path, name: &str) -> PathBuf {
    venv.join("bin").join(name)
}

/// A venv with the package and the test tools, ready to run the tests.
enum Setup {
    /// The binding is not in the tree.
    Absent,
    /// A step failed (it said why).
    Failed,
    Ready {
        /// `bindings/python`.
        dir: PathBuf,
        /// The venv's interpreter.
        py: PathBuf,
    },
}

/// Builds the test servers, creates a fresh venv and installs the package (built from
/// source) and the test tools into it.
fn setup() -> Setup {
    let root = root();
    let dir = root.join("bindings").join("python");
    if !dir.join("pyproject.toml").is_file() {
        return Setup::Absent;
    }
    if !super::build_test_servers("Python") {
        return Setup::Failed;
    }

    let venv = root.join("target").join("python-venv");
    let mut create = Command::new(python());
    create.arg("-m").arg("venv").arg("--clear").arg(&venv);
    if !run_step("python3 -m venv --clear target/python-venv", create) {
        return Setup::Failed;
    }
    let py = venv_bin(&venv, "python");
    let mut install = Command::new(&py);
    install
        .current_dir(&root)
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .arg("./bindings/python")
        .args(TEST_REQUIREMENTS)
        // maturin builds with the same debug profile as everything else, into target/.
        .env("MATURIN_PEP517_ARGS", "--profile dev");
    if !run_step(
        "pip install ./bindings/python (maturin builds the native module) + pytest, pytest-asyncio, mypy",
        install,
    ) {
        return Setup::Failed;
    }
    Setup::Ready { dir, py }
}

/// Runs `cmd` (a pytest command line); passes when pytest passed and ran some test.
fn pytest(name: &str, mut cmd: Command, counts: &mut Counts) -> bool {
    cmd.args(["-p", "no:cacheprovider"]);
    let before = *counts;
    let ok = run_parsed(name, cmd, counts, pytest_line);
    let ran = counts.passed + counts.failed > before.passed + before.failed;
    if !ran {
        eprintln!("pytest ran no test");
    }
    ok && ran
}

pub(crate) fn test(counts: &mut Counts) -> Option<bool> {
    let (dir, py) = match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready { dir, py } => (dir, py),
    };
    let root = root();
    let mut mypy = Command::new(&py);
    mypy.current_dir(&root).args([
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "bindings/python/python/tether",
        "examples/python/reconnect.py",
    ]);
    let typed = run_step("mypy --strict (the package and the example)", mypy);
    let mut stubtest = Command::new(&py);
    stubtest
        .current_dir(&root)
        .args(["-m", "mypy.stubtest", "tether._tether"]);
    let stubs = run_step(
        "stubtest tether._tether (the .pyi matches the native module)",
        stubtest,
    );

    let mut all = Command::new(&py);
    all.current_dir(&dir).args(["-m", "pytest", "tests"]);
    let ok = pytest("pytest bindings/python/tests", all, counts);
    Some(typed && stubs && ok)
}

/// The conformance scenarios alone (`tests/test_conformance.py`).
pub(crate) fn conformance(counts: &mut Counts) -> Option<bool> {
    let (dir, py) = match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready { dir, py } => (dir, py),
    };
    let mut run = Command::new(&py);
    run.current_dir(&dir)
        .args(["-m", "pytest", "-rs", "tests/test_conformance.py"]);
    Some(pytest("pytest tests/test_conformance.py", run, counts))
}

/// The exit scenarios (`tests/test_exit.py`: programs that end with work in flight, each run
/// in a child interpreter), each `runs` times (`cargo xtask soak`).
pub(crate) fn exit_soak(runs: u32) -> Option<bool> {
    let (dir, py) = match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready { dir, py } => (dir, py),
    };
    let mut soak = Command::new(&py);
    soak.current_dir(&dir)
        // -s: each scenario prints "N/N runs clean".
        .args(["-m", "pytest", "-s", "tests/test_exit.py"])
        .env("TETHER_EXIT_RUNS", runs.to_string());
    Some(pytest(
        &format!("pytest tests/test_exit.py, {runs} runs per scenario"),
        soak,
        &mut Counts::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (u64, u64, u64) {
        let mut c = Counts::default();
        pytest_line(line, &mut c);
        (c.passed, c.failed, c.ignored)
    }

    #[test]
    fn reads_pytest_closing_lines() {
        assert_eq!(
            parse(
                "============================== 43 passed in 8.83s =============================="
            ),
            (43, 0, 0)
        );
        assert_eq!(
            parse("==== 1 failed, 40 passed, 2 skipped, 1 error, 3 warnings in 12.01s ===="),
            (40, 2, 2)
        );
        assert_eq!(parse("3 passed, 1 deselected in 0.50s"), (3, 0, 0));
        assert_eq!(parse("2 failed, 1 passed in 61.20s (0:01:01)"), (1, 2, 0));
        assert_eq!(parse("no tests ran in 0.01s"), (0, 0, 0));
        assert_eq!(parse("update 5 passed in order"), (0, 0, 0));
        assert_eq!(
            parse("tests/test_session.py::test_x PASSED [ 2%]"),
            (0, 0, 0)
        );
    }
}
