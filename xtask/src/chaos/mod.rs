//! `cargo xtask chaos`: numbered messages in both directions through the fault proxy while
//! random cuts of every kind (RST, FIN, stall, refuse) hit the session; then missing,
//! duplicated and reordered counts per direction. Any loss is a failure. With `--nodes N
//! --store redis`, the same across a cluster of real processes, node kills included
//! ([`nodes`]).

mod nodes;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tether::strategy::ConstantDelay;
use tether::{Session, SessionState, Subscription};
use tether_server::{Server, ServerConfig};
use tether_testkit::{CutMode, FaultProxy};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct ChaosConfig {
    /// Messages each way.
    pub(crate) messages: u64,
    /// Faults to inject.
    pub(crate) cuts: u64,
    /// Rough length of the run; faults are spread over it.
    pub(crate) seconds: u64,
    /// The ping period (a stall is found within one and a half of these).
    pub(crate) ping: Duration,
    /// Print progress.
    pub(crate) verbose: bool,
    /// Server nodes: 1 runs one in-process server with the memory store; more run that many
    /// `tether-server` processes sharing a Redis started for the run.
    pub(crate) nodes: usize,
}

/// One direction's tally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Messages sent.
    pub(crate) sent: u64,
    /// Distinct messages received.
    pub(crate) received: u64,
    /// Sent but never received.
    pub(crate) missing: u64,
    /// Received more than once (extra copies).
    pub(crate) duplicated: u64,
    /// Received after a higher number.
    pub(crate) reordered: u64,
}

impl Tally {
    /// Whether nothing went wrong.
    pub(crate) fn is_perfect(&self) -> bool {
        self.missing == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.received == self.sent
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, received {}, missing {}, duplicated {}, reordered {}",
            self.sent, self.received, self.missing, self.duplicated, self.reordered
        )
    }
}

/// Faults applied, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cuts {
    /// Cut with a TCP reset.
    pub(crate) rst: u64,
    /// Cut with FIN.
    pub(crate) fin: u64,
    /// Stalled (half-open) until the liveness check noticed.
    pub(crate) stall: u64,
    /// New connections refused for a while, plus a cut.
    pub(crate) refuse: u64,
    /// A node killed (`kill -9`) and started again.
    pub(crate) kill: u64,
}

impl Cuts {
    /// All faults.
    pub(crate) fn total(&self) -> u64 {
        self.rst + self.fin + self.stall + self.refuse + self.kill
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub(crate) struct ChaosReport {
    /// Server to client.
    pub(crate) down: Tally,
    /// Client to server.
    pub(crate) up: Tally,
    /// Faults applied.
    pub(crate) cuts: Cuts,
    /// Gap reports the session received (any is a loss).
    pub(crate) gaps: u64,
    /// Times the session resumed.
    pub(crate) resumes: u64,
    /// Whether the session kept its id throughout.
    pub(crate) same_session: bool,
    /// How long it took.
    pub(crate) elapsed: Duration,
}

impl ChaosReport {
    /// Zero loss, zero duplicates, zero reordering, both ways, no gap, same session.
    pub(crate) fn is_perfect(&self) -> bool {
        self.down.is_perfect() && self.up.is_perfect() && self.gaps == 0 && self.same_session
    }
}

/// Where a run is, for the report of a watchdog that fired: a hang names its place.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The step the main task is in.
    step: Mutex<&'static str>,
    /// Faults applied so far.
    faults: AtomicU64,
    /// Server-to-client messages published.
    published: AtomicU64,
    /// Client-to-server messages queued.
    queued: AtomicU64,
    /// Client-to-server completions that resolved.
    completed: AtomicU64,
    /// The session's state at the last change the fault task saw.
    state: Mutex<Option<SessionState>>,
}

impl Progress {
    fn step(&self, step: &'static str) {
        if let Ok(mut s) = self.step.lock() {
            *s = step;
        }
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = self.step.lock().map(|s| *s).unwrap_or("?");
        let state = self.state.lock().map(|s| *s).unwrap_or(None);
        write!(
            f,
            "step: {step}; faults applied {}, published {}, queued {}, completed {}; last state seen {state:?}",
            self.faults.load(Ordering::Relaxed),
            self.published.load(Ordering::Relaxed),
            self.queued.load(Ordering::Relaxed),
            self.completed.load(Ordering::Relaxed),
        )
    }
}

fn number(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

/// Receives until all `sent` numbers arrived or `idle` passes without progress.
async fn collect(sub: &mut Subscription, sent: u64, idle: Duration) -> Tally {
    let mut seen = vec![0u8; sent as usize + 1];
    let mut t = Tally {
        sent,
        ..Tally::default()
    };
    let mut last = 0;
    while t.received < sent {
        let Ok(Some(update)) = tokio::time::timeout(idle, sub.next()).await else {
            break;
        };
        let Some(n) = number(&update.value).filter(|n| (1..=sent).contains(n)) else {
            continue;
        };
        let slot = &mut seen[n as usize];
        if *slot > 0 {
            t.duplicated += 1;
        } else {
            t.received += 1;
        }
        *slot = slot.saturating_add(1);
        if n <= last {
            t.reordered += 1;
        }
        last = last.max(n);
    }
    t.missing = sent - t.received;
    t
}

/// Consumes `sub` from now on, as an application does, and tallies it: a subscription left
/// unread would hold the session past its delivery limit, which pauses its reading (and so
/// the acks that complete its publishes) until the application catches up.
fn collecting(mut sub: Subscription, sent: u64, idle: Duration) -> tokio::task::JoinHandle<Tally> {
    tokio::spawn(async move { collect(&mut sub, sent, idle).await })
}

/// Runs one chaos session.
pub(crate) async fn run(
    config: &ChaosConfig,
    progress: Arc<Progress>,
) -> Result<ChaosReport, Box<dyn std::error::Error + Send + Sync>> {
    let started = Instant::now();
    progress.step("starting");
    let mut server_config = ServerConfig::dev();
    server_config.listen = "127.0.0.1:0".parse()?;
    server_config.ping_period_ms = config.ping.as_millis().max(1) as u64;
    // Room for every message of an outage: the test is about loss, not about gap reports.
    server_config.recovery.max_frames = 200_000;
    server_config.recovery.max_bytes = 256 << 20;
    let server = Server::bind(server_config).await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, server.local_addr()).await?;

    let observer = Session::builder(&server.url())
        .principal("control")
        .password("password")
        .open()
        .await?;
    // No progress for this long, once the run is under way, means the run is stuck.
    let idle = Duration::from_secs(30);
    let up_collector = collecting(observer.subscribe("chaos/up").await?, config.messages, idle);
    let session = Session::builder(&format!("ws://{}", proxy.local_addr()))
        .principal("control")
        .password("password")
        .reconnection_timeout(Duration::from_secs(60))
        .reconnection_strategy(ConstantDelay::new(Duration::from_millis(5)))
        .send_queue(100_000, 64 << 20)
        .open()
        .await?;
    let id = session.session_id();
    let down_collector = collecting(
        session.subscribe("chaos/down").await?,
        config.messages,
        idle,
    );
    let mut gaps = session.gap_reports();
    let mut changes = session.state_changes();

    let done = Arc::new(AtomicBool::new(false));
    // Faults, spread over the run; each one hits a connected session.
    let faults = {
        let (proxy, session, done, progress) = (
            proxy.clone(),
            session.clone(),
            done.clone(),
            progress.clone(),
        );
        let spacing = Duration::from_millis(config.seconds * 1000 / config.cuts.max(1))
            .max(Duration::from_millis(5));
        let (count, verbose) = (config.cuts, config.verbose);
        tokio::spawn(async move {
            let mut cuts = Cuts::default();
            for i in 0..count {
                // Subscribed before anything else: whichever change ends this connection (the
                // fault, or a spontaneous one racing it) is in the stream, so the loop below
                // always ends.
                let mut changes = session.state_changes();
                if session.wait_for_state(SessionState::ConnectedActive).await
                    != SessionState::ConnectedActive
                {
                    break;
                }
                let (pause, kind) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(Duration::ZERO..=spacing),
                        rng.random_range(0..4u8),
                    )
                };
                tokio::time::sleep(pause).await;
                match kind {
                    0 => {
                        proxy.cut(CutMode::Rst);
                        cuts.rst += 1;
                    }
                    1 => {
                        proxy.cut(CutMode::Fin);
                        cuts.fin += 1;
                    }
                    2 => {
                        proxy.stall();
                        cuts.stall += 1;
                    }
                    _ => {
                        let ms = rand::rng().random_range(20..200);
                        proxy.refuse(Some(Duration::from_millis(ms)));
                        proxy.cut(CutMode::Rst);
                        cuts.refuse += 1;
                    }
                }
                progress.faults.fetch_add(1, Ordering::Relaxed);
                // Wait until the session noticed, so that every fault counts.
                while let Some(change) = changes.next().await {
                    if let Ok(mut s) = progress.state.lock() {
                        *s = Some(change.new);
                    }
                    if change.old == SessionState::ConnectedActive {
                        break;
                    }
                }
                if kind == 2 {
                    proxy.heal();
                }
                if verbose && (i + 1) % 50 == 0 {
                    println!("  {} faults applied", i + 1);
                }
            }
            done.store(true, Ordering::SeqCst);
            cuts
        })
    };

    // Server → client, paced so the server's buffer for the session stays bounded.
    let down = {
        let (server, messages) = (Arc::new(server), config.messages);
        let s = server.clone();
        let progress = progress.clone();
        let task = tokio::spawn(async move {
            for n in 1..=messages {
                while s.session(&id).is_some_and(|i| i.buffered_frames > 50_000) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if s.publish("chaos/down", n.to_be_bytes().to_vec())
                    .await
                    .is_err()
                {
                    break;
                }
                progress.published.fetch_add(1, Ordering::Relaxed);
                if n % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        (server, task)
    };
    let (server, down_task) = down;

    // Client → server, queued in order; waits for acknowledgements when the queue is full.
    let mut in_flight = VecDeque::new();
    let mut failed_publishes = 0u64;
    progress.step("sending client-to-server messages");
    for n in 1..=config.messages {
        loop {
            match session.send("chaos/up", n.to_be_bytes().to_vec()) {
                Ok(c) => {
                    in_flight.push_back(c);
                    progress.queued.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(tether::Error::QueueFull(_)) => match in_flight.pop_front() {
                    Some(c) => {
                        if c.await.is_err() {
                            failed_publishes += 1;
                        }
                        progress.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                },
                Err(e) => return Err(Box::new(e)),
            }
        }
        if n % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    progress.step("waiting for the server's publisher");
    down_task.await?;
    progress.step("waiting for the faults to end");
    let cuts = faults.await?;
    progress.step("waiting for the session to be active");
    session.wait_for_state(SessionState::ConnectedActive).await;
    progress.step("waiting for the last completions");
    for c in in_flight {
        if c.await.is_err() {
            failed_publishes += 1;
        }
        progress.completed.fetch_add(1, Ordering::Relaxed);
    }
    progress.step("collecting");
    let down_tally = down_collector.await?;
    let mut up_tally = up_collector.await?;
    up_tally.missing += failed_publishes.min(up_tally.sent - up_tally.missing);
    // Still the same session, active again once any late reconnection (say, a liveness
    // timeout on a loaded machine) has finished: nothing closed or replaced it.
    progress.step("checking the session");
    let same_session = session.session_id() == id
        && session.wait_for_state(SessionState::ConnectedActive).await
            == SessionState::ConnectedActive;
    progress.step("closing");
    session.close().await;
    observer.close().await;
    let mut gap_count = 0;
    while gaps.next().await.is_some() {
        gap_count += 1;
    }
    let mut resumes = 0;
    while let Some(change) = changes.next().await {
        if change.old == SessionState::RecoveringReconnect
            && change.new == SessionState::ConnectedActive
        {
            resumes += 1;
        }
    }
    progress.step("shutting down");
    proxy.shutdown().await;
    if let Ok(server) = Arc::try_unwrap(server) {
        server.shutdown(Duration::from_secs(1)).await;
    }
    let _ = done;
    Ok(ChaosReport {
        down: down_tally,
        up: up_tally,
        cuts,
        gaps: gap_count,
        resumes,
        same_session,
        elapsed: started.elapsed(),
    })
}

/// The `tether-server` binary of this workspace's debug build.
pub(crate) fn server_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::test::root().join("target"));
    target.join("debug").join("tether-server")
}

/// The command: runs, prints the tally, and says whether it was perfect.
pub(crate) fn command(config: ChaosConfig) -> bool {
    if config.nodes > 1 {
        if !crate::apt::ensure_redis() {
            return false;
        }
        let mut build = crate::test::cargo();
        build.args(["build", "-q", "-p", "tether-server"]);
        if !build.status().is_ok_and(|s| s.success()) {
            eprintln!("cannot build tether-server");
            return false;
        }
    }
    let Some(runtime) = crate::test::runtime() else {
        return false;
    };
    println!(
        "chaos: {} messages each way, {} faults (RST, FIN, stall, refuse{}), ping period {} ms{}",
        config.messages,
        config.cuts,
        if config.nodes > 1 { ", node kill" } else { "" },
        config.ping.as_millis(),
        if config.nodes > 1 {
            format!(", {} nodes sharing a Redis", config.nodes)
        } else {
            String::new()
        }
    );
    let result = if config.nodes > 1 {
        runtime.block_on(nodes::run(&config, config.nodes, &server_binary()))
    } else {
        runtime.block_on(run(&config, Arc::default()))
    };
    tether::shutdown(Duration::from_secs(2));
    match result {
        Ok(r) => {
            println!("server -> client: {}", r.down);
            println!("client -> server: {}", r.up);
            println!(
                "faults: {} ({} RST, {} FIN, {} stall, {} refuse, {} node kills); {} resumes; {} gap reports; same session: {}",
                r.cuts.total(),
                r.cuts.rst,
                r.cuts.fin,
                r.cuts.stall,
                r.cuts.refuse,
                r.cuts.kill,
                r.resumes,
                r.gaps,
                r.same_session
            );
            println!("elapsed: {:.1} s", r.elapsed.as_secs_f64());
            let ok = r.is_perfect();
            println!(
                "{}",
                if ok {
                    "result: zero loss"
                } else {
                    "result: LOSS"
                }
            );
            ok
        }
        Err(e) => {
            eprintln!("chaos run failed: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounded acceptance run: 20,000 messages each way and 100 mixed faults, stalls
    /// included, with nothing missing, duplicated or reordered in either direction.
    #[test]
    fn twenty_thousand_each_way_through_a_hundred_faults_lose_nothing() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = ChaosConfig {
            messages: 20_000,
            cuts: 100,
            seconds: 10,
            ping: Duration::from_millis(150),
            verbose: false,
            nodes: 1,
        };
        // A watchdog, not a timing: it takes about 20 s even on a loaded machine (12x that is
        // a hang); a hang must
        // fail here, naming itself, rather than stall the whole suite.
        let progress = Arc::new(Progress::default());
        let report = runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(240), run(&config, progress.clone())).await
            })
            .unwrap_or_else(|_| panic!("the chaos run hung for 4 minutes; {progress}"))
            .expect("chaos run");
        assert_eq!(
            report.cuts.total(),
            100,
            "every fault applied: {:?}",
            report.cuts
        );
        assert!(report.cuts.stall > 0, "stalls included: {:?}", report.cuts);
        assert_eq!(
            report.down,
            Tally {
                sent: 20_000,
                received: 20_000,
                ..Tally::default()
            },
            "server -> client"
        );
        assert_eq!(
            report.up,
            Tally {
                sent: 20_000,
                received: 20_000,
                ..Tally::default()
            },
            "client -> server"
        );
        assert_eq!(report.gaps, 0);
        assert!(report.same_session);
        assert!(
            report.resumes >= 100,
            "each fault was followed by a resume: {}",
            report.resumes
        );
    }

    /// The bounded cluster run: three node processes sharing a real Redis, 5,000 messages each
    /// way through 40 faults, node kills among them, with nothing lost, duplicated or
    /// reordered. Needs the `tether-server` binary that `cargo test --workspace` builds.
    #[test]
    fn five_thousand_each_way_across_three_nodes_and_their_kills_lose_nothing() {
        let bin = server_binary();
        assert!(
            bin.is_file(),
            "{} is missing: run this through cargo test --workspace or cargo xtask test",
            bin.display()
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = ChaosConfig {
            messages: 5_000,
            cuts: 40,
            seconds: 10,
            ping: Duration::from_millis(150),
            verbose: false,
            nodes: 3,
        };
        // A watchdog, not a timing (see above).
        let report = runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(600), nodes::run(&config, 3, &bin)).await
            })
            .expect("the cluster chaos run hung for 10 minutes")
            .expect("cluster chaos run");
        assert_eq!(
            report.cuts.total(),
            40,
            "every fault applied: {:?}",
            report.cuts
        );
        assert!(
            report.cuts.kill > 0,
            "node kills included: {:?}",
            report.cuts
        );
        for (tally, what) in [
            (report.down, "server -> client"),
            (report.up, "client -> server"),
        ] {
            assert_eq!(
                tally,
                Tally {
                    sent: 5_000,
                    received: 5_000,
                    ..Tally::default()
                },
                "{what}"
            );
        }
        assert_eq!(report.gaps, 0);
        assert!(report.same_session);
    }
}
