//! `cargo xtask demo`: an embedded server, the fault proxy between it and a session, numbered
//! messages in both directions, and faults of every kind; every state change and reconnection
//! attempt is printed as it happens, then a tally.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::strategy::{AttemptInfo, ReconnectionAttempt, ReconnectionStrategy, default_strategy};
use tether::{CloseReason, Session, StateChange, Subscription};
use tether_server::{Server, ServerConfig};
use tether_testkit::{CutMode, FaultProxy};

struct Clock(Instant);

impl Clock {
    fn log(&self, what: impl std::fmt::Display) {
        println!("[{:6.2}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

/// Prints each call, then lets the default strategy decide.
struct Narrated {
    clock: Arc<Clock>,
    inner: Arc<dyn ReconnectionStrategy>,
}

impl ReconnectionStrategy for Narrated {
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        self.clock.log(format_args!(
            "strategy  attempt {} ({} ms since the disconnection, last reason {}, {:.1} s left)",
            attempt.number(),
            attempt.elapsed().as_millis(),
            attempt.last_reason(),
            attempt.remaining().as_secs_f64()
        ));
        self.inner.perform_reconnection(attempt);
    }
    fn on_success(&self, info: &AttemptInfo) {
        self.clock
            .log(format_args!("strategy  attempt {} succeeded", info.number));
        self.inner.on_success(info);
    }
    fn on_failure(&self, info: &AttemptInfo, reason: CloseReason) {
        self.clock.log(format_args!(
            "strategy  attempt {} failed: {reason}",
            info.number
        ));
        self.inner.on_failure(info, reason);
    }
}

pub(crate) fn run(seconds: u64) -> bool {
    let Some(runtime) = crate::test::runtime() else {
        return false;
    };
    let ok = runtime.block_on(async {
        match demo(seconds.clamp(4, 600)).await {
            Ok(ok) => ok,
            Err(e) => {
                eprintln!("demo failed: {e}");
                false
            }
        }
    });
    tether::shutdown(Duration::from_secs(2));
    ok
}

/// Receives `count` numbered values; reports (received, missing, duplicated, reordered).
async fn tally(sub: &mut Subscription, count: u64, limit: Duration) -> (u64, u64, u64, u64) {
    let mut seen = vec![0u32; count as usize + 1];
    let (mut received, mut reordered, mut last) = (0u64, 0u64, 0u64);
    let deadline = tokio::time::Instant::now() + limit;
    while seen[1..].contains(&0) {
        let Ok(Some(update)) = tokio::time::timeout_at(deadline, sub.next()).await else {
            break;
        };
        let Some(n) = std::str::from_utf8(&update.value)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if n == 0 || n > count {
            continue;
        }
        received += 1;
        seen[n as usize] += 1;
        if n <= last {
            reordered += 1;
        }
        last = n;
    }
    let missing = seen[1..].iter().filter(|&&n| n == 0).count() as u64;
    let duplicated = seen[1..]
        .iter()
        .map(|&n| u64::from(n.saturating_sub(1)))
        .sum();
    (received, missing, duplicated, reordered)
}

async fn demo(seconds: u64) -> Result<bool, Box<dyn std::error::Error>> {
    let clock = Arc::new(Clock(Instant::now()));
    let mut config = ServerConfig::dev();
    config.listen = "127.0.0.1:0".parse()?;
    // A short ping period so that the stall below is noticed within a second.
    config.ping_period_ms = 500;
    let server = Server::bind(config).await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, server.local_addr()).await?;
    println!(
        "tether demo: server {} (ping period 500 ms), fault proxy {} in front of it",
        server.local_addr(),
        proxy.local_addr()
    );
    println!(
        "a session streams numbered messages both ways for {seconds} s while the proxy cuts, refuses and stalls\n"
    );

    // Watches what the session publishes, over a direct connection.
    let observer = Session::builder(&server.url())
        .principal("control")
        .password("password")
        .open()
        .await?;
    let mut up = observer.subscribe("demo/up").await?;

    let c = clock.clone();
    let session = Session::builder(&format!("ws://{}", proxy.local_addr()))
        .principal("control")
        .password("password")
        .reconnection_timeout(Duration::from_secs(30))
        .reconnection_strategy(Narrated {
            clock: clock.clone(),
            inner: default_strategy(),
        })
        .listener(move |change: &StateChange| {
            let reason = change.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            c.log(format_args!(
                "state     {} -> {}{reason}",
                change.old, change.new
            ));
        })
        .open()
        .await?;
    clock.log(format_args!("session   {} open", session.session_id()));
    let mut down = session.subscribe("demo/down").await?;

    let period = Duration::from_millis(20);
    let total = seconds * 1000 / period.as_millis() as u64;
    let faults = {
        let (proxy, clock) = (proxy.clone(), clock.clone());
        let step = Duration::from_millis(seconds * 1000 / 10);
        tokio::spawn(async move {
            tokio::time::sleep(step).await;
            clock.log(format_args!(
                "fault     cut with RST ({} connections, stalled ones included)",
                proxy.cut(CutMode::Rst)
            ));
            tokio::time::sleep(step * 2).await;
            clock.log("fault     refuse new connections for 1.5 s, and cut with FIN");
            proxy.refuse(Some(Duration::from_millis(1500)));
            proxy.cut(CutMode::Fin);
            tokio::time::sleep(step * 3).await;
            clock.log(format_args!(
                "fault     stall: {} connection(s) now forward nothing, and nobody is told",
                proxy.stall()
            ));
            tokio::time::sleep(step * 2).await;
            clock.log(format_args!(
                "fault     cut with RST ({} connections, stalled ones included)",
                proxy.cut(CutMode::Rst)
            ));
        })
    };
    let mut completions = Vec::with_capacity(total as usize);
    let mut ticker = tokio::time::interval(period);
    for n in 1..=total {
        ticker.tick().await;
        server.publish("demo/down", n.to_string()).await?;
        completions.push(session.send("demo/up", n.to_string())?);
    }
    faults.await?;
    clock.log(format_args!(
        "done      {total} messages sent each way; waiting for stragglers"
    ));
    let limit = Duration::from_secs(10);
    let (d_recv, d_missing, d_dup, d_reord) = tally(&mut down, total, limit).await;
    let (u_recv, u_missing, u_dup, u_reord) = tally(&mut up, total, limit).await;
    let mut refused = 0;
    for c in completions {
        if c.await.is_err() {
            refused += 1;
        }
    }
    let id_kept = session.state() == tether::SessionState::ConnectedActive;
    session.close().await;
    observer.close().await;
    let stats = proxy.stats();
    println!();
    println!(
        "tally: server -> client: received {d_recv} of {total}, {d_missing} missing, {d_dup} duplicated, {d_reord} out of order"
    );
    println!(
        "       client -> server: received {u_recv} of {total}, {u_missing} missing, {u_dup} duplicated, {u_reord} out of order ({refused} publishes failed)"
    );
    println!(
        "       proxy: {} connections forwarded, {} refused, {} cut",
        stats.forwarded_total, stats.refused_total, stats.cuts_total
    );
    let ok = d_missing + d_dup + d_reord + u_missing + u_dup + u_reord + refused == 0 && id_kept;
    println!(
        "{}",
        if ok {
            "result: every message delivered once, in order, through every fault"
        } else {
            "result: FAILED"
        }
    );
    proxy.shutdown().await;
    server.shutdown(Duration::from_secs(1)).await;
    Ok(ok)
}
