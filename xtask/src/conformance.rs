//! `cargo xtask conformance`: every language's runner of the conformance scenarios
//! (`conformance/scenarios.txt`), then the matrix: scenario × language, each `pass`, `FAIL` or
//! `n/s` (not supported yet, with the reason listed below the table). `cargo xtask test` runs
//! the same runners inside each language's suite and prints the same matrix at its end.
//!
//! Each runner writes `target/conformance/<language>.txt`, one line per scenario:
//! `name<TAB>pass|FAIL|unsupported<TAB>detail`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::test::{Counts, cargo, root, run_counting_pub};

/// The languages, in the matrix's column order: (file stem, column title).
pub(crate) const LANGUAGES: [(&str, &str); 6] = [
    ("rust", "Rust"),
    ("c", "C"),
    ("node", "Node.js"),
    ("python", "Python"),
    ("kotlin", "Kotlin/Java"),
    ("csharp", "C#"),
];

fn results_dir() -> PathBuf {
    match std::env::var_os("TETHER_CONFORMANCE_OUT") {
        Some(dir) => dir.into(),
        None => root().join("target").join("conformance"),
    }
}

/// Removes the results of an earlier run, so that the matrix shows this run only.
pub(crate) fn clear_results() {
    for (stem, _) in LANGUAGES {
        let _ = std::fs::remove_file(results_dir().join(format!("{stem}.txt")));
    }
}

/// The scenario names, in the file's order.
fn scenario_names() -> Vec<String> {
    std::fs::read_to_string(root().join("conformance").join("scenarios.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("scenario "))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// One language's results: scenario → (word, detail); `None` when it did not run.
fn read_results(stem: &str) -> Option<BTreeMap<String, (String, String)>> {
    let text = std::fs::read_to_string(results_dir().join(format!("{stem}.txt"))).ok()?;
    Some(
        text.lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, '\t');
                let name = parts.next()?.to_owned();
                let word = parts.next()?.to_owned();
                let detail = parts.next().unwrap_or("").to_owned();
                Some((name, (word, detail)))
            })
            .collect(),
    )
}

/// The matrix as text, and whether it has no FAIL (languages that did not run are shown as
/// such and do not count as failures here: their suite's own step failed, or was skipped).
pub(crate) fn matrix() -> (String, bool) {
    let names = scenario_names();
    let results: Vec<_> = LANGUAGES
        .iter()
        .map(|(stem, title)| (*title, read_results(stem)))
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(8).max(8);
    let mut out = String::new();
    out.push_str(&format!("{:width$}", "scenario"));
    for (title, _) in &results {
        out.push_str(&format!("  {title:11}"));
    }
    out.push('\n');
    let mut notes = Vec::new();
    let mut clean = true;
    let mut totals = vec![(0u32, 0u32, 0u32); results.len()];
    for name in &names {
        out.push_str(&format!("{name:width$}"));
        for (i, (title, r)) in results.iter().enumerate() {
            let cell = match r {
                None => "not run".to_owned(),
                Some(r) => match r.get(name) {
                    Some((w, _)) if w == "pass" => {
                        totals[i].0 += 1;
                        "pass".to_owned()
                    }
                    Some((w, d)) if w == "FAIL" => {
                        clean = false;
                        totals[i].1 += 1;
                        notes.push(format!("  {name} × {title}: FAIL: {d}"));
                        "FAIL".to_owned()
                    }
                    Some((_, d)) => {
                        totals[i].2 += 1;
                        notes.push(format!("  {name} × {title}: not supported: {d}"));
                        "n/s".to_owned()
                    }
                    None => {
                        clean = false;
                        notes.push(format!("  {name} × {title}: no result"));
                        "missing".to_owned()
                    }
                },
            };
            out.push_str(&format!("  {cell:11}"));
        }
        out.push('\n');
    }
    out.push_str(&format!("{:width$}", "pass/FAIL/n-s"));
    for (i, (_, r)) in results.iter().enumerate() {
        let cell = match r {
            Some(_) => format!("{}/{}/{}", totals[i].0, totals[i].1, totals[i].2),
            None => "-".to_owned(),
        };
        out.push_str(&format!("  {cell:11}"));
    }
    out.push('\n');
    if !notes.is_empty() {
        out.push_str("\nnot pass:\n");
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    (out, clean)
}

/// Prints the matrix; whether it has no FAIL.
pub(crate) fn print_matrix() -> bool {
    let (text, clean) = matrix();
    println!("\n==> conformance matrix (conformance/scenarios.txt; n/s = not supported yet)\n");
    print!("{text}");
    clean
}

/// `cargo xtask conformance`: runs every runner, prints the matrix.
pub(crate) fn command() -> bool {
    clear_results();
    let mut counts = Counts::default();
    let mut steps: Vec<(&str, bool)> = Vec::new();
    let mut rust = cargo();
    rust.args(["test", "-p", "tether-conformance", "--test", "conformance"]);
    steps.push((
        "Rust",
        run_counting_pub(
            "cargo test -p tether-conformance --test conformance (Rust)",
            rust,
            &mut counts,
        ),
    ));
    for (name, runner) in crate::lang::CONFORMANCE {
        match runner(&mut counts) {
            Some(ok) => steps.push((name, ok)),
            None => println!("\n==> {name}: not in the tree, skipped"),
        }
    }
    let clean = print_matrix();
    println!("\n==> runners");
    for (name, ok) in &steps {
        println!("  {} {name}", if *ok { "ok  " } else { "FAIL" });
    }
    println!(
        "{} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    clean && steps.iter().all(|(_, ok)| *ok)
}
