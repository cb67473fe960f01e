//! Accepting connections: admission (rate limit), TLS, the upgrade head, then open or resume.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tracing::{Instrument, debug, info, warn};

use tether_protocol::CloseReason;
use tether_protocol::handshake::{self, SessionRequest};

use crate::handshake::{RequestError as UpgradeError, read_request, write_accept, write_refusal};

use super::*;
use tether_io::BulkReader;

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = stop.notified() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        handle_connection(&shared, stream, peer).await;
                        if shared.connections.fetch_sub(1, Ordering::SeqCst) == 1 {
                            shared.connections_done.notify_waiters();
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// What a successful open/resume hands to the connection tasks.
pub(super) struct Admitted {
    pub(super) slot: Arc<Slot>,
    pub(super) generation: u64,
    pub(super) headers: Vec<(&'static str, String)>,
}

pub(super) async fn handle_connection(shared: &Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    // The upgrade's state (TLS, reading the head, authentication) is boxed: it is needed for
    // a moment, and inline it would size every connection's task for the connection's life.
    let Some((stream, admitted, rest, answer)) = Box::pin(upgrade(shared, tcp, peer)).await else {
        return;
    };
    let id = admitted.slot.id;
    let max = shared.config.limits.max_frame_bytes;
    // tungstenite zero-fills its read buffer on a connection's first read, so its size is
    // paid by every idle session: its default 128 KiB would dominate. 1 KiB it is; a client
    // that streams is read 64 KiB at a time all the same (see `tether_io::BulkReader`).
    const READ_BUFFER: usize = 1024;
    // Room for a batch's length prefixes: each frame is checked against the limit itself.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max + 16))
        .max_frame_size(Some(max + 16));
    let rest = tether_protocol::handshake::read_buffer_after_upgrade(&rest, READ_BUFFER);
    let mut ws =
        WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(ws_config)).await;
    // A browser's request came in subprotocol values: its answer is the first message.
    if let Some(answer) = answer
        && let Err(e) = ws.send(Message::Binary(answer.into())).await
    {
        debug!(session = %id, error = %e, "peer left before the answer");
        shared.connection_lost(&admitted.slot, admitted.generation);
        return;
    }
    let span = tracing::info_span!("session", session = %id);
    run_connection(shared.clone(), admitted.slot, admitted.generation, ws)
        .instrument(span)
        .await;
}

/// TLS, the upgrade head, admission and the accept: the connection's stream, its session, the
/// bytes read past the head and, for a request carried in subprotocol values (a browser's),
/// the answer to send as the first message.
pub(super) async fn upgrade(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(BoxIo, Admitted, Vec<u8>, Option<Vec<u8>>)> {
    let timeout = Duration::from_millis(shared.config.limits.handshake_timeout_ms);
    let over_rate = !shared.admit_attempt(peer.ip());
    let mut stream: BoxIo = match &shared.tls {
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Box::new(BulkReader::new(tls)),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake too slow");
                return None;
            }
        },
        None => Box::new(BulkReader::new(tcp)),
    };
    if over_rate {
        info!(%peer, "too many connection attempts from this address");
        shared.metrics.refused(CloseReason::LimitExceeded);
        write_refusal(
            &mut stream,
            CloseReason::LimitExceeded,
            "too many connection attempts from this address",
            None,
        )
        .await;
        return None;
    }
    let request = match read_request(&mut stream, timeout).await {
        Ok(r) => r,
        Err(UpgradeError::Gone) => {
            debug!(%peer, "connection closed or too slow before the upgrade");
            return None;
        }
        Err(UpgradeError::Refuse(reason, message)) => {
            debug!(%peer, %reason, %message, "upgrade refused");
            shared.metrics.refused(reason);
            write_refusal(&mut stream, reason, &message, None).await;
            return None;
        }
    };
    // A browser cannot set headers: its fields come in `Sec-WebSocket-Protocol` values, and
    // it hears the answer (a refusal too) in the first message after a `101`.
    let carried = match request.headers.get(handshake::HEADER_SUBPROTOCOL) {
        Some(offered) => handshake::from_subprotocols(offered),
        None => Ok(None),
    };
    let (fields, in_band): (&HashMap<String, String>, _) = match carried {
        Ok(None) => (&request.headers, None),
        Ok(Some(headers)) => (&headers.into_iter().collect(), Some(request.key.as_str())),
        Err(e) => {
            let in_band = Some(request.key.as_str());
            shared
                .refuse_with_hint(&mut stream, peer, e.reason(), &e.to_string(), in_band)
                .await;
            return None;
        }
    };
    let get = |name: &str| fields.get(name).map(String::as_str);
    // Opens and resumes in progress are bounded: past the bound, the client is told to come
    // back later rather than kept waiting.
    let Some(_upgrading) = UpgradeSlot::take(shared) else {
        shared
            .refuse_with_hint(
                &mut stream,
                peer,
                CloseReason::ServerBusy,
                "too many opens and resumes in progress; try again shortly",
                in_band,
            )
            .await;
        return None;
    };
    let parsed = SessionRequest::from_headers(get);
    let admitted = match parsed {
        Err(e) => Err((e.reason(), e.to_string())),
        Ok(SessionRequest::Open {
            principal,
            credentials,
            auth_token,
            reconnect_timeout,
        }) => {
            shared
                .open(principal, credentials, auth_token, reconnect_timeout)
                .await
        }
        Ok(SessionRequest::Resume {
            session,
            token,
            received,
            positions,
            confirmed,
        }) => {
            shared
                .resume(session, &token, received, &positions, confirmed)
                .await
        }
    };
    let mut admitted = match admitted {
        Ok(a) => a,
        Err((reason, message)) => {
            shared
                .refuse_with_hint(&mut stream, peer, reason, &message, in_band)
                .await;
            return None;
        }
    };
    // Several frames per message, if the client can (every Tether client since batching).
    let batched = tether_protocol::handshake::SessionRequest::wants_batch(get);
    if batched {
        admitted
            .headers
            .push((tether_protocol::handshake::HEADER_BATCH, "1".into()));
    }
    // The ping period the client asked for, within the server's bounds.
    let ping = shared
        .config
        .granted_ping(tether_protocol::handshake::SessionRequest::wanted_ping(get));
    for (name, value) in admitted.headers.iter_mut() {
        if *name == tether_protocol::handshake::HEADER_PING {
            *value = ping.as_millis().to_string();
        }
    }
    {
        let mut inner = lock(&admitted.slot.inner);
        inner.proto.set_batched(batched);
        inner.proto.set_ping_period(ping, Instant::now());
    }
    let answer = in_band.map(|_| handshake::accepted_answer(&admitted.headers));
    if in_band.is_some() {
        admitted
            .headers
            .push((handshake::HEADER_SUBPROTOCOL, handshake::SUBPROTOCOL.into()));
    }
    if let Err(e) = write_accept(&mut stream, &request.key, &admitted.headers).await {
        debug!(session = %admitted.slot.id, error = %e, "peer left during the upgrade");
        shared.connection_lost(&admitted.slot, admitted.generation);
        return None;
    }
    Some((stream, admitted, request.rest, answer))
}

impl Shared {
    /// Token bucket per address: `false` when `ip` has used up its connection attempts.
    pub(super) fn admit_attempt(&self, ip: std::net::IpAddr) -> bool {
        let rate = self
            .config
            .limits
            .connection_attempts_per_second_per_address;
        if rate == 0 {
            return true;
        }
        let rate = f64::from(rate);
        let now = Instant::now();
        let mut attempts = lock(&self.attempts);
        if attempts.len() > 100_000 {
            // Forget addresses whose bucket has refilled: they are indistinguishable from new.
            attempts.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < rate
            });
        }
        let (tokens, at) = attempts.entry(ip).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One open or resume in progress, counted against `limits.max_pending_upgrades`.
pub(super) struct UpgradeSlot<'a>(&'a Shared);

impl<'a> UpgradeSlot<'a> {
    fn take(shared: &'a Shared) -> Option<UpgradeSlot<'a>> {
        let limit = shared.config.limits.max_pending_upgrades;
        let before = shared.upgrading.fetch_add(1, Ordering::SeqCst);
        if before >= limit {
            shared.upgrading.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(UpgradeSlot(shared))
    }
}

impl Drop for UpgradeSlot<'_> {
    fn drop(&mut self) {
        self.0.upgrading.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// Refuses an open or resume; a server that is draining or busy adds its retry-after hint.
    /// A request carried in subprotocol values (`in_band`: its `Sec-WebSocket-Key`) hears it
    /// in the first message after a `101`: a page cannot read an HTTP refusal.
    pub(super) async fn refuse_with_hint(
        &self,
        stream: &mut BoxIo,
        peer: SocketAddr,
        reason: CloseReason,
        message: &str,
        in_band: Option<&str>,
    ) {
        info!(%peer, %reason, %message, "session refused");
        self.metrics.refused(reason);
        let hint = matches!(
            reason,
            CloseReason::ServerDraining | CloseReason::ServerBusy
        )
        .then(|| self.config.retry_after());
        if hint.is_some() {
            self.metrics.retry_afters.inc();
        }
        match in_band {
            None => write_refusal(stream, reason, message, hint).await,
            Some(key) => {
                let timeout = Duration::from_millis(self.config.limits.handshake_timeout_ms);
                refuse_in_band(stream, key, reason, message, hint, timeout).await;
            }
        }
    }
}

/// A refusal as a carrier answer: `101` selecting the carrier, the refusal as the first
/// message, and a close handshake (waited for, briefly, so that closing the socket cannot
/// reset the connection before the page has read the refusal).
async fn refuse_in_band(
    stream: &mut BoxIo,
    key: &str,
    reason: CloseReason,
    message: &str,
    hint: Option<Duration>,
    timeout: Duration,
) {
    let selected = [(handshake::HEADER_SUBPROTOCOL, handshake::SUBPROTOCOL.into())];
    if write_accept(&mut *stream, key, &selected).await.is_err() {
        return;
    }
    let mut ws = WebSocketStream::from_raw_socket(&mut *stream, Role::Server, None).await;
    let answer = handshake::refusal_answer(reason, message, hint);
    let close = CloseFrame {
        code: CloseCode::Policy,
        reason: reason.as_str().into(),
    };
    let goodbye = async {
        ws.send(Message::Binary(answer.into())).await?;
        ws.close(Some(close)).await?;
        while let Some(message) = ws.next().await {
            message?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let _ = tokio::time::timeout(timeout, goodbye).await;
}
