//! The Node.js binding (`bindings/node`, npm package `tether-session`): builds the test
//! servers, runs `npm install` (which builds the addon from source with cargo, debug profile,
//! into the shared target/), then `node --test` over `bindings/node/test/*.test.js` (through
//! the fault proxy, the type check, the example and an `npm install <path>` from another
//! project included). `cargo xtask soak` runs `test/exit.test.js` alone with
//! `TETHER_EXIT_RUNS` set.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::test::{Counts, root, run_parsed, run_step};

/// `node --test`'s TAP summary: `# pass N`, `# fail N`, `# cancelled N`, `# skipped N`,
/// `# todo N` (printed once, at the end).
pub(super) fn node_test_line(line: &str, counts: &mut Counts) {
    let Some(rest) = line.strip_prefix("# ") else {
        return;
    };
    let mut words = rest.split_whitespace();
    let (Some(kind), Some(n), None) = (words.next(), words.next(), words.next()) else {
        return;
    };
    let Ok(n) = n.parse::<u64>() else {
        return;
    };
    match kind {
        "pass" => counts.passed += n,
        "fail" | "cancelled" => counts.failed += n,
        "skipped" | "todo" => counts.ignored += n,
        _ => {}
    }
}

/// The test files, in a stable order (`node --test <dir>` would also run the fixtures).
fn test_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| name.ends_with(".test.js"))
                .map(|name| format!("test/{name}"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The binding built and installed, ready to run its tests.
enum Setup {
    /// The binding is not in the tree.
    Absent,
    /// A step failed (it said why).
    Failed,
    /// `bindings/node`, with the test servers built and the addon installed.
    Ready(PathBuf),
}

/// Builds the test servers and runs `npm install` (which builds the addon with cargo).
fn setup() -> Setup {
    let dir = root().join("bindings").join("node");
    if !dir.join("package.json").is_file() {
        return Setup::Absent;
    }
    if !super::build_test_servers("Node.js") {
        return Setup::Failed;
    }
    let mut install = Command::new("npm");
    install
        .current_dir(&dir)
        .args(["install", "--no-audit", "--no-fund", "--foreground-scripts"])
        .env("TETHER_NODE_PROFILE", "debug");
    if !run_step(
        "npm install in bindings/node (builds the addon with cargo)",
        install,
    ) {
        return Setup::Failed;
    }
    Setup::Ready(dir)
}

/// Runs `node --test` over `files` in `dir`; passes when it passed and ran something.
fn node_test(
    name: &str,
    dir: &Path,
    files: &[String],
    runs: Option<u32>,
    counts: &mut Counts,
) -> bool {
    let mut node = Command::new("node");
    node.current_dir(dir)
        .args(["--test", "--test-reporter=tap"])
        .args(files)
        .env("TETHER_NODE_PROFILE", "debug");
    if let Some(runs) = runs {
        node.env("TETHER_EXIT_RUNS", runs.to_string());
    }
    let before = *counts;
    let ok = run_parsed(name, node, counts, node_test_line);
    let ran = counts.passed + counts.failed > before.passed + before.failed;
    if !ran {
        eprintln!("node --test ran no test");
    }
    ok && ran
}

pub(crate) fn test(counts: &mut Counts) -> Option<bool> {
    let dir = match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready(dir) => dir,
    };
    let files = test_files(&dir);
    if files.is_empty() {
        eprintln!("bindings/node/test has no *.test.js file");
        return Some(false);
    }
    Some(node_test(
        "node --test bindings/node/test/*.test.js",
        &dir,
        &files,
        None,
        counts,
    ))
}

/// The conformance scenarios alone (`test/conformance.test.js`).
pub(crate) fn conformance(counts: &mut Counts) -> Option<bool> {
    let dir = match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready(dir) => dir,
    };
    Some(node_test(
        "node --test test/conformance.test.js",
        &dir,
        &["test/conformance.test.js".to_owned()],
        None,
        counts,
    ))
}

/// The exit scenarios (`test/exit.test.js`: processes that end with work in flight, each run
/// in a child process), each `runs` times (`cargo xtask soak`).
pub(crate) fn exit_soak(runs: u32) -> Option<bool> {
    let dir = match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready(dir) => dir,
    };
    let mut counts = Counts::default();
    let ok = node_test(
        &format!("node --test test/exit.test.js (TETHER_EXIT_RUNS={runs})"),
        &dir,
        &[EXIT_TESTS.to_owned()],
        Some(runs),
        &mut counts,
    );
    println!(
        "Node.js exit scenarios: {} passed, {} failed ({runs} runs each)",
        counts.passed, counts.failed
    );
    Some(ok)
}

/// The file of the exit scenarios.
const EXIT_TESTS: &str = "test/exit.test.js";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tap_summary() {
        let mut counts = Counts::default();
        for line in [
            "# Subtest: pass 3 things",
            "ok 1 - pass 3 things",
            "# tests 9",
            "# suites 0",
            "# pass 6",
            "# fail 1",
            "# cancelled 1",
            "# skipped 2",
            "# todo 1",
            "# duration_ms 1234.5",
            "#pass 100",
            "# pass",
        ] {
            node_test_line(line, &mut counts);
        }
        assert_eq!((counts.passed, counts.failed, counts.ignored), (6, 2, 3));
    }
}
