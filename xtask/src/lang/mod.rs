//! The test suites of the language bindings, run by `cargo xtask test` after the Rust tests.
//! Each installs what it needs (npm packages, a Python venv, Maven artifacts) by itself.

use crate::test::Counts;

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
        "Installable packages (cargo xtask dist --debug, installed without Rust)",
        crate::dist::suite,
    ),
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
