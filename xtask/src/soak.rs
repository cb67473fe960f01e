//! `cargo xtask soak`: the exit scenarios of every language, repeated (50 times each by
//! default): programs that end with work in flight, close with requests queued, exit from a
//! callback. Each language runs its own exit tests with `TETHER_EXIT_RUNS` set; the default
//! suite runs the same tests a few times only.

use crate::lang::SOAKS;

/// Runs every language's exit soak (or only `only`), `runs` times per scenario.
pub(crate) fn command(runs: u32, only: Option<&str>) -> bool {
    let mut results = Vec::new();
    // `--only c` means C, not every name with a c in it: an exact name wins over a part.
    let exact = only.is_some_and(|o| SOAKS.iter().any(|(n, _)| n.eq_ignore_ascii_case(o)));
    for (name, soak) in SOAKS {
        let chosen = match only {
            None => true,
            Some(o) if exact => name.eq_ignore_ascii_case(o),
            Some(o) => name.to_lowercase().contains(&o.to_lowercase()),
        };
        if !chosen {
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
