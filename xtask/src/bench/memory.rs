//! (c) Server memory per idle connected session: the RSS growth of a `tether-server` child
//! process while N sessions are open, divided by N; against a raw tokio-tungstenite server
//! child process holding N idle connections (and, for diagnosis, one configured with a 4 KiB
//! read buffer). The clients run in this process, on Tether's runtime.

use std::time::Duration;

use tether::Session;

use super::child::{self, ChildServer, Launcher};
use super::raw;
use super::report::{Sample, Target, Unit};
use super::{SERVER_TOML, close_all, on_tether, open_many};

/// Handshakes in flight while opening.
const PARALLEL: usize = 128;
/// `read_buffer_size` of the second raw server.
const SMALL_READ_BUFFER: usize = 4096;
/// Let allocations and lazily spawned tasks settle before reading RSS.
const SETTLE: Duration = Duration::from_millis(1500);

pub(crate) async fn run(launcher: &Launcher, n: usize) -> Result<Vec<Sample>, String> {
    let l = launcher.clone();
    let server = tokio::task::spawn_blocking(move || child::spawn_tether_server(&l, SERVER_TOML))
        .await
        .map_err(|e| e.to_string())??;
    let tether_server = tether_sessions(&server, n).await?;
    drop(server);

    let l = launcher.clone();
    let server = tokio::task::spawn_blocking(move || child::spawn_raw_server(&l, 0))
        .await
        .map_err(|e| e.to_string())??;
    let raw_server = raw_connections(&server, n).await?;
    drop(server);

    // The same raw server with a small read buffer: how much of the above is tungstenite's
    // default 128 KiB read buffer, which it zero-fills (touches) on a connection's first read.
    let l = launcher.clone();
    let server =
        tokio::task::spawn_blocking(move || child::spawn_raw_server(&l, SMALL_READ_BUFFER))
            .await
            .map_err(|e| e.to_string())??;
    let small_server = raw_connections(&server, n).await?;
    drop(server);

    let per = |bytes: i64| bytes as f64 / n as f64;
    Ok(vec![
        Sample::new(
            "c.server",
            &format!("server RSS per idle session ({n} sessions)"),
            Unit::Bytes,
            per(tether_server),
        )
        .baseline(per(raw_server))
        .target(Target::AtMost(7168.0)),
        Sample::new(
            "c.raw_small",
            "raw server, 4 KiB read buffer: RSS per idle connection (info)",
            Unit::Bytes,
            per(small_server),
        ),
    ])
}

/// The server's RSS growth while `n` sessions are open.
async fn tether_sessions(server: &ChildServer, n: usize) -> Result<i64, String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server0 = server.rss()?;
    let url = server.url();
    let sessions = on_tether(open_many(
        n,
        PARALLEL,
        move |_| Session::builder(&url).no_reconnection(),
        None,
    ))
    .await?;
    tokio::time::sleep(SETTLE).await;
    let server1 = server.rss()?;
    let sessions: Vec<Session> = sessions.into_iter().map(|(s, _)| s).collect();
    let opened = sessions.len();
    on_tether(async move {
        close_all(sessions).await;
        Ok(())
    })
    .await?;
    if opened != n {
        return Err(format!("opened {opened} of {n} sessions"));
    }
    Ok(server1 as i64 - server0 as i64)
}

async fn raw_connections(server: &ChildServer, n: usize) -> Result<i64, String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server0 = server.rss()?;
    let addr = server.addr;
    let conns = on_tether(async move {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let permits = permits.clone();
            tasks.spawn(async move {
                let _p = permits.acquire_owned().await.map_err(|e| e.to_string())?;
                raw::connect(addr, "/idle").await
            });
        }
        let mut conns = Vec::with_capacity(n);
        while let Some(c) = tasks.join_next().await {
            conns.push(c.map_err(|e| e.to_string())??);
        }
        Ok(conns)
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    let server1 = server.rss()?;
    on_tether(async move {
        drop(conns);
        Ok(())
    })
    .await?;
    Ok(server1 as i64 - server0 as i64)
}
