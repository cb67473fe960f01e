//! (k) Rolling restart of a three-node cluster under load: N sessions spread over three
//! `tether-server` processes sharing a Redis, each session given the three URLs; numbered
//! updates published all along; each node in turn gets SIGTERM (it drains and exits) and starts
//! again on its address. Rows: the time each node takes to drain, the time until every session
//! is active again after each restart, and the messages lost, duplicated or reordered (none
//! allowed) and sessions that ended (none allowed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether::{Session, SessionState, Subscription};
use tether_testkit::processes::{Node, Redis};

use super::child::Launcher;
use super::report::{Sample, Target, Unit};
use super::{close_all, on_tether, open_many};

const TOPIC: &str = "rolling/t";
const PARALLEL: usize = 128;
/// Publishes per second while the restart goes on.
const RATE: u64 = 20;
/// Longest wait for every session to be active again after a restart.
const BACK_LIMIT: Duration = Duration::from_secs(120);

/// The `tether-server` binary the measure runs.
pub(crate) fn server_binary(launcher: &Launcher) -> PathBuf {
    match launcher {
        Launcher::Binaries { server, .. } => server.clone(),
        Launcher::Harness { .. } => crate::chaos::server_binary(),
    }
}

fn config(store: &str) -> String {
    format!(
        "[recovery]\nmax_frames = 1000000\nmax_bytes = 1073741824\n\
         [limits]\nmax_sessions_per_principal = 1000000\n\
         connection_attempts_per_second_per_address = 0\nmax_pending_upgrades = 100000\n\
         [anonymous]\nenabled = true\nsubscribe = [\"**\"]\npublish = [\"**\"]\n\
         [drain]\ngrace_ms = 30000\nretry_after_ms = 500\n\
         [store]\nurl = \"{store}\"\n"
    )
}

#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    missing: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    gaps: AtomicU64,
    closed: AtomicU64,
}

pub(crate) async fn run(launcher: &Launcher, sessions: usize) -> Result<Vec<Sample>, String> {
    let bin = server_binary(launcher);
    let redis = tokio::task::spawn_blocking(Redis::start)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("tether-rolling-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("node.toml");
    std::fs::write(&file, config(&redis.url())).map_err(|e| e.to_string())?;
    let outcome = on_tether(rolling(bin, file, sessions)).await;
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    let (drains, backs, t) = outcome?;
    let lost = t.missing + t.duplicated + t.reordered + t.gaps;
    let note = format!(
        "{sessions} sessions on 3 nodes; drains took {:?} s; {} updates each; missing {}, duplicated {}, reordered {}, gap reports {}",
        drains
            .iter()
            .map(|d| (d * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        t.published,
        t.missing,
        t.duplicated,
        t.reordered,
        t.gaps
    );
    Ok(vec![
        Sample::new(
            "k.drain",
            "rolling restart: slowest node drain (SIGTERM → exit)",
            Unit::Seconds,
            drains.iter().copied().fold(0.0, f64::max),
        )
        .note(note.clone()),
        Sample::new(
            "k.back",
            "rolling restart: restart → every session active, slowest node",
            Unit::Seconds,
            backs.iter().copied().fold(0.0, f64::max),
        ),
        Sample::new(
            "k.lost",
            "rolling restart: messages lost, duplicated or reordered",
            Unit::Count,
            lost as f64,
        )
        .target(Target::Zero)
        .note(note),
        Sample::new(
            "k.closed",
            "rolling restart: sessions that ended",
            Unit::Count,
            t.closed as f64,
        )
        .target(Target::Zero),
    ])
}

fn start_node(bin: &Path, config: &Path, at: Option<SocketAddr>) -> Result<Node, String> {
    let config = config.display().to_string();
    let args = ["--config", config.as_str()];
    match at {
        Some(addr) => Node::start_at(bin, &args, &[], addr),
        None => Node::start(bin, &args, &[]),
    }
    .map_err(|e| e.to_string())
}

/// Starts the nodes, the load, then restarts each node in turn: (drain times, back times,
/// what the sessions saw).
async fn rolling(
    bin: PathBuf,
    config: PathBuf,
    sessions: usize,
) -> Result<(Vec<f64>, Vec<f64>, Seen), String> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let (b, c) = (bin.clone(), config.clone());
        nodes.push(
            tokio::task::spawn_blocking(move || start_node(&b, &c, None))
                .await
                .map_err(|e| e.to_string())??,
        );
    }
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let mut run = measure(urls, sessions).await?;
    let mut drains = Vec::new();
    let mut backs = Vec::new();
    for k in 0..nodes.len() {
        let addr = nodes[k].addr();
        let t0 = Instant::now();
        let mut old = nodes.remove(k);
        let status = tokio::task::spawn_blocking(move || old.terminate())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("SIGTERM node {k}: {e}"))?;
        if !status.success() {
            return Err(format!("node {k} exited with {status} after its drain"));
        }
        drains.push(t0.elapsed().as_secs_f64());
        let (b, c) = (bin.clone(), config.clone());
        let again = tokio::task::spawn_blocking(move || start_node(&b, &c, Some(addr)))
            .await
            .map_err(|e| e.to_string())??;
        nodes.insert(k, again);
        match run.all_active(BACK_LIMIT).await {
            Ok(back) => backs.push(back),
            Err(e) => {
                // What the nodes logged about the session that ended (or every warning).
                let id = e.session.as_deref().unwrap_or("WARN");
                let seen: Vec<String> = nodes
                    .iter()
                    .flat_map(|n| {
                        n.log()
                            .lines()
                            .filter(|l| l.contains(id) || l.contains("WARN"))
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .take(40)
                    .collect();
                return Err(format!(
                    "after restarting node {k}: {}; the nodes' log lines about it:\n{}",
                    e.message,
                    seen.join("\n")
                ));
            }
        }
    }
    let seen = run.finish().await?;
    drop(nodes);
    Ok((drains, backs, seen))
}

/// The load the restarts run under.
struct Running {
    sessions: Vec<Session>,
    publisher: Session,
    tally: Arc<Tally>,
    published: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    publishing: tokio::task::JoinHandle<Result<(), String>>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
}

/// Why not every session came back.
struct NotBack {
    message: String,
    /// The session that ended, if one did.
    session: Option<String>,
}

/// What the load saw.
pub(crate) struct Seen {
    published: u64,
    missing: u64,
    duplicated: u64,
    reordered: u64,
    gaps: u64,
    closed: u64,
}

async fn measure(urls: Vec<String>, n: usize) -> Result<Running, String> {
    let u = urls.clone();
    let opened = open_many(
        n,
        PARALLEL,
        move |i| {
            // Each session starts on a node of its own, with the other two as fallbacks.
            let mut b = Session::builder(&u[i % 3]);
            for k in 1..3 {
                b = b.fallback_url(u[(i + k) % 3].clone());
            }
            b.send_queue(1_000_000, 1 << 30)
        },
        Some(TOPIC),
    )
    .await?;
    let mut pb = Session::builder(&urls[0]);
    for url in &urls[1..] {
        pb = pb.fallback_url(url.clone());
    }
    let publisher = pb.open().await.map_err(|e| format!("publisher: {e}"))?;
    let tally = Arc::new(Tally::default());
    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut sessions = Vec::with_capacity(n);
    let mut watchers = Vec::with_capacity(n);
    for (session, sub) in opened {
        let Some(sub) = sub else { continue };
        watchers.push(tokio::spawn(watch(
            session.clone(),
            sub,
            tally.clone(),
            published.clone(),
            stop.clone(),
        )));
        sessions.push(session);
    }
    let publishing = {
        let (p, published, stop) = (publisher.clone(), published.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
            let mut k = 0u64;
            while !stop.load(Ordering::Acquire) {
                tick.tick().await;
                k += 1;
                let mut value = k.to_be_bytes().to_vec();
                value.resize(100, 0);
                p.send(TOPIC, Bytes::from(value))
                    .map_err(|e| format!("publish {k}: {e}"))?;
                published.store(k, Ordering::Release);
            }
            Ok(())
        })
    };
    Ok(Running {
        sessions,
        publisher,
        tally,
        published,
        stop,
        publishing,
        watchers,
    })
}

/// Follows one session's updates until told to stop and everything published has arrived.
async fn watch(
    session: Session,
    mut sub: Subscription,
    tally: Arc<Tally>,
    published: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut gaps = session.gap_reports();
    let mut last = 0u64;
    loop {
        let done = stop.load(Ordering::Acquire) && last >= published.load(Ordering::Acquire);
        if done {
            break;
        }
        tokio::select! {
            u = sub.next() => match u {
                Some(u) if !u.snapshot => {
                    let k = u.value.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
                    if k == last + 1 {
                        last = k;
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                    } else if k <= last {
                        tally.duplicated.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.reordered.fetch_add(1, Ordering::Relaxed);
                        last = k;
                    }
                }
                Some(_) => {}
                None => break,
            },
            g = gaps.next() => if g.is_some() {
                tally.gaps.fetch_add(1, Ordering::Relaxed);
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let total = published.load(Ordering::Acquire);
    if last < total {
        tally.missing.fetch_add(total - last, Ordering::Relaxed);
    }
    if session.state().is_closed() {
        tally.closed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Running {
    /// Seconds until every session is active.
    async fn all_active(&mut self, limit: Duration) -> Result<f64, NotBack> {
        let t0 = Instant::now();
        for s in &self.sessions {
            let left = limit.saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, s.wait_for_state(SessionState::ConnectedActive)).await
            {
                Ok(SessionState::ConnectedActive) => {}
                Ok(other) => {
                    let reason = s.close_reason().map_or("none".into(), |r| r.to_string());
                    return Err(NotBack {
                        message: format!(
                            "session {} ended: {other}, reason {reason}",
                            s.session_id()
                        ),
                        session: Some(s.session_id().to_string()),
                    });
                }
                Err(_) => {
                    return Err(NotBack {
                        message: format!("not every session was back within {limit:?}"),
                        session: None,
                    });
                }
            }
        }
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Stops publishing, waits for every session to have everything, and tallies.
    async fn finish(self) -> Result<Seen, String> {
        self.stop.store(true, Ordering::Release);
        self.publishing.await.map_err(|e| e.to_string())??;
        let published = self.published.load(Ordering::Acquire);
        let deadline = Instant::now() + BACK_LIMIT;
        for w in self.watchers {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left, w).await;
        }
        let mut all = self.sessions;
        all.push(self.publisher);
        let t = &self.tally;
        let seen = Seen {
            published,
            missing: t.missing.load(Ordering::Relaxed),
            duplicated: t.duplicated.load(Ordering::Relaxed),
            reordered: t.reordered.load(Ordering::Relaxed),
            gaps: t.gaps.load(Ordering::Relaxed),
            closed: t.closed.load(Ordering::Relaxed),
        };
        close_all(all).await;
        Ok(seen)
    }
}
