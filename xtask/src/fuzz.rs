//! `cargo xtask fuzz --seconds N`: every fuzz target on mutated inputs for N seconds in all,
//! on stable Rust. A crashing input is saved under `target/fuzz-crashes/` and fails the run.
//! (The same targets run under libFuzzer with `cargo fuzz run <target>` from `fuzz/`, where a
//! nightly toolchain is available.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use tether_protocol::fuzz::{Rng, TARGETS, mutate, seeds};

type Target = (&'static str, fn(&[u8]), Vec<Vec<u8>>);

fn targets() -> Vec<Target> {
    let mut all: Vec<Target> = TARGETS
        .iter()
        .map(|(name, f)| (*name, *f, seeds(name)))
        .collect();
    all.push((
        "upgrade_head",
        tether_server::fuzzing::upgrade_head,
        tether_server::fuzzing::upgrade_head_seeds(),
    ));
    all
}

pub(crate) fn command(seconds: u64) -> bool {
    // Panics are expected to be caught here; keep their noise to one line each.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let targets = targets();
    let share = Duration::from_secs(seconds.max(1)) / targets.len() as u32;
    let mut total = 0u64;
    let mut crashes = 0u64;
    let crash_dir = crate::test::root().join("target").join("fuzz-crashes");
    for (name, f, seeds) in &targets {
        let until = Instant::now() + share;
        let mut rng = Rng::new(
            Instant::now().elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15 ^ name.len() as u64,
        );
        let mut runs = 0u64;
        let mut found = 0u64;
        while Instant::now() < until {
            for _ in 0..256 {
                let pick = rng.below(seeds.len());
                let input = mutate(&mut rng, &seeds[pick]);
                runs += 1;
                if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
                    found += 1;
                    let _ = std::fs::create_dir_all(&crash_dir);
                    let path = crash_dir.join(format!("{name}-{runs}.bin"));
                    let _ = std::fs::write(&path, &input);
                    eprintln!("crash in {name}: input saved to {}", path.display());
                }
            }
        }
        println!("{name:>14}: {runs:>10} inputs, {found} crashes");
        total += runs;
        crashes += found;
    }
    println!("fuzz: {total} inputs in {seconds} s, {crashes} crashes");
    crashes == 0
}
