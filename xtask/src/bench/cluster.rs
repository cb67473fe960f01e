//! (r) The Redis store next to the memory store, in the same run: resume on the same node and
//! on another node, one session's publish throughput, fan-out; and, as a limit, the raw rate
//! of pipelined stream appends to the same Redis. Two in-process nodes share a `redis-server`
//! the measure starts (a free port, no persistence).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether::{ReconnectionAttempt, Session};
use tether_server::Server;
use tether_testkit::FaultProxy;
use tether_testkit::processes::Redis;

use super::report::{Sample, Unit};
use super::{on_tether, resume, server_config, stats};

/// What the measure does, scaled from the suite's sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) resumes: usize,
    pub(crate) messages: u64,
    pub(crate) subscribers: usize,
    pub(crate) updates: u64,
}

pub(crate) async fn run(scale: Scale) -> Result<Vec<Sample>, String> {
    let redis = tokio::task::spawn_blocking(Redis::start)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut clustered = server_config()?;
    clustered.store.url = redis.url();
    let a = Server::bind(clustered.clone())
        .await
        .map_err(|e| e.to_string())?;
    let b = Server::bind(clustered).await.map_err(|e| e.to_string())?;
    let memory = Server::bind(server_config()?)
        .await
        .map_err(|e| e.to_string())?;
    let result = measure(&a, &b, &memory, &redis, scale).await;
    for s in [a, b, memory] {
        s.shutdown(Duration::from_secs(1)).await;
    }
    drop(redis);
    result
}

async fn measure(
    a: &Server,
    b: &Server,
    memory: &Server,
    redis: &Redis,
    scale: Scale,
) -> Result<Vec<Sample>, String> {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut samples = Vec::new();
    // Resumes: memory, Redis on the same node, Redis on the other node.
    let mut resumes: Vec<Vec<f64>> = Vec::new();
    for (first, second) in [
        (memory.local_addr(), memory.local_addr()),
        (a.local_addr(), a.local_addr()),
        (a.local_addr(), b.local_addr()),
    ] {
        let proxy = FaultProxy::start(any, first)
            .await
            .map_err(|e| e.to_string())?;
        let times = on_tether(resumes_between(proxy.clone(), first, second, scale.resumes)).await;
        proxy.shutdown().await;
        resumes.push(times?);
    }
    for (label, key, times) in [
        ("same node", "r.resume_same", &resumes[1]),
        ("another node", "r.resume_other", &resumes[2]),
    ] {
        for p in [50.0, 95.0] {
            samples.push(
                Sample::new(
                    &format!("{key}.p{p:.0}"),
                    &format!("redis store: resume on {label}, p{p:.0}"),
                    Unit::Ms,
                    stats::percentile(times, p),
                )
                .baseline(stats::percentile(&resumes[0], p))
                .note("baseline: the same resume with the memory store".to_string()),
            );
        }
    }
    // One session's publishes (client → server), window of completions.
    let up = |url: String| async move {
        let session = Session::builder(&url)
            .open()
            .await
            .map_err(|e| format!("open: {e}"))?;
        let rate = super::throughput::up_tether(
            session.clone(),
            scale.messages,
            super::throughput::DEFAULT_QUEUE_WINDOW,
        )
        .await;
        session.close().await;
        rate
    };
    let up_memory = on_tether(up(memory.url())).await?;
    let up_redis = on_tether(up(a.url())).await?;
    samples.push(
        Sample::new(
            "r.up",
            "redis store: one session's publishes/s (100 B)",
            Unit::PerSec,
            up_redis,
        )
        .baseline(up_memory)
        .note("baseline: the same session with the memory store".to_string()),
    );
    // Fan-out: every subscriber on one node; each update goes through Redis and back.
    let fan_memory = on_tether(super::fanout::measure(
        memory.url(),
        scale.subscribers,
        scale.updates,
    ))
    .await?;
    let fan_redis = on_tether(super::fanout::measure(
        a.url(),
        scale.subscribers,
        scale.updates,
    ))
    .await?;
    let rate = |o: &super::fanout::Outcome| o.delivered as f64 / o.elapsed.as_secs_f64();
    samples.push(
        Sample::new(
            "r.fanout",
            "redis store: fan-out deliveries/s, 1 topic",
            Unit::PerSec,
            rate(&fan_redis),
        )
        .baseline(rate(&fan_memory))
        .note(format!(
            "{} subscribers × {} updates; baseline: the memory store",
            scale.subscribers, scale.updates
        )),
    );
    // The engine's own limit: pipelined appends to one stream.
    let appends = raw_appends(&redis.url(), scale.messages).await?;
    samples.push(
        Sample::new(
            "r.append",
            "redis itself: pipelined XADD/s (the limit for publishes)",
            Unit::PerSec,
            appends,
        )
        .note("batches of 1,000 appends of 100 B to one stream".to_string()),
    );
    Ok(samples)
}

/// Resumes of one session through `proxy`, alternating its upstream between `first` and
/// `second` before each cut: attempt start → `CONNECTED_ACTIVE`, in ms.
async fn resumes_between(
    proxy: FaultProxy,
    first: std::net::SocketAddr,
    second: std::net::SocketAddr,
    n: usize,
) -> Result<Vec<f64>, String> {
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
    let mut sub = session
        .subscribe("bench/g/**")
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let mut changes = session.state_changes();
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 5 {
        proxy.set_upstream(if i % 2 == 0 { second } else { first });
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t = resume::resume_once(&proxy, &mut changes, &started, i).await?;
        if i >= 5 {
            times.push(t.as_secs_f64() * 1e3);
        }
    }
    drop(sub.try_next());
    session.close().await;
    Ok(times)
}

/// Appends `n` 100-byte entries to one stream, 1,000 per pipeline: entries/s.
async fn raw_appends(url: &str, n: u64) -> Result<f64, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let value = vec![0x5au8; 100];
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(1000);
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            pipe.cmd("XADD")
                .arg("bench:raw")
                .arg("*")
                .arg("v")
                .arg(&value)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        done += batch;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}
