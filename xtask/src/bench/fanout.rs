//! (d) Fan-out: one topic, N subscriber sessions, a publisher session sending updates that
//! carry their send time; deliveries per second and update latency (send → subscriber).
//! Server in a child process; publisher and subscribers in this process on Tether's runtime
//! (one clock). The publisher keeps at most [`WINDOW`] updates not yet delivered to everyone,
//! so the latency is measured near saturation, not with an unbounded backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether::{Session, Subscription};
use tokio::sync::Notify;

use super::child::{self, Launcher};
use super::report::{Sample, Target, Unit};
use super::{SERVER_TOML, close_all, on_tether, open_many, stats};

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
    let expected = subscribers as u64 * updates;
    let note = format!(
        "{subscribers} subscribers × {updates} updates of 100 B; {} of {expected} delivered; window {WINDOW} updates",
        o.delivered
    );
    let ms: Vec<f64> = o
        .latencies_us
        .iter()
        .map(|&us| f64::from(us) / 1e3)
        .collect();
    Ok(vec![
        Sample::new(
            "d.rate",
            "fan-out: deliveries/s, 1 topic",
            Unit::PerSec,
            o.delivered as f64 / o.elapsed.as_secs_f64(),
        )
        .target(Target::AtLeast(1e6))
        .note(note),
        Sample::new(
            "d.p50",
            "fan-out: update latency p50",
            Unit::Ms,
            stats::percentile(&ms, 50.0),
        ),
        Sample::new(
            "d.p99",
            "fan-out: update latency p99",
            Unit::Ms,
            stats::percentile(&ms, 99.0),
        )
        .target(Target::Below(50.0)),
    ])
}

pub(crate) struct Outcome {
    pub(crate) delivered: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies_us: Vec<u32>,
}

/// Receives `updates` updates, recording each one's latency from the time in its payload.
async fn subscriber(
    mut sub: Subscription,
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
        let Some(u) = sub.next().await else {
            break;
        };
        if u.snapshot {
            continue;
        }
        let now = Instant::now();
        let sent = u
            .value
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
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let per_update = subscribers as u64;
    let mut sessions = Vec::with_capacity(subscribers + 1);
    let mut tasks = Vec::with_capacity(subscribers);
    for (session, sub) in subs {
        sessions.push(session);
        let Some(sub) = sub else { continue };
        tasks.push(tokio::spawn(subscriber(
            sub,
            updates,
            epoch,
            delivered.clone(),
            per_update,
            progress.clone(),
        )));
    }
    sessions.push(publisher.clone());
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
        // Completion is not awaited: pacing is by deliveries.
        if let Err(e) = publisher.send(TOPIC, Bytes::from(payload)) {
            failure = Some(format!("publish: {e}"));
            break;
        }
    }
    let mut latencies = Vec::with_capacity(subscribers * updates as usize);
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
    close_all(sessions).await;
    if let Some(f) = failure {
        return Err(f);
    }
    Ok(Outcome {
        delivered: delivered.load(Ordering::Acquire),
        elapsed: end.duration_since(t0),
        latencies_us: latencies,
    })
}
