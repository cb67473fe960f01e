//! `cargo xtask <job>`: the project's jobs, each runnable on a fresh machine.
//!
//! - `demo`: an embedded server, the fault proxy and a session that survives cuts, printed as
//!   it happens.
//! - `test`: format check, clippy with `-D warnings`, and every test in every language.

mod demo;
mod lang;
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
    },
    /// Run the format check, clippy and every test suite.
    Test {
        /// Skip the format check and clippy.
        #[arg(long)]
        no_lint: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match cli.job {
        Job::Demo { seconds } => demo::run(seconds),
        Job::Test { no_lint } => test::run(!no_lint),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
