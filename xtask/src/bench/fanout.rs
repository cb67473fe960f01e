//! (d) Fan-out: one topic, N subscriber sessions, a publisher session sending updates that
//! carry their send time; deliveries per second and update latency (send → subscriber).
//! Server in a child process; publisher and subscribers in this process on Tether's runtime
//! (one clock). The publisher keeps at most [`WINDOW`] updates not yet delivered to everyone,
//! so the latency is measured near saturation, not with an unbounded backlog.
//!
//! The baseline, in the same run: the raw tokio-tungstenite broadcast server of
//! [`super::raw`] (a writer task per subscriber, coalescing writes), the same number of raw
//! WebSocket subscribers and a raw publisher, paced the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::ready;
use futures_util::{SinkExt, Stream, StreamExt};
use tether::Session;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use super::child::{self, Launcher};
use super::report::{Sample, Target, Unit};
use super::{SERVER_TOML, close_all, on_tether, open_many, raw, stats};

const TOPIC: &str = "fan/t";
const PARALLEL: usize = 128;
/// Updates in flight (published, not yet delivered to every subscriber).
const WINDOW: u64 = 4;
/// No progress for this long ends the measure.
const STALL: Duration = Duration::from_secs(30);

pub(crate) async fn run(
    launcher: &Launcher,
    subscribers: usize,
    updates: u64,
) -> Result<Vec<Sample>, String> {
    let l = launcher.clone();
    let server = tokio::task::spawn_blocking(move || child::spawn_tether_server(&l, SERVER_TOML))
        .await
        .map_err(|e| e.to_string())??;
    let url = server.url();
    let outcome = on_tether(measure(url, subscribers, updates)).await;
    drop(server);
    let o = outcome?;
    let l = launcher.clone();
    let raw_server = tokio::task::spawn_blocking(move || child::spawn_raw_server(&l, 0))
        .await
        .map_err(|e| e.to_string())??;
    let addr = raw_server.addr;
    let baseline = on_tether(measure_raw(addr, subscribers, updates)).await;
    drop(raw_server);
    let b = baseline?;
    let expected = subscribers as u64 * updates;
    let note = format!(
        "{subscribers} subscribers × {updates} updates of 100 B; {} of {expected} delivered \
         (raw {}); window {WINDOW} updates",
        o.delivered, b.delivered
    );
    Ok(vec![
        Sample::new(
            "d.rate",
            "fan-out: deliveries/s, 1 topic",
            Unit::PerSec,
            o.rate(),
        )
        .baseline(b.rate())
        .target(Target::RatioAtLeast(0.7))
        .note(note),
        Sample::new(
            "d.p50",
            "fan-out: update latency p50",
            Unit::Ms,
            o.percentile_ms(50.0),
        )
        .baseline(b.percentile_ms(50.0)),
        Sample::new(
            "d.p99",
            "fan-out: update latency p99",
            Unit::Ms,
            o.percentile_ms(99.0),
        )
        .baseline(b.percentile_ms(99.0))
        .target(Target::RatioAtMost(2.0)),
    ])
}

pub(crate) struct Outcome {
    pub(crate) delivered: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies_us: Vec<u32>,
}

impl Outcome {
    pub(crate) fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        let ms: Vec<f64> = self
            .latencies_us
            .iter()
            .map(|&us| f64::from(us) / 1e3)
            .collect();
        stats::percentile(&ms, p)
    }
}

/// Receives `updates` updates (their payloads), recording each one's latency from the time
/// in its payload.
async fn subscriber(
    mut sub: impl Stream<Item = Bytes> + Unpin,
    updates: u64,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    per_update: u64,
    progress: Arc<Notify>,
) -> (Vec<u32>, Option<Instant>) {
    let mut latencies = Vec::with_capacity(updates as usize);
    let mut last = None;
    while (latencies.len() as u64) < updates {
        // No timer per delivery (10,000 of them per update would cost more than the delivery):
        // `measure` bounds the whole run instead.
        let Some(value) = sub.next().await else {
            break;
        };
        let now = Instant::now();
        let sent = value
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        let at = now.duration_since(epoch).as_nanos() as u64;
        latencies.push((at.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32);
        last = Some(now);
        // Wake the publisher each time another whole update's worth has been delivered.
        if (delivered.fetch_add(1, Ordering::AcqRel) + 1).is_multiple_of(per_update) {
            progress.notify_one();
        }
    }
    (latencies, last)
}

pub(crate) async fn measure(
    url: String,
    subscribers: usize,
    updates: u64,
) -> Result<Outcome, String> {
    let u = url.clone();
    let subs = open_many(
        subscribers,
        PARALLEL,
        move |_| Session::builder(&u).no_reconnection(),
        Some(TOPIC),
    )
    .await?;
    let publisher = Session::builder(&url)
        .no_reconnection()
        .open()
        .await
        .map_err(|e| format!("publisher: {e}"))?;
    let mut sessions = Vec::with_capacity(subscribers + 1);
    let mut streams = Vec::with_capacity(subscribers);
    for (session, sub) in subs {
        sessions.push(session);
        if let Some(sub) = sub {
            // Live updates only (a new subscription's first value is a snapshot).
            streams.push(sub.filter_map(|u| ready((!u.snapshot).then_some(u.value))));
        }
    }
    sessions.push(publisher.clone());
    // Completion is not awaited: pacing is by deliveries.
    let publish = move |payload: Bytes| {
        publisher
            .send(TOPIC, payload)
            .map(|_| ())
            .map_err(|e| format!("publish: {e}"))
    };
    let outcome = pace(streams, publish, updates).await;
    close_all(sessions).await;
    outcome
}

/// The baseline: raw subscribers of the raw broadcast server and a raw publisher.
async fn measure_raw(
    addr: std::net::SocketAddr,
    subscribers: usize,
    updates: u64,
) -> Result<Outcome, String> {
    let permits = Arc::new(Semaphore::new(PARALLEL));
    let mut joins = tokio::task::JoinSet::new();
    for _ in 0..subscribers {
        let permits = permits.clone();
        joins.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            raw::connect(addr, "/sub").await
        });
    }
    let mut streams = Vec::with_capacity(subscribers);
    while let Some(joined) = joins.join_next().await {
        let ws = joined.map_err(|e| e.to_string())??;
        streams.push(ws.filter_map(|m| {
            ready(match m {
                Ok(Message::Binary(b)) => Some(b),
                _ => None,
            })
        }));
    }
    // The raw server registers a subscriber before it answers the upgrade, so all of them
    // are registered by now.
    let mut publisher = raw::connect(addr, "/pub").await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            publisher
                .feed(Message::Binary(first))
                .await
                .map_err(|e| e.to_string())?;
            while let Ok(more) = rx.try_recv() {
                publisher
                    .feed(Message::Binary(more))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            publisher.flush().await.map_err(|e| e.to_string())?;
        }
        let _ = publisher.close(None).await;
        Ok::<_, String>(())
    });
    let publish = move |payload: Bytes| {
        tx.send(payload)
            .map_err(|_| "raw publisher gone".to_owned())
    };
    let outcome = pace(streams, publish, updates).await;
    writer.abort();
    outcome
}

/// Publishes `updates` timestamped updates with at most [`WINDOW`] of them not yet delivered
/// to every subscriber, and gathers what the subscribers measured.
async fn pace<S>(
    streams: Vec<S>,
    mut publish: impl FnMut(Bytes) -> Result<(), String>,
    updates: u64,
) -> Result<Outcome, String>
where
    S: Stream<Item = Bytes> + Unpin + Send + 'static,
{
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let per_update = streams.len().max(1) as u64;
    let mut tasks = Vec::with_capacity(streams.len());
    for stream in streams {
        tasks.push(tokio::spawn(subscriber(
            stream,
            updates,
            epoch,
            delivered.clone(),
            per_update,
            progress.clone(),
        )));
    }
    let t0 = Instant::now();
    let mut failure = None;
    for k in 0..updates {
        while k.saturating_sub(delivered.load(Ordering::Acquire) / per_update) >= WINDOW {
            if tokio::time::timeout(STALL, progress.notified())
                .await
                .is_err()
            {
                failure = Some(format!("fan-out stalled after {k} updates"));
                break;
            }
        }
        if failure.is_some() {
            break;
        }
        let mut payload = vec![0u8; 100];
        let now = epoch.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&now.to_be_bytes());
        if let Err(e) = publish(Bytes::from(payload)) {
            failure = Some(e);
            break;
        }
    }
    let mut latencies = Vec::with_capacity(tasks.len() * updates as usize);
    let mut end = t0;
    let deadline = tokio::time::Instant::now() + STALL;
    for t in &mut tasks {
        if failure.is_some() {
            break;
        }
        match tokio::time::timeout_at(deadline, t).await {
            Ok(joined) => {
                let (l, last) = joined.map_err(|e| e.to_string())?;
                latencies.extend(l);
                end = end.max(last.unwrap_or(t0));
            }
            Err(_) => failure = Some("subscribers still waiting 30 s after the last update".into()),
        }
    }
    for t in &tasks {
        t.abort();
    }
    if let Some(f) = failure {
        return Err(f);
    }
    Ok(Outcome {
        delivered: delivered.load(Ordering::Acquire),
        elapsed: end.duration_since(t0),
        latencies_us: latencies,
    })
}
