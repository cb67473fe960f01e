//! The test suites of the language bindings, run by `cargo xtask test` after the Rust tests.
//! Each installs what it needs (npm packages, a Python venv, Maven artifacts) by itself.

use crate::test::{Counts, cargo, run_step};

mod browser;
mod c;
mod dotnet;
mod jvm;
mod node;
mod python;

/// A suite: `None` when the binding is not in the tree, else whether it passed.
pub(crate) type Suite = fn(&mut Counts) -> Option<bool>;

/// Every binding suite, in the order they run.
pub(crate) const SUITES: &[(&str, Suite)] = &[
    ("C (tether-ffi)", c::test),
    ("Node.js", node::test),
    ("Python", python::test),
    ("Kotlin/Java + Swift (uniffi)", jvm::test),
    ("C# (.NET over the C ABI)", dotnet::test),
    (
        "Browser (WebAssembly + TypeScript, headless Chromium)",
        browser::test,
    ),
    (
        "Installable packages (cargo xtask dist --debug, installed without Rust)",
        crate::dist::suite,
    ),
];

/// A language's conformance runner (its suite's setup, then only the runner of
/// `conformance/scenarios.txt`); `None` when the binding is not in the tree.
pub(crate) type Conformance = fn(&mut Counts) -> Option<bool>;

/// Every language's conformance runner but Rust's (`cargo xtask conformance` runs that one
/// first), in the matrix's order.
pub(crate) const CONFORMANCE: &[(&str, Conformance)] = &[
    ("C", c::conformance),
    ("Node.js", node::conformance),
    ("Python", python::conformance),
    ("Kotlin/Java", jvm::conformance),
    ("C#", dotnet::conformance),
];

/// A language's exit soak: its exit scenarios, each repeated `runs` times (through
/// `TETHER_EXIT_RUNS`); `None` when the language has none yet.
pub(crate) type Soak = fn(u32) -> Option<bool>;

/// Every language's exit soak, run by `cargo xtask soak`.
pub(crate) const SOAKS: &[(&str, Soak)] = &[
    ("C", c::exit_soak),
    ("Node.js", node::exit_soak),
    ("Python", python::exit_soak),
    ("Java/Kotlin", jvm::exit_soak),
    ("C#", dotnet::exit_soak),
];

/// `cargo xtask test --only NAME`: the suites whose name contains `name` (case-insensitive),
/// with a summary line.
pub(crate) fn run_only(name: &str) -> bool {
    let name = name.to_lowercase();
    let mut counts = Counts::default();
    let mut ran = 0;
    let mut ok = true;
    for (suite_name, suite) in SUITES {
        if !suite_name.to_lowercase().contains(&name) {
            continue;
        }
        ran += 1;
        match suite(&mut counts) {
            Some(passed) => ok &= passed,
            None => println!("\n==> {suite_name}: not in the tree yet, skipped"),
        }
    }
    if ran == 0 {
        eprintln!("no suite's name contains {name:?}");
        return false;
    }
    println!(
        "{} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    ok
}

/// Builds what a binding's tests run against: the server, the fault proxy and the conformance
/// fixture (`for_whom` names the suite in the step's title).
pub(crate) fn build_test_servers(for_whom: &str) -> bool {
    let mut servers = cargo();
    servers.args([
        "build",
        "-p",
        "tether-server",
        "-p",
        "tether-testkit",
        "-p",
        "tether-conformance",
    ]);
    run_step(
        &format!(
            "cargo build -p tether-server -p tether-testkit -p tether-conformance (for the {for_whom} tests)"
        ),
        servers,
    )
}
