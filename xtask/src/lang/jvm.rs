//! The uniffi bindings' suites: Kotlin/Java through Maven and JUnit 5 (end to end through the
//! fault proxy to the real server), and a check that the committed Swift sources are complete
//! and current (there is no Swift toolchain to compile them).
//!
//! Maven fetches what it needs from Maven Central into `~/.m2` on the first run (the Kotlin
//! compiler among it), and works offline after that. `cargo xtask soak` runs `ExitTest` alone
//! with `TETHER_EXIT_RUNS` set.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::test::{Counts, cargo, root, run_parsed, run_step};

/// The generated Swift files and where the SwiftPM layout keeps them.
const SWIFT_FILES: [(&str, &str); 3] = [
    ("Tether.swift", "Sources/Tether/Tether.swift"),
    ("TetherFFI.h", "Sources/TetherFFI/TetherFFI.h"),
    ("TetherFFI.modulemap", "Sources/TetherFFI/module.modulemap"),
];

/// The bindings built, ready to run their tests.
enum Setup {
    /// The bindings are not in the tree.
    Absent,
    /// A build failed (it said why).
    Failed,
    /// `bindings/uniffi`, with the native library, the generator and the test servers built.
    Ready(PathBuf),
}

/// Builds the native library, the generator and the test servers.
fn setup() -> Setup {
    let dir = root().join("bindings/uniffi");
    if !dir.join("kotlin/pom.xml").exists() {
        return Setup::Absent;
    }
    // The library and the generator in one invocation, as the Maven build does, so that both
    // see the same uniffi features and nothing is rebuilt between the two.
    let mut build = cargo();
    build.args([
        "build",
        "-p",
        "tether-uniffi",
        "-p",
        "tether-uniffi-bindgen",
    ]);
    if !run_step(
        "cargo build -p tether-uniffi -p tether-uniffi-bindgen",
        build,
    ) || !super::build_test_servers("Kotlin/Java")
    {
        return Setup::Failed;
    }
    Setup::Ready(dir)
}

/// `mvn -B -ntp test` in the Maven project with `args`, counting Surefire's summary; passes
/// when it passed and ran something.
fn maven_test(
    name: &str,
    dir: &Path,
    args: &[&str],
    runs: Option<u32>,
    counts: &mut Counts,
) -> bool {
    // Not `-q`: Surefire's summary ("Tests run: N, Failures: F, ...") is printed at INFO level.
    let mut mvn = Command::new("mvn");
    mvn.current_dir(dir.join("kotlin"))
        .args(["-B", "-ntp", "test", "-Dtether.skipCargo=true"])
        .args(args);
    if let Some(runs) = runs {
        mvn.env("TETHER_EXIT_RUNS", runs.to_string());
    }
    let before = *counts;
    let ok = run_parsed(name, mvn, counts, surefire_line);
    let ran = counts.passed + counts.failed > before.passed + before.failed;
    if !ran {
        eprintln!("Maven ran no test");
    }
    ok && ran
}

pub(crate) fn test(counts: &mut Counts) -> Option<bool> {
    let dir = match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready(dir) => dir,
    };
    let swift_ok = swift_sources(&dir.join("swift"), counts);
    let maven_ok = maven_test(
        "mvn -B -ntp test (bindings/uniffi/kotlin)",
        &dir,
        &[],
        None,
        counts,
    );
    Some(swift_ok && maven_ok)
}

/// The conformance scenarios alone (`ConformanceTest`).
pub(crate) fn conformance(counts: &mut Counts) -> Option<bool> {
    let dir = match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready(dir) => dir,
    };
    Some(maven_test(
        "mvn -B -ntp test -Dtest=ConformanceTest",
        &dir,
        &["-Dtest=ConformanceTest"],
        None,
        counts,
    ))
}

/// The exit scenarios (`ExitTest`: JVMs that end with publishes in flight, each in a child
/// JVM), each `runs` times (`cargo xtask soak`).
pub(crate) fn exit_soak(runs: u32) -> Option<bool> {
    let dir = match setup() {
        Setup::Absent => return None,
        Setup::Failed => return Some(false),
        Setup::Ready(dir) => dir,
    };
    let mut counts = Counts::default();
    let ok = maven_test(
        &format!("mvn -B -ntp test -Dtest=ExitTest (TETHER_EXIT_RUNS={runs})"),
        &dir,
        &["-Dtest=ExitTest"],
        Some(runs),
        &mut counts,
    );
    println!(
        "Java/Kotlin exit scenarios: {} passed, {} failed ({runs} runs each)",
        counts.passed, counts.failed
    );
    Some(ok)
}

/// Surefire's final summary, `Tests run: 16, Failures: 0, Errors: 0, Skipped: 0`. The
/// per-class lines carry `Time elapsed` and are left out, so each test is counted once.
fn surefire_line(line: &str, counts: &mut Counts) {
    let Some(at) = line.find("Tests run:") else {
        return;
    };
    if line.contains("Time elapsed") {
        return;
    }
    let rest = &line[at..];
    let field = |key: &str| -> u64 {
        rest.find(key)
            .map(|i| &rest[i + key.len()..])
            .and_then(|s| {
                let digits: String = s
                    .trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
            .unwrap_or(0)
    };
    let (run, failures, errors, skipped) = (
        field("Tests run:"),
        field("Failures:"),
        field("Errors:"),
        field("Skipped:"),
    );
    counts.failed += failures + errors;
    counts.ignored += skipped;
    counts.passed += run.saturating_sub(failures + errors + skipped);
}

/// Regenerates the Swift sources into `target/` and compares them with the committed ones:
/// every generated file must be committed unchanged, and every FFI function the Swift code
/// calls must be declared in the committed header. Each check counts as one test.
fn swift_sources(swift: &Path, counts: &mut Counts) -> bool {
    let root = root();
    let out = root.join("target/uniffi-swift-check");
    let _ = fs::remove_dir_all(&out);
    let mut generate = Command::new(root.join("target/debug/uniffi-bindgen"));
    generate.current_dir(&root).args([
        "generate",
        "--library",
        "target/debug/libtether_uniffi.so",
        "--language",
        "swift",
        "--no-format",
        "--out-dir",
    ]);
    generate.arg(&out);
    if !run_step(
        "uniffi-bindgen generate --language swift (into target/)",
        generate,
    ) {
        counts.failed += 1;
        return false;
    }

    println!("\n==> Swift sources (bindings/uniffi/swift) complete and current");
    let mut results: Vec<(String, Result<(), String>)> = Vec::new();

    let generated: BTreeSet<String> = fs::read_dir(&out)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let expected: BTreeSet<String> = SWIFT_FILES.iter().map(|(g, _)| (*g).to_owned()).collect();
    results.push((
        "the generator's files are exactly the package's".into(),
        if generated == expected {
            Ok(())
        } else {
            Err(format!("generated {generated:?}, expected {expected:?}"))
        },
    ));

    for (name, committed) in SWIFT_FILES {
        let fresh = fs::read(out.join(name));
        let kept = fs::read(swift.join(committed));
        let result = match (fresh, kept) {
            (Ok(a), Ok(b)) if a == b && !a.is_empty() => Ok(()),
            (Ok(_), Ok(_)) => Err("stale: differs from a fresh generation".to_owned()),
            (Err(e), _) => Err(format!("not generated: {e}")),
            (_, Err(e)) => Err(format!("missing: {e}")),
        };
        results.push((committed.to_owned(), result));
    }

    let swift_src = fs::read_to_string(swift.join(SWIFT_FILES[0].1)).unwrap_or_default();
    let header = fs::read_to_string(swift.join(SWIFT_FILES[1].1)).unwrap_or_default();
    let used = ffi_symbols(&swift_src);
    let missing: Vec<&String> = used
        .iter()
        .filter(|s| !header.contains(&format!("{s}(")))
        .collect();
    results.push((
        "every FFI function the Swift code calls is declared in the header".into(),
        if used.is_empty() {
            Err("the Swift source calls no FFI function".into())
        } else if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("undeclared: {missing:?}"))
        },
    ));

    let mut ok = true;
    for (name, result) in &results {
        match result {
            Ok(()) => {
                println!("  ok   {name}");
                counts.passed += 1;
            }
            Err(why) => {
                println!("  FAIL {name}: {why}");
                counts.failed += 1;
                ok = false;
            }
        }
    }
    if !ok {
        println!("  regenerate with bindings/uniffi/swift/generate.sh and commit the result");
    }
    ok
}

/// The `uniffi_*` / `ffi_*` C functions a generated Swift file calls.
fn ffi_symbols(swift: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for prefix in ["uniffi_tether_uniffi_", "ffi_tether_uniffi_"] {
        let mut rest = swift;
        while let Some(i) = rest.find(prefix) {
            let word: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let boundary = rest[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let called = rest[i + word.len()..].starts_with('(');
            if boundary && called {
                found.insert(word.clone());
            }
            rest = &rest[i + word.len()..];
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_surefire_summary_only() {
        let mut c = Counts::default();
        for line in [
            "[INFO] Tests run: 6, Failures: 0, Errors: 0, Skipped: 0, Time elapsed: 1.6 s -- in io.tether.X",
            "[ERROR] Tests run: 4, Failures: 1, Errors: 1, Skipped: 1, Time elapsed: 2 s <<< FAILURE! -- in io.tether.Y",
            "[INFO] Results:",
            "[ERROR] Tests run: 10, Failures: 1, Errors: 1, Skipped: 1",
        ] {
            surefire_line(line, &mut c);
        }
        assert_eq!((c.passed, c.failed, c.ignored), (7, 2, 1));
    }

    #[test]
    fn finds_called_ffi_functions() {
        let src = "x(uniffi_tether_uniffi_fn_func_shutdown(a), ffi_tether_uniffi_rustbuffer_free(b))\n\
                   // uniffi_tether_uniffi_checksum_func_shutdown() == 1\n\
                   let s = \"ffi_tether_uniffi_name_without_call\"";
        let found = ffi_symbols(src);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [
                "ffi_tether_uniffi_rustbuffer_free",
                "uniffi_tether_uniffi_checksum_func_shutdown",
                "uniffi_tether_uniffi_fn_func_shutdown",
            ]
        );
    }
}
