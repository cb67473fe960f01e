//! Microbenchmarks of the sans-I/O core: the frame codec and the recovery buffer.
//!
//! `cargo bench -p tether-protocol` (or `cargo xtask bench`, which runs these and puts the
//! figures in its table). Each recovery-buffer benchmark works on a batch of `BATCH` frames and
//! reports the time per batch; `cargo xtask bench` divides by `BATCH`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tether_protocol::frame::{self, ClientFrame, ServerFrame};
use tether_protocol::reliable::RecoveryBuffer;
use tether_protocol::{BufferLimits, Position, Update};

/// Frames per recovery-buffer batch.
const BATCH: u64 = 1000;

fn update_100() -> ServerFrame {
    ServerFrame::Update(Update {
        topic: "bench/topic".into(),
        value: Bytes::from(vec![0x5a; 100]),
        position: Position {
            partition: 0,
            offset: 1_234_567,
        },
        snapshot: false,
    })
}

fn publish_100() -> ClientFrame {
    ClientFrame::Publish {
        topic: "bench/topic".into(),
        value: Bytes::from(vec![0x5a; 100]),
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let update = update_100();
    let publish = publish_100();
    let update_bytes = frame::encode_to_vec(&update);
    let publish_bytes = frame::encode_to_vec(&publish);
    let ack_bytes = frame::encode_to_vec(&ClientFrame::Ack { received: 1 << 40 });
    let mut out = Vec::with_capacity(256);
    g.bench_function("encode_update_100B", |b| {
        b.iter(|| {
            out.clear();
            frame::encode(black_box(&update), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("decode_update_100B", |b| {
        b.iter(|| frame::decode_server(black_box(&update_bytes)))
    });
    // The paths the server and the client take for every update: an encoding of its own
    // (shared by every subscriber), and a decoding in place with a cache of topic names.
    let ServerFrame::Update(plain_update) = &update else {
        unreachable!("update_100 is an update")
    };
    g.bench_function("encode_update_100B_hot_path", |b| {
        b.iter(|| black_box(frame::encode_update(black_box(plain_update))).len())
    });
    let message = bytes::Bytes::from(update_bytes.clone());
    let mut topics = frame::TopicCache::default();
    g.bench_function("decode_update_100B_in_place", |b| {
        b.iter(|| frame::decode_server_in(&message, black_box(&message), &mut topics))
    });
    g.bench_function("encode_publish_100B", |b| {
        b.iter(|| {
            out.clear();
            frame::encode(black_box(&publish), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("decode_publish_100B", |b| {
        b.iter(|| frame::decode_client(black_box(&publish_bytes)))
    });
    g.bench_function("decode_ack", |b| {
        b.iter(|| frame::decode_client(black_box(&ack_bytes)))
    });
    g.finish();
}

fn limits() -> BufferLimits {
    BufferLimits {
        max_frames: 1 << 20,
        max_bytes: 1 << 30,
    }
}

/// A buffer holding `BATCH` frames, all written to the connection.
fn full_buffer(frame: &Bytes) -> RecoveryBuffer<Bytes> {
    let mut buf = RecoveryBuffer::new(limits());
    for _ in 0..BATCH {
        buf.push(frame.clone(), frame.len());
    }
    while buf.next_unsent().is_some() {}
    buf
}

fn recovery(c: &mut Criterion) {
    let frame = Bytes::from(frame::encode_to_vec(&update_100()));
    let mut g = c.benchmark_group("recovery");
    g.throughput(Throughput::Elements(BATCH));
    // Push and write a batch, as a connected sender does for each frame.
    g.bench_function("push_1000", |b| {
        b.iter_batched_ref(
            || RecoveryBuffer::<Bytes>::new(limits()),
            |buf| {
                for _ in 0..BATCH {
                    buf.push(frame.clone(), frame.len());
                    black_box(buf.next_unsent().map(|(seq, _)| seq));
                }
            },
            BatchSize::SmallInput,
        )
    });
    // Cumulative acks every 64 frames (the protocol's ack cadence) until the batch is gone.
    g.bench_function("ack_1000", |b| {
        b.iter_batched_ref(
            || full_buffer(&frame),
            |buf| {
                let mut received = 0;
                while received < BATCH {
                    received = (received + 64).min(BATCH);
                    black_box(buf.ack(received));
                }
            },
            BatchSize::SmallInput,
        )
    });
    // A resume: rewind to the peer's position and write every frame again.
    g.bench_function("replay_1000", |b| {
        b.iter_batched_ref(
            || full_buffer(&frame),
            |buf| {
                let _ = black_box(buf.rewind(0));
                while let Some((seq, f)) = buf.next_unsent() {
                    black_box((seq, f.len()));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = codec, recovery
}
criterion_main!(benches);
