//! The baseline: a plain tokio-tungstenite server and client, nothing else.
//!
//! The server picks its behaviour from the request path: `/down/N` sends N messages of
//! [`PAYLOAD`] bytes, `/up/N` reads N messages and answers `done`, `/sub` joins the broadcast
//! and `/pub` writes every message it sends to every `/sub` connection (the baseline of
//! fan-out: one writer task per subscriber, woken per message, coalescing what is queued into
//! one flush, as a plain broadcast server would), anything else (`/idle`) just reads until the
//! peer leaves.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Message size of measure (b).
pub(crate) const PAYLOAD: usize = 100;

/// A raw client connection.
pub(crate) type RawWs = WebSocketStream<TcpStream>;

/// The raw server on a free loopback port, served on this runtime until the returned task is
/// aborted: its address and its task.
pub(crate) async fn start_local()
-> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| format!("raw server: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((addr, tokio::spawn(serve(listener))))
}

/// Accepts connections until the task is dropped.
pub(crate) async fn serve(listener: TcpListener) {
    serve_with(listener, None).await
}

/// [`serve`] with a WebSocket configuration (tungstenite's default when `None`).
pub(crate) async fn serve_with(listener: TcpListener, config: Option<WebSocketConfig>) {
    let subscribers = Subscribers::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle(stream, config, subscribers.clone()));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

// The upgrade callback's error type is tungstenite's, large or not.
#[allow(clippy::result_large_err)]
async fn handle(stream: TcpStream, config: Option<WebSocketConfig>, subscribers: Subscribers) {
    let mut path = String::new();
    let mut queue = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        path = req.uri().path().to_owned();
        if path == "/sub" {
            // Joined before the upgrade is answered: a publisher that starts once every
            // subscriber's upgrade is done reaches them all.
            let (tx, rx) = mpsc::unbounded_channel();
            if let Ok(mut list) = subscribers.lock() {
                list.push(tx);
            }
            queue = Some(rx);
        }
        Ok(resp)
    };
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, config).await
    else {
        return;
    };
    let mut parts = path.trim_start_matches('/').split('/');
    let mode = parts.next().unwrap_or("");
    let count = parts.next().and_then(|n| n.parse::<u64>().ok());
    match (mode, count) {
        ("down", Some(n)) => {
            let message = Message::Binary(Bytes::from(vec![0x5a; PAYLOAD]));
            for i in 0..n {
                if ws.feed(message.clone()).await.is_err() {
                    return;
                }
                // As Tether's writer does: write batches, flush every 256.
                if i % 256 == 255 && ws.flush().await.is_err() {
                    return;
                }
            }
            if ws.flush().await.is_err() {
                return;
            }
        }
        ("up", Some(n)) => {
            let mut got = 0;
            while got < n {
                match ws.next().await {
                    Some(Ok(Message::Binary(_))) => got += 1,
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
            if ws
                .send(Message::Binary(Bytes::from_static(b"done")))
                .await
                .is_err()
            {
                return;
            }
        }
        ("sub", _) => {
            let Some(rx) = queue else { return };
            let (sink, mut stream) = ws.split();
            tokio::spawn(broadcast_writer(sink, rx));
            while let Some(Ok(_)) = stream.next().await {}
            return;
        }
        ("pub", _) => {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Binary(bytes) = message
                    && let Ok(mut list) = subscribers.lock()
                {
                    list.retain(|tx| tx.send(bytes.clone()).is_ok());
                }
            }
            return;
        }
        _ => {}
    }
    while let Some(Ok(_)) = ws.next().await {}
}

/// The broadcast's subscribers: a queue to each one's writer.
type Subscribers = Arc<Mutex<Vec<mpsc::UnboundedSender<Bytes>>>>;

/// Writes what the broadcast queued for one subscriber: everything waiting, then one flush.
async fn broadcast_writer(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) {
    while let Some(first) = rx.recv().await {
        if sink.feed(Message::Binary(first)).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(Message::Binary(more)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// TCP connect + WebSocket upgrade, as Tether's client does it (no delay, no TLS).
pub(crate) async fn connect(addr: std::net::SocketAddr, path: &str) -> Result<RawWs, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("raw connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
        .await
        .map_err(|e| format!("raw upgrade with {addr}: {e}"))?;
    Ok(ws)
}
