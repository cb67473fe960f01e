//! Tether's conformance suite: one list of behaviours (`scenarios.txt`) that the runner of
//! every language executes against the real server behind the fault proxy.
//!
//! - [`scenario`]: the file's format, its parser, and the result lines runners write.
//! - [`fixture`]: a scenario's environment (server, proxy, faults, another party's publishes,
//!   a drain), used in process by the Rust runner and over HTTP ([`http`], the
//!   `tether-conformance-fixture` binary) by the runners of the other languages.
#![warn(missing_docs)]

pub mod fixture;
pub mod http;
pub mod scenario;

/// Where runners write their results: `$TETHER_CONFORMANCE_OUT`, else `target/conformance`
/// of this workspace. Each language writes `<dir>/<language>.txt`.
pub fn results_dir() -> std::path::PathBuf {
    match std::env::var_os("TETHER_CONFORMANCE_OUT") {
        Some(dir) => dir.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("conformance"),
    }
}
