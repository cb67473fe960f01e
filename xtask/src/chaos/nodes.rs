//! `cargo xtask chaos --nodes N --store redis`: the same numbered messages both ways, through
//! the same network faults, plus node kills: a real `redis-server`, N `tether-server`
//! processes sharing it, and three sessions (the client, a producer of the client's updates,
//! an observer of the client's publishes), each behind a fault proxy that acts as its load
//! balancer. A node kill points every proxy that used the node at another one, `kill -9`s the
//! node and starts it again on the same address.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tether::strategy::ConstantDelay;
use tether::{Session, SessionState};
use tether_testkit::processes::{Node, Redis};
use tether_testkit::{CutMode, FaultProxy};

use super::{ChaosConfig, ChaosReport, Cuts, collecting};

/// A node: its process (none while it is down) and where it listens.
struct Slot {
    node: Option<Node>,
    addr: SocketAddr,
}

struct Cluster {
    bin: PathBuf,
    config: PathBuf,
    nodes: Vec<Slot>,
}

impl Cluster {
    fn args(&self) -> Vec<String> {
        vec!["--config".into(), self.config.display().to_string()]
    }

    /// Kills node `k` (`kill -9`) and starts it again on the same address.
    fn kill_and_restart(&mut self, k: usize) -> std::io::Result<()> {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let slot = &mut self.nodes[k];
        if let Some(mut node) = slot.node.take() {
            node.kill();
        }
        // The address may linger a moment in the kernel after the kill.
        let mut last = None;
        for _ in 0..50 {
            match Node::start_at(&self.bin, &args, &[], slot.addr) {
                Ok(node) => {
                    slot.node = Some(node);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("cannot restart the node")))
    }
}

/// A configuration file for every node: the dev principal, the chaos ping period, room for
/// every message of an outage, and the shared store.
fn write_config(dir: &Path, store: &str, ping: Duration) -> std::io::Result<PathBuf> {
    let path = dir.join("tether-chaos.toml");
    let hash = tether_server::auth::hash_password("password");
    let text = format!(
        "ping_period_ms = {}\n\
         [recovery]\nmax_frames = 200000\nmax_bytes = 268435456\n\
         [store]\nurl = \"{store}\"\n\
         [[principals]]\nname = \"control\"\npassword_hash = \"{hash}\"\n\
         subscribe = [\"**\"]\npublish = [\"**\"]\n",
        ping.as_millis().max(1)
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn open(proxy: &FaultProxy) -> Result<Session, tether::Error> {
    Session::builder(&format!("ws://{}", proxy.local_addr()))
        .principal("control")
        .password("password")
        .reconnection_timeout(Duration::from_secs(60))
        .reconnection_strategy(ConstantDelay::new(Duration::from_millis(5)))
        .send_queue(100_000, 64 << 20)
        .open()
        .await
}

/// Sends `1..=messages` on `topic`, pipelined, waiting for completions when the queue is
/// full; returns how many were reported failed.
async fn send_all(session: &Session, topic: &str, messages: u64) -> Result<u64, tether::Error> {
    let mut in_flight = VecDeque::new();
    let mut failed = 0u64;
    for n in 1..=messages {
        loop {
            match session.send(topic, n.to_be_bytes().to_vec()) {
                Ok(c) => {
                    in_flight.push_back(c);
                    break;
                }
                Err(tether::Error::QueueFull(_)) => match in_flight.pop_front() {
                    Some(c) => {
                        if c.await.is_err() {
                            failed += 1;
                        }
                    }
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                },
                Err(e) => return Err(e),
            }
        }
        if n % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for c in in_flight {
        if c.await.is_err() {
            failed += 1;
        }
    }
    Ok(failed)
}

/// Runs one chaos session across `nodes` nodes sharing a Redis started for the run. `bin` is
/// the `tether-server` binary.
pub(crate) async fn run(
    config: &ChaosConfig,
    nodes: usize,
    bin: &Path,
) -> Result<ChaosReport, Box<dyn std::error::Error + Send + Sync>> {
    let started = Instant::now();
    let redis = Redis::start()?;
    let dir = std::env::temp_dir().join(format!("tether-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config_path = write_config(&dir, &redis.url(), config.ping)?;
    let mut cluster = Cluster {
        bin: bin.to_owned(),
        config: config_path,
        nodes: Vec::new(),
    };
    for _ in 0..nodes.max(2) {
        let args = cluster.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = Node::start(bin, &args, &[])?;
        cluster.nodes.push(Slot {
            addr: node.addr(),
            node: Some(node),
        });
    }
    let listen = "127.0.0.1:0".parse()?;
    // Each session on a node of its own, so that a kill hits one of them at a time.
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|s| s.addr).collect();
    let client_proxy = FaultProxy::start(listen, addrs[0]).await?;
    let producer_proxy = FaultProxy::start(listen, addrs[1 % addrs.len()]).await?;
    let observer_proxy = FaultProxy::start(listen, addrs[2 % addrs.len()]).await?;
    let proxies = [
        client_proxy.clone(),
        producer_proxy.clone(),
        observer_proxy.clone(),
    ];

    let observer = open(&observer_proxy).await?;
    // No progress for this long, once the run is under way, means the run is stuck.
    let idle = Duration::from_secs(30);
    let up_collector = collecting(observer.subscribe("chaos/up").await?, config.messages, idle);
    let session = open(&client_proxy).await?;
    let id = session.session_id();
    let down_collector = collecting(
        session.subscribe("chaos/down").await?,
        config.messages,
        idle,
    );
    let producer = open(&producer_proxy).await?;
    let mut gaps = session.gap_reports();
    let mut changes = session.state_changes();

    let cluster = Arc::new(Mutex::new(cluster));
    let faults = {
        let (session, cluster) = (session.clone(), cluster.clone());
        let spacing = Duration::from_millis(config.seconds * 1000 / config.cuts.max(1))
            .max(Duration::from_millis(5));
        let (count, verbose) = (config.cuts, config.verbose);
        tokio::spawn(async move {
            let mut cuts = Cuts::default();
            for i in 0..count {
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
                        rng.random_range(0..5u8),
                    )
                };
                tokio::time::sleep(pause).await;
                let mut hits_client = true;
                match kind {
                    0 => {
                        proxies[0].cut(CutMode::Rst);
                        cuts.rst += 1;
                    }
                    1 => {
                        proxies[0].cut(CutMode::Fin);
                        cuts.fin += 1;
                    }
                    2 => {
                        proxies[0].stall();
                        cuts.stall += 1;
                    }
                    3 => {
                        let ms = rand::rng().random_range(20..200);
                        proxies[0].refuse(Some(Duration::from_millis(ms)));
                        proxies[0].cut(CutMode::Rst);
                        cuts.refuse += 1;
                    }
                    _ => {
                        let c = cluster.clone();
                        let proxies = proxies.clone();
                        let killed = tokio::task::spawn_blocking(move || {
                            let mut cluster = c.lock().unwrap_or_else(|e| e.into_inner());
                            let n = cluster.nodes.len();
                            let k = rand::rng().random_range(0..n);
                            let dead = cluster.nodes[k].addr;
                            let client_there = proxies[0].upstream() == dead;
                            // The load balancers stop sending to it first.
                            for p in &proxies {
                                if p.upstream() == dead {
                                    let other = (k + rand::rng().random_range(1..n)) % n;
                                    p.set_upstream(cluster.nodes[other].addr);
                                }
                            }
                            cluster.kill_and_restart(k).map(|()| client_there)
                        })
                        .await;
                        match killed {
                            Ok(Ok(client_there)) => {
                                hits_client = client_there;
                                cuts.kill += 1;
                            }
                            Ok(Err(e)) => {
                                eprintln!("cannot restart a node: {e}");
                                break;
                            }
                            Err(e) => {
                                eprintln!("node kill failed: {e}");
                                break;
                            }
                        }
                    }
                }
                if hits_client {
                    // Wait until the session noticed, so that every fault counts.
                    while let Some(change) = changes.next().await {
                        if change.old == SessionState::ConnectedActive {
                            break;
                        }
                    }
                }
                if kind == 2 {
                    proxies[0].heal();
                }
                if verbose && (i + 1) % 50 == 0 {
                    println!("  {} faults applied", i + 1);
                }
            }
            cuts
        })
    };

    let messages = config.messages;
    let producing = {
        let producer = producer.clone();
        tokio::spawn(async move { send_all(&producer, "chaos/down", messages).await })
    };
    let failed_up = send_all(&session, "chaos/up", messages).await?;
    let failed_down = producing.await??;
    let cuts = faults.await?;
    session.wait_for_state(SessionState::ConnectedActive).await;
    let mut down_tally = down_collector.await?;
    let mut up_tally = up_collector.await?;
    down_tally.missing += failed_down.min(down_tally.sent - down_tally.missing);
    up_tally.missing += failed_up.min(up_tally.sent - up_tally.missing);
    let same_session = session.session_id() == id
        && session.wait_for_state(SessionState::ConnectedActive).await
            == SessionState::ConnectedActive;
    if !same_session {
        eprintln!(
            "the session ended: {:?} (producer {:?}, observer {:?})",
            session.close_reason(),
            producer.close_reason(),
            observer.close_reason()
        );
        let cluster = cluster.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = id.to_string();
        for (i, slot) in cluster.nodes.iter().enumerate() {
            if let Some(node) = &slot.node {
                for line in node.log().lines().filter(|l| l.contains(&wanted)) {
                    eprintln!("node {i}: {line}");
                }
            }
        }
    }
    session.close().await;
    observer.close().await;
    producer.close().await;
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
    for p in [&client_proxy, &producer_proxy, &observer_proxy] {
        p.shutdown().await;
    }
    drop(cluster);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
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
