//! (a) Resume latency: from the moment the strategy calls `start()` to `CONNECTED_ACTIVE`,
//! against a raw TCP + WebSocket connect over the same path (a fault proxy in front of an
//! in-process server on this process's runtime; clients on Tether's runtime).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether::{ReconnectionAttempt, Session, SessionState};
use tether_server::Server;
use tether_testkit::{CutMode, FaultProxy};

use super::report::{Sample, Target, Unit};
use super::{on_tether, raw, server_config, stats};

const WARMUP: usize = 10;
/// Pause before each measured operation.
const SETTLE: Duration = Duration::from_millis(2);

pub(crate) async fn run(resumes: usize) -> Result<Vec<Sample>, String> {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = Server::bind(server_config()?)
        .await
        .map_err(|e| e.to_string())?;
    let proxy = FaultProxy::start(any, server.local_addr())
        .await
        .map_err(|e| e.to_string())?;
    let (raw_addr, raw_server) = raw::start_local().await?;
    let raw_proxy = FaultProxy::start(any, raw_addr)
        .await
        .map_err(|e| e.to_string())?;

    let result = on_tether(measure(proxy.clone(), raw_proxy.local_addr(), resumes)).await;

    raw_proxy.shutdown().await;
    proxy.shutdown().await;
    raw_server.abort();
    server.shutdown(Duration::from_secs(1)).await;
    let (tether, raw, opens, attempts) = result?;
    let ms = |v: &[Duration]| -> Vec<f64> { v.iter().map(|d| d.as_secs_f64() * 1e3).collect() };
    let (t, r, o) = (ms(&tether), ms(&raw), ms(&opens));
    let note = format!(
        "{} resumes, {attempts} attempts (a failed attempt counts its retry only)",
        tether.len()
    );
    let mut samples: Vec<Sample> = [(50.0, "a.p50"), (95.0, "a.p95"), (99.0, "a.p99")]
        .into_iter()
        .map(|(p, key)| {
            Sample::new(
                key,
                &format!("resume: attempt start → CONNECTED_ACTIVE, p{p:.0}"),
                Unit::Ms,
                stats::percentile(&t, p),
            )
            .baseline(stats::percentile(&r, p))
            .target(Target::RatioAtMost(1.1))
            .note(note.clone())
        })
        .collect();
    // For diagnosis: a fresh open costs the same connect and upgrade without the strategy's
    // decision or the resume bookkeeping.
    samples.push(
        Sample::new(
            "a.open",
            "open a new session, p50 (info)",
            Unit::Ms,
            stats::percentile(&o, 50.0),
        )
        .baseline(stats::percentile(&r, 50.0)),
    );
    Ok(samples)
}

/// Cuts the session's connection and returns the time from the strategy's `start()` to
/// `CONNECTED_ACTIVE`.
pub(crate) async fn resume_once(
    proxy: &FaultProxy,
    changes: &mut tether::StateChanges,
    started: &Mutex<(Option<Instant>, u64)>,
    i: usize,
) -> Result<Duration, String> {
    proxy.cut(CutMode::Rst);
    let active = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(c) = changes.next().await {
            if c.new == SessionState::ConnectedActive {
                return Ok(Instant::now());
            }
            if c.new.is_closed() {
                return Err(format!("session closed: {:?}", c.reason));
            }
        }
        Err("state stream ended".to_string())
    })
    .await
    .map_err(|_| format!("resume {i} did not complete within 10 s"))??;
    let start = started
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .take()
        .ok_or("CONNECTED_ACTIVE without an attempt")?;
    Ok(active.saturating_duration_since(start))
}

/// Resumes, raw connects and opens, measured in turn.
type Measured = (Vec<Duration>, Vec<Duration>, Vec<Duration>, u64);

/// Alternates one raw connect, one Tether resume and one Tether open, `WARMUP` times
/// unrecorded, then `n`.
async fn measure(
    proxy: FaultProxy,
    raw_proxy: std::net::SocketAddr,
    n: usize,
) -> Result<Measured, String> {
    let started: Arc<Mutex<(Option<Instant>, u64)>> = Arc::new(Mutex::new((None, 0)));
    let record = started.clone();
    let session = Session::builder(&format!("ws://{}", proxy.local_addr()))
        .reconnection_strategy(move |attempt: ReconnectionAttempt| {
            {
                let mut s = record.lock().unwrap_or_else(|e| e.into_inner());
                s.0 = Some(Instant::now());
                s.1 += 1;
            }
            attempt.start();
        })
        .open()
        .await
        .map_err(|e| format!("open: {e}"))?;
    let mut changes = session.state_changes();
    let url = format!("ws://{}", proxy.local_addr());
    let (mut tether, mut raw) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut opens = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        // Rotate the order, and let the previous operation's trailing work (the resumed
        // session's first writes, a closing handshake) finish before each measured one.
        let (mut raw_time, mut resume_time, mut open_time) = Default::default();
        for step in 0..3 {
            tokio::time::sleep(SETTLE).await;
            match (i + step) % 3 {
                0 => {
                    let t0 = Instant::now();
                    let ws = raw::connect(raw_proxy, "/idle").await?;
                    raw_time = t0.elapsed();
                    drop(ws);
                }
                1 => resume_time = resume_once(&proxy, &mut changes, &started, i).await?,
                _ => {
                    let t0 = Instant::now();
                    let fresh = Session::builder(&url)
                        .no_reconnection()
                        .open()
                        .await
                        .map_err(|e| format!("open: {e}"))?;
                    open_time = t0.elapsed();
                    fresh.close().await;
                }
            }
        }
        if i >= WARMUP {
            raw.push(raw_time);
            tether.push(resume_time);
            opens.push(open_time);
        }
    }
    let attempts = started
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .1
        .saturating_sub(WARMUP as u64);
    session.close().await;
    Ok((tether, raw, opens, attempts))
}
