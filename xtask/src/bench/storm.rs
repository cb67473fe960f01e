//! (e) Reconnection storm: N sessions behind one fault proxy, all cut at once (RST); time
//! until every one is `CONNECTED_ACTIVE` again, with nothing lost either way (numbered topic
//! updates published before, during and after the outage; one publish per session queued
//! during it), and a probe session in a process of its own, connected directly to the server,
//! measuring its round trip all along. Once with the default strategy, once with a constant 0 ms delay. The server and
//! the fault proxies (as many as their descriptor limit requires, sessions spread over them,
//! cut together) are child processes; the sessions live in this process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tether::strategy::{ConstantDelay, default_strategy};
use tether::{
    AttemptInfo, CloseReason, ReconnectionAttempt, ReconnectionStrategy, Session, SessionState,
    Subscription,
};
use tokio::sync::watch;

use super::child::{self, ChildServer, Launcher};
use super::report::{Sample, Target, Unit};
use super::{SERVER_TOML, close_all, on_tether, open_many, stats};

const TOPIC: &str = "storm/t";
const PARALLEL: usize = 128;
/// Updates published before the cut, during the outage, and after everyone is back.
const BEFORE: u64 = 3;
const DURING: u64 = 3;
const AFTER: u64 = 3;
const TOTAL: u64 = BEFORE + DURING + AFTER;
/// Longest wait for all sessions to be active again.
const ALL_ACTIVE_LIMIT: Duration = Duration::from_secs(60);
/// A probe round trip at or over this means the server was not responsive.
const RESPONSIVE_MS: f64 = 500.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Default,
    Zero,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Default => "default",
            Kind::Zero => "zero",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Default => "default strategy",
            Kind::Zero => "constant 0 ms",
        }
    }

    fn strategy(self) -> Arc<dyn ReconnectionStrategy> {
        match self {
            Kind::Default => default_strategy(),
            Kind::Zero => ConstantDelay::new(Duration::ZERO).into_strategy(),
        }
    }
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    failures: AtomicU64,
}

/// Wraps a session's strategy to count attempts and failures.
struct Counting {
    inner: Arc<dyn ReconnectionStrategy>,
    counters: Arc<Counters>,
}

impl ReconnectionStrategy for Counting {
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        self.inner.perform_reconnection(attempt);
    }
    fn on_success(&self, attempt: &AttemptInfo) {
        self.inner.on_success(attempt);
    }
    fn on_failure(&self, attempt: &AttemptInfo, reason: CloseReason) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        self.inner.on_failure(attempt, reason);
    }
}

pub(crate) async fn run(launcher: &Launcher, sessions: usize) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for kind in [Kind::Default, Kind::Zero] {
        samples.extend(run_one(launcher, sessions, kind).await?);
    }
    Ok(samples)
}

async fn run_one(launcher: &Launcher, n: usize, kind: Kind) -> Result<Vec<Sample>, String> {
    let l = launcher.clone();
    let server = tokio::task::spawn_blocking(move || child::spawn_tether_server(&l, SERVER_TOML))
        .await
        .map_err(|e| e.to_string())??;
    // Each proxied connection costs the proxy two descriptors: as many proxy processes as
    // their descriptor limit requires.
    let per_proxy = (child::fd_limit().saturating_sub(256) / 2).max(1) as usize;
    let count = n.div_ceil(per_proxy).max(1);
    let (l, upstream) = (launcher.clone(), server.addr);
    let proxies = tokio::task::spawn_blocking(move || {
        (0..count)
            .map(|_| child::spawn_proxy(&l, upstream))
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .map_err(|e| e.to_string())??;
    let (url, l) = (server.url(), launcher.clone());
    let (outcome, proxies) = on_tether(async move {
        let mut proxies = proxies;
        let outcome = storm(l, &mut proxies, url, n, kind).await;
        Ok((outcome, proxies))
    })
    .await?;
    drop(proxies);
    drop(server);
    let o = outcome?;
    let k = kind.key();
    let label = kind.label();
    let time_note = format!(
        "{} of {n} sessions active again; cut {} connections",
        o.reconnected, o.cut
    );
    let lost = o.missing + o.duplicated + o.reordered + o.gaps + o.failed_publishes + o.closed;
    let lost_note = format!(
        "{n} sessions × {TOTAL} updates + 1 publish each: missing {}, duplicated {}, reordered {}, gap reports {}, failed publishes {}, sessions closed {}",
        o.missing, o.duplicated, o.reordered, o.gaps, o.failed_publishes, o.closed
    );
    let storm_rtts = if o.storm_rtts_ms.is_empty() {
        &o.all_rtts_ms
    } else {
        &o.storm_rtts_ms
    };
    let probe_note = format!(
        "{} probes during the storm: p50 {:.1} ms; before the cut p50 {:.1} ms",
        o.storm_rtts_ms.len(),
        stats::percentile(storm_rtts, 50.0),
        stats::percentile(&o.before_rtts_ms, 50.0)
    );
    Ok(vec![
        Sample::new(
            &format!("e.{k}.time"),
            &format!("storm ({label}): cut → all {n} active"),
            Unit::Seconds,
            o.all_active.as_secs_f64(),
        )
        .target(Target::Below(5.0))
        .note(time_note),
        Sample::new(
            &format!("e.{k}.lost"),
            &format!("storm ({label}): messages lost, duplicated or reordered"),
            Unit::Count,
            lost as f64,
        )
        .target(Target::Zero)
        .note(lost_note),
        Sample::new(
            &format!("e.{k}.probe"),
            &format!("storm ({label}): probe round trip, max"),
            Unit::Ms,
            stats::min_max(storm_rtts).1,
        )
        .target(Target::Below(RESPONSIVE_MS))
        .note(probe_note),
        Sample::new(
            &format!("e.{k}.failures"),
            &format!("storm ({label}): failed attempts (info)"),
            Unit::Count,
            o.failures as f64,
        )
        .note(format!("{} attempts in all", o.attempts)),
    ])
}

#[derive(Debug, Default)]
struct Outcome {
    cut: usize,
    reconnected: usize,
    all_active: Duration,
    missing: u64,
    duplicated: u64,
    reordered: u64,
    gaps: u64,
    failed_publishes: u64,
    closed: u64,
    attempts: u64,
    failures: u64,
    before_rtts_ms: Vec<f64>,
    storm_rtts_ms: Vec<f64>,
    all_rtts_ms: Vec<f64>,
}

#[derive(Debug, Default)]
struct Watched {
    /// Highest update number received in order.
    last: u64,
    received: u64,
    duplicated: u64,
    reordered: u64,
    gaps: u64,
    closed: bool,
    active_again: Option<Instant>,
}

/// Follows one session: its updates, state changes and gap reports, until `stop`.
async fn watch_session(
    session: Session,
    mut sub: Subscription,
    delivered: Arc<AtomicU64>,
    active: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Watched {
    let mut changes = session.state_changes();
    let mut gaps = session.gap_reports();
    drop(session);
    let mut w = Watched::default();
    let (mut changes_open, mut gaps_open, mut sub_open) = (true, true, true);
    loop {
        tokio::select! {
            u = sub.next(), if sub_open => match u {
                Some(u) => {
                    let n = u.value.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
                    if n == w.last + 1 {
                        w.last = n;
                        w.received += 1;
                    } else if n <= w.last {
                        w.duplicated += 1;
                    } else {
                        w.reordered += 1;
                        w.last = n;
                    }
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                None => sub_open = false,
            },
            c = changes.next(), if changes_open => match c {
                Some(c) if c.new == SessionState::ConnectedActive && c.old == SessionState::RecoveringReconnect => {
                    if w.active_again.is_none() {
                        w.active_again = Some(Instant::now());
                        active.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Some(c) if c.new.is_closed() => w.closed = true,
                Some(_) => {}
                None => changes_open = false,
            },
            g = gaps.next(), if gaps_open => match g {
                Some(_) => w.gaps += 1,
                None => gaps_open = false,
            },
            _ = stop.changed() => break,
        }
    }
    w
}

/// Sends numbered updates `from..=to`.
fn publish_range(publisher: &Session, from: u64, to: u64) -> Result<(), String> {
    for k in from..=to {
        let mut value = k.to_be_bytes().to_vec();
        value.resize(100, 0);
        publisher
            .send(TOPIC, Bytes::from(value))
            .map_err(|e| format!("publish {k}: {e}"))?;
    }
    Ok(())
}

/// Waits until `counter` reaches `want`, or `limit` passes; returns whether it did.
async fn wait_until(counter: &AtomicU64, want: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::Acquire) < want {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// Microseconds since the Unix epoch: a clock this process and the probe process share.
pub(crate) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The body of the probe child process: a session connected to `url` that publishes on
/// `probe/t` and waits for its own update, every 10 ms, printing
/// `{"at_us":…,"rtt_ms":…}` for each round trip, until `stop` (or the end of its standard
/// input); then `{"done":true}`. It has a process, and a Tether runtime, of its own so that
/// the storm's clients cannot slow it down: what it measures is the server.
pub(crate) fn probe_main(url: &str) -> bool {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if line.trim() == "stop" {
                break;
            }
        }
        s.store(true, Ordering::SeqCst);
    });
    let handle = match tether::runtime::handle() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("probe: {e}");
            return false;
        }
    };
    let url = url.to_owned();
    let run = handle.spawn(async move {
        use std::io::Write;
        let session = Session::builder(&url)
            .no_reconnection()
            .open()
            .await
            .map_err(|e| format!("probe: {e}"))?;
        let mut sub = session
            .subscribe("probe/t")
            .await
            .map_err(|e| format!("probe subscribe: {e}"))?;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{{\"listen\":\"127.0.0.1:0\"}}");
        let _ = out.flush();
        let mut seq = 0u64;
        while !stop.load(Ordering::SeqCst) {
            seq += 1;
            let (at, t0) = (wall_us(), Instant::now());
            session
                .send("probe/t", Bytes::copy_from_slice(&seq.to_be_bytes()))
                .map_err(|e| format!("probe send: {e}"))?;
            let back = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(u) = sub.next().await {
                    if u.value.as_ref() == seq.to_be_bytes() {
                        return true;
                    }
                }
                false
            })
            .await;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let _ = writeln!(out, "{{\"at_us\":{at},\"rtt_ms\":{ms}}}");
            let _ = out.flush();
            if back != Ok(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = writeln!(out, "{{\"done\":true}}");
        let _ = out.flush();
        session.close().await;
        Ok::<(), String>(())
    });
    let result = handle.block_on(run);
    tether::shutdown(Duration::from_secs(2));
    match result {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            eprintln!("{e}");
            false
        }
        Err(e) => {
            eprintln!("probe: {e}");
            false
        }
    }
}

/// Stops the probe process and reads its round trips: (wall-clock µs, milliseconds).
fn probe_results(mut probe: ChildServer) -> Vec<(u64, f64)> {
    let _ = probe.send_line("stop");
    let mut rtts = Vec::new();
    while let Some(line) = probe.next_line(Duration::from_secs(15)) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v.get("done").is_some() {
            break;
        }
        if let (Some(at), Some(ms)) = (
            v.get("at_us").and_then(|x| x.as_u64()),
            v.get("rtt_ms").and_then(|x| x.as_f64()),
        ) {
            rtts.push((at, ms));
        }
    }
    rtts
}

async fn storm(
    launcher: Launcher,
    proxies: &mut [ChildServer],
    url: String,
    n: usize,
    kind: Kind,
) -> Result<Outcome, String> {
    let counters = Arc::new(Counters::default());
    let proxy_urls: Vec<String> = proxies.iter().map(|p| p.url()).collect();
    let c = counters.clone();
    let opened = open_many(
        n,
        PARALLEL,
        move |i| {
            Session::builder(&proxy_urls[i % proxy_urls.len()])
                .reconnection_timeout(Duration::from_secs(60))
                .reconnection_strategy(Counting {
                    inner: kind.strategy(),
                    counters: c.clone(),
                })
        },
        Some(TOPIC),
    )
    .await?;
    let publisher = Session::builder(&url)
        .no_reconnection()
        .open()
        .await
        .map_err(|e| format!("publisher: {e}"))?;
    let delivered = Arc::new(AtomicU64::new(0));
    let active = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sessions = Vec::with_capacity(n);
    let mut watchers = Vec::with_capacity(n);
    for (session, sub) in opened {
        let Some(sub) = sub else { continue };
        watchers.push(tokio::spawn(watch_session(
            session.clone(),
            sub,
            delivered.clone(),
            active.clone(),
            stop_rx.clone(),
        )));
        sessions.push(session);
    }
    let n64 = n as u64;
    let mut outcome = Outcome::default();
    let result = async {
        publish_range(&publisher, 1, BEFORE)?;
        if !wait_until(&delivered, n64 * BEFORE, Duration::from_secs(30)).await {
            return Err("updates before the cut were not delivered".to_string());
        }
        let (l, u) = (launcher.clone(), url.clone());
        let prober = tokio::task::spawn_blocking(move || child::spawn_probe(&l, &u))
            .await
            .map_err(|e| e.to_string())??;
        tokio::time::sleep(Duration::from_millis(200)).await;

        let (cut_at, cut_wall) = (Instant::now(), wall_us());
        for p in proxies.iter_mut() {
            p.send_line("cut")?;
        }
        publish_range(&publisher, BEFORE + 1, BEFORE + DURING)?;
        let mut completions = Vec::with_capacity(n);
        for (i, s) in sessions.iter().enumerate() {
            match s.send(
                "storm/up",
                Bytes::copy_from_slice(&(i as u64).to_be_bytes()),
            ) {
                Ok(c) => completions.push(c),
                Err(_) => outcome.failed_publishes += 1,
            }
        }
        let deadline = cut_at + ALL_ACTIVE_LIMIT;
        while active.load(Ordering::Acquire) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let back_wall = wall_us();
        for p in proxies.iter() {
            let answer = p.next_line(Duration::from_secs(5)).unwrap_or_default();
            let cut: Option<u64> = serde_json::from_str::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v.get("cut")?.as_u64());
            outcome.cut += cut.unwrap_or(0) as usize;
        }
        publish_range(&publisher, BEFORE + DURING + 1, TOTAL)?;
        wait_until(&delivered, n64 * TOTAL, Duration::from_secs(30)).await;
        for c in completions {
            match tokio::time::timeout(Duration::from_secs(30), c).await {
                Ok(Ok(())) => {}
                _ => outcome.failed_publishes += 1,
            }
        }
        let rtts = tokio::task::spawn_blocking(move || probe_results(prober))
            .await
            .map_err(|e| e.to_string())?;
        if rtts.is_empty() {
            return Err("the probe reported no round trip".into());
        }
        for (t, ms) in rtts {
            outcome.all_rtts_ms.push(ms);
            if t < cut_wall {
                outcome.before_rtts_ms.push(ms);
            } else if t <= back_wall {
                outcome.storm_rtts_ms.push(ms);
            }
        }
        Ok(cut_at)
    }
    .await;
    stop_tx.send_replace(true);
    let mut last_active = None;
    for w in watchers {
        let w = w.await.map_err(|e| e.to_string())?;
        outcome.missing += TOTAL.saturating_sub(w.received);
        outcome.duplicated += w.duplicated;
        outcome.reordered += w.reordered;
        outcome.gaps += w.gaps;
        outcome.closed += u64::from(w.closed);
        if let Some(t) = w.active_again {
            outcome.reconnected += 1;
            last_active = last_active.max(Some(t));
        }
    }
    outcome.attempts = counters.attempts.load(Ordering::Relaxed);
    outcome.failures = counters.failures.load(Ordering::Relaxed);
    sessions.push(publisher);
    close_all(sessions).await;
    let cut_at = result?;
    outcome.all_active = if outcome.reconnected == n {
        last_active.map_or(Duration::ZERO, |t| t.duration_since(cut_at))
    } else {
        ALL_ACTIVE_LIMIT
    };
    Ok(outcome)
}
