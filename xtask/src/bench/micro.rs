//! (f) Microbenchmarks of the sans-I/O core: the criterion benches in
//! `crates/tether-protocol/benches/protocol.rs`, run through cargo, or (in the test suite,
//! which cannot run cargo) the same operations timed in this process.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use tether_protocol::frame::{self, ClientFrame, ServerFrame};
use tether_protocol::reliable::RecoveryBuffer;
use tether_protocol::{BufferLimits, Position, Update};

use super::report::{Sample, Unit};

/// Frames per recovery-buffer batch (as in the criterion benches).
const BATCH: u64 = 1000;

/// (criterion name, label, per-frame divisor)
const BENCHES: &[(&str, &str, u64)] = &[
    (
        "codec/encode_update_100B",
        "codec: encode Update (100 B value)",
        1,
    ),
    (
        "codec/decode_update_100B",
        "codec: decode Update (100 B value)",
        1,
    ),
    (
        "codec/encode_publish_100B",
        "codec: encode Publish (100 B value)",
        1,
    ),
    (
        "codec/decode_publish_100B",
        "codec: decode Publish (100 B value)",
        1,
    ),
    ("codec/decode_ack", "codec: decode Ack", 1),
    (
        "recovery/push_1000",
        "recovery buffer: push + write, per frame",
        BATCH,
    ),
    (
        "recovery/ack_1000",
        "recovery buffer: ack (every 64), per frame",
        BATCH,
    ),
    (
        "recovery/replay_1000",
        "recovery buffer: rewind + replay, per frame",
        BATCH,
    ),
];

fn sample(name: &str, ns_per_iter: f64, spread: Option<f64>) -> Option<Sample> {
    let (_, label, divisor) = BENCHES.iter().find(|(n, _, _)| *n == name)?;
    let d = *divisor as f64;
    let s = Sample::new(&format!("f.{name}"), label, Unit::Ns, ns_per_iter / d);
    Some(match spread {
        Some(sp) => s.note(format!("criterion ± {:.1} ns", sp / d)),
        None => s,
    })
}

/// Parses criterion's `--output-format bencher` lines:
/// `test codec/decode_ack ... bench:          36 ns/iter (+/- 0)`.
fn parse_bencher(line: &str) -> Option<(String, f64, f64)> {
    let rest = line.strip_prefix("test ")?;
    let (name, rest) = rest.split_once(" ... bench:")?;
    let (value, rest) = rest.trim().split_once(" ns/iter")?;
    let value: f64 = value.replace(',', "").trim().parse().ok()?;
    let spread = rest
        .trim()
        .strip_prefix("(+/-")
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|s| s.replace(',', "").trim().parse().ok())
        .unwrap_or(0.0);
    Some((name.trim().to_owned(), value, spread))
}

/// Runs the criterion benches (`quick`: a fraction of a second each).
pub(crate) fn criterion(quick: bool) -> Result<Vec<Sample>, String> {
    let mut cmd = crate::test::cargo();
    cmd.args([
        "bench",
        "-p",
        "tether-protocol",
        "--bench",
        "protocol",
        "--",
        "--output-format",
        "bencher",
    ]);
    if quick {
        cmd.args([
            "--warm-up-time",
            "0.05",
            "--measurement-time",
            "0.1",
            "--sample-size",
            "10",
        ]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo bench: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo bench -p tether-protocol failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some((name, v, sp)) = parse_bencher(line) {
            println!("    {line}");
            samples.extend(sample(&name, v, Some(sp)));
        }
    }
    if samples.len() != BENCHES.len() {
        return Err(format!(
            "expected {} criterion results, got {}",
            BENCHES.len(),
            samples.len()
        ));
    }
    Ok(samples)
}

fn time_per_iter(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let t0 = Instant::now();
    for _ in 0..iterations {
        f();
    }
    t0.elapsed().as_nanos() as f64 / f64::from(iterations.max(1))
}

fn limits() -> BufferLimits {
    BufferLimits {
        max_frames: 1 << 20,
        max_bytes: 1 << 30,
    }
}

/// The same operations as the criterion benches, timed with a plain loop.
pub(crate) fn in_process(iterations: u32) -> Vec<Sample> {
    let update = ServerFrame::Update(Update {
        topic: "bench/topic".into(),
        value: Bytes::from(vec![0x5a; 100]),
        position: Position {
            partition: 0,
            offset: 1_234_567,
        },
        snapshot: false,
    });
    let publish = ClientFrame::Publish {
        topic: "bench/topic".into(),
        value: Bytes::from(vec![0x5a; 100]),
    };
    let update_bytes = frame::encode_to_vec(&update);
    let publish_bytes = frame::encode_to_vec(&publish);
    let ack_bytes = frame::encode_to_vec(&ClientFrame::Ack { received: 1 << 40 });
    let mut out = Vec::with_capacity(256);
    let mut results = vec![
        (
            "codec/encode_update_100B",
            time_per_iter(iterations, || {
                out.clear();
                frame::encode(black_box(&update), &mut out);
            }),
        ),
        (
            "codec/decode_update_100B",
            time_per_iter(iterations, || {
                let _ = black_box(frame::decode_server(black_box(&update_bytes)));
            }),
        ),
        (
            "codec/encode_publish_100B",
            time_per_iter(iterations, || {
                out.clear();
                frame::encode(black_box(&publish), &mut out);
            }),
        ),
        (
            "codec/decode_publish_100B",
            time_per_iter(iterations, || {
                let _ = black_box(frame::decode_client(black_box(&publish_bytes)));
            }),
        ),
        (
            "codec/decode_ack",
            time_per_iter(iterations, || {
                let _ = black_box(frame::decode_client(black_box(&ack_bytes)));
            }),
        ),
    ];
    let frame = Bytes::from(update_bytes);
    let batches = (iterations / BATCH as u32).max(2);
    let (mut push, mut ack, mut replay) = (0u128, 0u128, 0u128);
    for _ in 0..batches {
        let mut buf = RecoveryBuffer::<Bytes>::new(limits());
        let t0 = Instant::now();
        for _ in 0..BATCH {
            buf.push(frame.clone(), frame.len());
            black_box(buf.next_unsent().map(|(seq, _)| seq));
        }
        push += t0.elapsed().as_nanos();
        let t0 = Instant::now();
        let _ = black_box(buf.rewind(0));
        while let Some((seq, f)) = buf.next_unsent() {
            black_box((seq, f.len()));
        }
        replay += t0.elapsed().as_nanos();
        let t0 = Instant::now();
        let mut received = 0;
        while received < BATCH {
            received = (received + 64).min(BATCH);
            black_box(buf.ack(received));
        }
        ack += t0.elapsed().as_nanos();
    }
    let per_batch = |total: u128| total as f64 / f64::from(batches);
    results.push(("recovery/push_1000", per_batch(push)));
    results.push(("recovery/ack_1000", per_batch(ack)));
    results.push(("recovery/replay_1000", per_batch(replay)));
    results
        .into_iter()
        .filter_map(|(name, ns)| sample(name, ns, None))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencher_lines_parse() {
        assert_eq!(
            parse_bencher("test recovery/push_1000 ... bench:      11,693 ns/iter (+/- 244)"),
            Some(("recovery/push_1000".into(), 11693.0, 244.0))
        );
        assert_eq!(
            parse_bencher("test codec/decode_ack ... bench:          36 ns/iter (+/- 0)"),
            Some(("codec/decode_ack".into(), 36.0, 0.0))
        );
        assert_eq!(parse_bencher("Benchmarking codec/decode_ack"), None);
    }
}
