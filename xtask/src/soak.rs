//! `cargo xtask soak`: the exit scenarios of every language, repeated (50 times each by
//! default): programs that end with work in flight, close with requests queued, exit from a
//! callback. Each language runs its own exit tests with `TETHER_EXIT_RUNS` set; the default
//! suite runs the same tests a few times only.

use crate::lang::SOAKS;

/// Runs every language's exit soak (or only `only`), `runs` times per scenario.
pub(crate) fn command(runs: u32, only: Option<&str>) -> bool {
    let mut results = Vec::new();
    for (name, soak) in SOAKS {
        if only.is_some_and(|o| !name.to_lowercase().contains(&o.to_lowercase())) {
            continue;
        }
        println!("\n==> exit soak: {name}, {runs} runs per scenario");
        match soak(runs) {
            Some(ok) => results.push((*name, ok)),
            None => println!("{name}: no exit scenarios yet, skipped"),
        }
    }
    println!("\n==> exit soak summary");
    for (name, ok) in &results {
        println!("  {} {name}", if *ok { "ok  " } else { "FAIL" });
    }
    !results.is_empty() && results.iter().all(|(_, ok)| *ok)
}
