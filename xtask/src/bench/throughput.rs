//! (b) One session, 100 B messages per second, each direction, recovery on: topic updates the
//! server publishes (`Server::publish`, in-process) to one subscriber, and publishes the
//! client sends with a window of [`tether::Completion`]s; against a raw tokio-tungstenite
//! stream of 100 B messages to an in-process raw server.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tether::Session;
use tether_server::Server;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use super::raw::{self, PAYLOAD};
use super::report::{Sample, Target, Unit};
use super::{on_tether, server_config};

/// Server → client: how far the publisher may run ahead of the subscriber. Large enough not to
/// be what limits the rate: it covers the time a busy thread waits for one of the two cores
/// (milliseconds, with five busy threads) at the rates measured. The raw stream's only window
/// is TCP's buffers, larger still. Well within the bench server's recovery buffer
/// ([`super::SERVER_TOML`]), which is what a publisher running ahead fills.
pub(crate) const DOWN_WINDOW: u64 = 65_536;
/// Client → server: publishes awaiting their completion. A completion comes back only after
/// its publish went through TCP's buffers both ways (up to 4 MiB sent and 32 MiB received
/// here, as the raw stream has them) and the server's ack came back: a window smaller than what
/// those buffers hold in flight makes the sender wait on them, and the rate grows with the
/// window up to about this size (8,192 in the seventh round, 4,096 before: see BENCHMARKS.md).
/// 262,144 publishes of 100 B are 28 MiB of frames.
const UP_WINDOW: usize = 262_144;
/// The session's send queue for [`UP_WINDOW`]: as many requests as the bench server's recovery
/// buffer keeps frames ([`super::SERVER_TOML`]), the same room at both ends.
const UP_QUEUE: (usize, usize) = (1_000_000, 1 << 30);
/// A window that fits in the client's default send queue ([`default_send_queue`]): what one
/// session sends with the defaults, measured beside [`UP_WINDOW`] (an info row).
pub(crate) const DEFAULT_QUEUE_WINDOW: usize = 8192;

/// The client's default send queue, in requests (the core's default, 10,000).
fn default_send_queue() -> usize {
    tether_protocol::client::ClientSessionConfig::default()
        .buffer
        .max_frames
}
/// No progress for this long is a failure.
const STALL: Duration = Duration::from_secs(30);
/// A whole phase taking longer than this is a failure. One deadline per phase rather than a
/// timeout per message: a timer per message costs as much as a good part of what is measured.
const PHASE: Duration = Duration::from_secs(120);

const TOPIC_DOWN: &str = "bench/down";
const TOPIC_UP: &str = "bench/up";

pub(crate) async fn run(n: u64) -> Result<Vec<Sample>, String> {
    let server = Server::bind(server_config()?)
        .await
        .map_err(|e| e.to_string())?;
    let (raw_addr, raw_server) = raw::start_local().await?;
    let url = server.url();
    let session = on_tether(async move {
        Session::builder(&url)
            .send_queue(UP_QUEUE.0, UP_QUEUE.1)
            .open()
            .await
            .map_err(|e| format!("open: {e}"))
    })
    .await?;

    let result = async {
        let tether_down = with_cpu(n, down_tether(&server, session.clone(), n)).await?;
        let raw_down = with_cpu(n, on_tether(down_raw(raw_addr, n))).await?;
        let raw_down_handed = on_tether(down_raw_handed_on(raw_addr, n)).await?;
        let tether_up = with_cpu(n, on_tether(up_tether(session.clone(), n, UP_WINDOW))).await?;
        let raw_up = with_cpu(n, on_tether(up_raw(raw_addr, n))).await?;
        let tether_up_default =
            on_tether(up_tether(session.clone(), n, DEFAULT_QUEUE_WINDOW)).await?;
        Ok::<_, String>((
            tether_down,
            raw_down,
            raw_down_handed,
            tether_up,
            raw_up,
            tether_up_default,
        ))
    }
    .await;

    let s = session.clone();
    let _ = on_tether(async move {
        s.close().await;
        Ok(())
    })
    .await;
    raw_server.abort();
    server.shutdown(Duration::from_secs(1)).await;
    let (tether_down, raw_down, raw_down_handed, tether_up, raw_up, tether_up_default) = result?;
    let note = format!("{n} messages of {PAYLOAD} B each way");
    let cpu_note = "CPU time of every thread of the bench process (the in-process server, the \
                    client, the publisher or sender) over the phase, divided by the messages: \
                    what a message costs, however the threads were scheduled";
    Ok(vec![
        Sample::new(
            "b.down",
            "one session: topic updates server → client",
            Unit::PerSec,
            tether_down.0,
        )
        .baseline(raw_down.0)
        .target(Target::RatioAtLeast(0.7))
        .note(note.clone()),
        Sample::new(
            "b.down.cpu",
            "server → client: CPU per message, server and client together (info)",
            Unit::Ns,
            tether_down.1,
        )
        .baseline(raw_down.1)
        .note(cpu_note),
        Sample::new(
            "b.down.handed",
            "server → client, raw client handing each message to a consumer task (info)",
            Unit::PerSec,
            tether_down.0,
        )
        .baseline(raw_down_handed)
        .note(
            "the raw client passes every message through a channel to another task, as a \
             Subscription stream hands updates to the application; the row above counts them \
             on the reading task",
        ),
        Sample::new(
            "b.up",
            "one session: publishes client → server",
            Unit::PerSec,
            tether_up.0,
        )
        .baseline(raw_up.0)
        .target(Target::RatioAtLeast(0.7))
        .note(format!(
            "{note}; a window of {UP_WINDOW} completions, the session's send queue raised to \
             {} requests",
            UP_QUEUE.0
        )),
        Sample::new(
            "b.up.default_queue",
            "client → server within the default send queue (info)",
            Unit::PerSec,
            tether_up_default,
        )
        .baseline(raw_up.0)
        .note(format!(
            "a window of {DEFAULT_QUEUE_WINDOW} completions, which the client's default send \
             queue ({} requests) allows: the sender waits on round trips through TCP's buffers",
            default_send_queue()
        )),
        Sample::new(
            "b.up.cpu",
            "client → server: CPU per message, client and server together (info)",
            Unit::Ns,
            tether_up.1,
        )
        .baseline(raw_up.1)
        .note(cpu_note),
    ])
}

/// What `phase` measures, and the CPU time the whole process spent per message (of `n`)
/// meanwhile.
pub(crate) async fn with_cpu<T>(
    n: u64,
    phase: impl std::future::Future<Output = Result<T, String>>,
) -> Result<(T, f64), String> {
    let before = process_cpu()?;
    let measured = phase.await?;
    let spent = process_cpu()?.saturating_sub(before);
    Ok((measured, spent.as_nanos() as f64 / n as f64))
}

/// CPU time of every thread of this process so far: the first field of each thread's
/// `/proc/self/task/<tid>/schedstat` (nanoseconds on a CPU). Threads that ended are not
/// counted, so a phase is measured between two reads while its threads live.
fn process_cpu() -> Result<Duration, String> {
    let tasks =
        std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        // A thread that ended between the listing and the read is skipped.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Duration::from_nanos(total))
}

/// The publisher runs here (the server's runtime), the subscriber on Tether's runtime.
async fn down_tether(server: &Server, session: Session, n: u64) -> Result<f64, String> {
    let mut sub = on_tether(async move {
        session
            .subscribe(TOPIC_DOWN)
            .await
            .map_err(|e| format!("subscribe: {e}"))
    })
    .await?;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let (r, p) = (received.clone(), progress.clone());
    let handle = tether::runtime::handle().map_err(|e| e.to_string())?;
    let consumer = handle.spawn(async move {
        let mut got = 0u64;
        while got < n {
            match sub.next().await {
                Some(u) if u.snapshot => {}
                Some(_) => {
                    got += 1;
                    if got.is_multiple_of(512) || got == n {
                        r.store(got, Ordering::Release);
                        p.notify_one();
                    }
                }
                _ => return Err(format!("subscriber received {got} of {n}")),
            }
        }
        Ok(Instant::now())
    });
    let payload = Bytes::from(vec![0x5a; PAYLOAD]);
    let t0 = Instant::now();
    for i in 0..n {
        while i.saturating_sub(received.load(Ordering::Acquire)) >= DOWN_WINDOW {
            if tokio::time::timeout(STALL, progress.notified())
                .await
                .is_err()
            {
                consumer.abort();
                return Err(format!("server → client stalled after {i} messages"));
            }
        }
        server
            .publish(TOPIC_DOWN, payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    let end = tokio::time::timeout(PHASE, consumer)
        .await
        .map_err(|_| "server → client took too long".to_string())?
        .map_err(|e| e.to_string())??;
    Ok(n as f64 / end.duration_since(t0).as_secs_f64())
}

/// `n` publishes through `session`, at most `window` awaiting their completion.
pub(crate) async fn up_tether(session: Session, n: u64, window: usize) -> Result<f64, String> {
    tokio::time::timeout(PHASE, up_tether_unbounded(session, n, window))
        .await
        .map_err(|_| "client → server took too long".to_string())?
}

async fn up_tether_unbounded(session: Session, n: u64, size: usize) -> Result<f64, String> {
    let payload = Bytes::from(vec![0x5a; PAYLOAD]);
    let mut window: VecDeque<tether::Completion> = VecDeque::with_capacity(size);
    let t0 = Instant::now();
    for _ in 0..n {
        if window.len() >= size
            && let Some(c) = window.pop_front()
        {
            c.await.map_err(|e| format!("publish: {e}"))?;
        }
        window.push_back(
            session
                .send(TOPIC_UP, payload.clone())
                .map_err(|e| format!("send: {e}"))?,
        );
    }
    for c in window {
        c.await.map_err(|e| format!("publish: {e}"))?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

async fn down_raw(addr: std::net::SocketAddr, n: u64) -> Result<f64, String> {
    tokio::time::timeout(PHASE, down_raw_unbounded(addr, n))
        .await
        .map_err(|_| "raw server → client took too long".to_string())?
}

async fn down_raw_unbounded(addr: std::net::SocketAddr, n: u64) -> Result<f64, String> {
    let mut ws = raw::connect(addr, &format!("/down/{n}")).await?;
    let t0 = Instant::now();
    let mut got = 0;
    while got < n {
        match ws.next().await {
            Some(Ok(Message::Binary(_))) => got += 1,
            Some(Ok(_)) => {}
            _ => return Err(format!("raw: received {got} of {n}")),
        }
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let _ = ws.close(None).await;
    Ok(rate)
}

/// [`down_raw`], with every message handed through a channel to a consumer task that counts
/// it: what a plain tokio-tungstenite application does to get messages from its reader to the
/// code that uses them, as Tether's `Subscription` does.
async fn down_raw_handed_on(addr: std::net::SocketAddr, n: u64) -> Result<f64, String> {
    let mut ws = raw::connect(addr, &format!("/down/{n}")).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let consumer = tokio::spawn(async move {
        let mut got = 0u64;
        while got < n {
            match rx.recv().await {
                Some(b) => {
                    std::hint::black_box(b);
                    got += 1;
                }
                None => return Err(format!("raw, handed on: received {got} of {n}")),
            }
        }
        Ok(Instant::now())
    });
    let t0 = Instant::now();
    let mut read = 0;
    while read < n {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                read += 1;
                if tx.send(b).is_err() {
                    break;
                }
            }
            Some(Ok(_)) => {}
            _ => return Err(format!("raw, handed on: read {read} of {n}")),
        }
    }
    let end = tokio::time::timeout(PHASE, consumer)
        .await
        .map_err(|_| "raw server → client, handed on, took too long".to_string())?
        .map_err(|e| e.to_string())??;
    let _ = ws.close(None).await;
    Ok(n as f64 / end.duration_since(t0).as_secs_f64())
}

async fn up_raw(addr: std::net::SocketAddr, n: u64) -> Result<f64, String> {
    let mut ws = raw::connect(addr, &format!("/up/{n}")).await?;
    let message = Message::Binary(Bytes::from(vec![0x5a; PAYLOAD]));
    let t0 = Instant::now();
    for i in 0..n {
        ws.feed(message.clone()).await.map_err(|e| e.to_string())?;
        if i % 256 == 255 {
            ws.flush().await.map_err(|e| e.to_string())?;
        }
    }
    ws.flush().await.map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(STALL, ws.next()).await {
            Ok(Some(Ok(Message::Binary(_)))) => break,
            Ok(Some(Ok(_))) => {}
            _ => return Err("raw: no answer after the upload".into()),
        }
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let _ = ws.close(None).await;
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_up_window_fits_in_the_send_queue_it_is_measured_with() {
        assert!(DEFAULT_QUEUE_WINDOW <= default_send_queue());
        assert!(UP_WINDOW <= UP_QUEUE.0);
        assert!(
            UP_WINDOW > default_send_queue(),
            "otherwise no second row is needed"
        );
    }
}
