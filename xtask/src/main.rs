//! `cargo xtask <job>`: the project's jobs, each runnable on a fresh machine.
//!
//! - `demo`: an embedded server, the fault proxy and a session that survives cuts, printed as
//!   it happens.
//! - `test`: format check, clippy with `-D warnings`, and every test in every language.
//! - `soak`: every language's exit scenarios, repeated.
//! - `conformance`: every language's runner of the shared scenarios, and the matrix.

mod apt;
mod bench;
mod browser;
mod chaos;
mod conformance;
mod demo;
mod dist;
mod fuzz;
mod lang;
mod soak;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tether's project jobs")]
struct Cli {
    #[command(subcommand)]
    job: Job,
}

#[derive(Subcommand)]
enum Job {
    /// Run the demo: a session that survives cuts, refusals and a stall, with a final tally.
    Demo {
        /// How long to stream, in seconds (the demo ends a few seconds later).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Serve the browser demo instead: a page whose session (Tether in WebAssembly) goes
        /// through the fault proxy, with buttons to cut, stall and refuse; until Ctrl-C.
        #[arg(long)]
        browser: bool,
        /// The browser demo's port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 8700)]
        port: u16,
    },
    /// Stream numbered messages both ways through random faults; fail on any loss.
    Chaos {
        /// Messages each way.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Faults to inject (RST, FIN, stall, refuse, at random).
        #[arg(long, default_value_t = 100)]
        cuts: u64,
        /// Rough length of the run, over which faults are spread.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// The server's ping period in ms (a stall is found within two).
        #[arg(long, default_value_t = 200)]
        ping_ms: u64,
        /// Server nodes (more than 1 needs `--store redis`): real `tether-server` processes
        /// sharing a Redis the run starts, killed and restarted among the faults.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// `memory` (one in-process server) or `redis` (a cluster; see `--nodes`).
        #[arg(long, default_value = "memory")]
        store: String,
    },
    /// Every language's conformance runner (conformance/scenarios.txt), then the matrix:
    /// scenario × language, pass / FAIL / not supported (with the reason).
    Conformance,
    /// Fuzz every decoder and parser with mutated inputs; fail on any crash.
    Fuzz {
        /// How long, in seconds, for all targets together.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Run the format check, clippy and every test suite.
    Test {
        /// Skip the format check and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only the binding suites whose name contains this (node, browser, c#, ...), without
        /// the lints and the Rust tests.
        #[arg(long)]
        only: Option<String>,
    },
    /// Benchmarks against raw tokio-tungstenite, measured in the same run (see BENCHMARKS.md).
    Bench(bench::Args),
    /// Build the installable packages of every language into dist/, then install each where
    /// there is no Rust and run it against the server through a cut (see xtask/src/dist.rs).
    Dist(dist::Args),
    /// Repeat every language's exit scenarios (work in flight at exit, close with queued
    /// requests, exit from a callback); fail on any crash, hang or wrong outcome.
    Soak {
        /// Runs per scenario.
        #[arg(long, default_value_t = 50)]
        runs: u32,
        /// Only the languages whose name contains this (c, node, python, java, c#).
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match cli.job {
        Job::Demo {
            browser: true,
            port,
            ..
        } => browser::demo(port),
        Job::Demo { seconds, .. } => demo::run(seconds),
        Job::Test {
            only: Some(only), ..
        } => lang::run_only(&only),
        Job::Test { no_lint, .. } => test::run(!no_lint),
        Job::Fuzz { seconds } => fuzz::command(seconds),
        Job::Conformance => conformance::command(),
        Job::Bench(args) => bench::command(args),
        Job::Soak { runs, only } => soak::command(runs, only.as_deref()),
        Job::Dist(args) => dist::command(args),
        Job::Chaos {
            messages,
            cuts,
            seconds,
            ping_ms,
            nodes,
            store,
        } => match (store.as_str(), nodes) {
            ("memory", 1) | ("redis", 2..) => chaos::command(chaos::ChaosConfig {
                messages,
                cuts,
                seconds,
                ping: std::time::Duration::from_millis(ping_ms.max(10)),
                verbose: true,
                nodes: if store == "redis" { nodes } else { 1 },
            }),
            ("memory", _) => {
                eprintln!("several nodes need a shared store: add --store redis");
                false
            }
            ("redis", _) => {
                eprintln!("--store redis runs a cluster: give --nodes 2 or more");
                false
            }
            (other, _) => {
                eprintln!("--store {other:?}: use memory or redis");
                false
            }
        },
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
