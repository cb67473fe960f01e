//! Reading the HTTP upgrade request and writing the answer, by hand: the session is opened or
//! resumed (asynchronously: password checks run off the async workers) between the two.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use tether_protocol::CloseReason;
use tether_protocol::handshake::{HEADER_REASON, refusal_status};

/// Largest upgrade request head accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A parsed upgrade request.
pub(crate) struct UpgradeRequest {
    /// Header names in lower case.
    pub(crate) headers: HashMap<String, String>,
    pub(crate) key: String,
    /// Bytes read after the head (a client may pipeline its first frames).
    pub(crate) rest: Vec<u8>,
}

/// Why the request could not be used.
pub(crate) enum RequestError {
    /// Nothing to answer: the peer went away or was too slow.
    Gone,
    /// Answer with a refusal.
    Refuse(CloseReason, String),
}

/// Reads the request head within `timeout`.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<UpgradeRequest, RequestError> {
    match tokio::time::timeout(timeout, read_head(stream)).await {
        Ok(result) => result,
        Err(_) => Err(RequestError::Gone),
    }
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<UpgradeRequest, RequestError> {
    // Read straight into the heap buffer: a stack array here would live in every
    // connection's task for as long as the connection, long after the upgrade.
    let mut buf = Vec::with_capacity(2048);
    loop {
        buf.reserve(1024);
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|_| RequestError::Gone)?;
        if n == 0 {
            return Err(RequestError::Gone);
        }
        if let Some(request) = parse_head(&buf)? {
            return Ok(request);
        }
    }
}

/// Parses an upgrade request head: `Ok(None)` while incomplete. Pure, so it can be fuzzed.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<UpgradeRequest>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if req.method != Some("GET") {
                return Err(refuse("the upgrade request must be a GET"));
            }
            let mut map = HashMap::new();
            for h in req.headers.iter() {
                let value =
                    std::str::from_utf8(h.value).map_err(|_| refuse("a header is not UTF-8"))?;
                map.insert(h.name.to_ascii_lowercase(), value.trim().to_owned());
            }
            let upgrade = map
                .get("upgrade")
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
            let connection = map.get("connection").is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            });
            if !upgrade || !connection {
                return Err(refuse("not a WebSocket upgrade request"));
            }
            if map.get("sec-websocket-version").map(String::as_str) != Some("13") {
                return Err(refuse("unsupported WebSocket version (13 expected)"));
            }
            let key = map
                .get("sec-websocket-key")
                .cloned()
                .ok_or_else(|| refuse("missing Sec-WebSocket-Key"))?;
            let rest = buf[len..].to_vec();
            Ok(Some(UpgradeRequest {
                headers: map,
                key,
                rest,
            }))
        }
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err(refuse("upgrade request head too large"));
            }
            Ok(None)
        }
        Err(e) => Err(refuse(&format!("malformed upgrade request: {e}"))),
    }
}

fn refuse(message: &str) -> RequestError {
    RequestError::Refuse(CloseReason::HandshakeError, message.to_owned())
}

/// Writes a refusal: an HTTP error status, the reason header and a short text body.
pub(crate) async fn write_refusal<S: AsyncWrite + Unpin>(
    stream: &mut S,
    reason: CloseReason,
    message: &str,
    retry_after: Option<std::time::Duration>,
) {
    let status = refusal_status(reason);
    let text = match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let body = format!("{reason}: {message}\n");
    let hints: String = retry_after
        .map(tether_protocol::handshake::retry_after_headers)
        .into_iter()
        .flatten()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let response = format!(
        "HTTP/1.1 {status} {text}\r\n{HEADER_REASON}: {reason}\r\n{hints}content-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // The peer may already be gone; there is nothing more to tell it then.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Writes the `101 Switching Protocols` answer with the session's headers.
pub(crate) async fn write_accept<S: AsyncWrite + Unpin>(
    stream: &mut S,
    key: &str,
    headers: &[(&'static str, String)],
) -> std::io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    for (name, value) in headers {
        response.push_str(name);
        response.push_str(": ");
        response.push_str(value);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).await
}

/// Fuzz target: parses an upgrade request head, then its session fields. Never panics.
#[doc(hidden)]
pub fn fuzz_upgrade_head(data: &[u8]) {
    if let Ok(Some(request)) = parse_head(data) {
        let _ = tether_protocol::handshake::SessionRequest::from_headers(|name| {
            request.headers.get(name).map(String::as_str)
        });
        assert!(request.rest.len() <= data.len());
    }
}

/// Valid upgrade heads to mutate from.
#[doc(hidden)]
pub fn fuzz_seeds() -> Vec<Vec<u8>> {
    let base = "GET / HTTP/1.1\r\nhost: h\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                x-tether-version: 1\r\n";
    vec![
        format!("{base}x-tether-principal: p\r\nx-tether-credentials: c\r\n\r\n").into_bytes(),
        format!(
            "{base}x-tether-session: 0101010101010101010101010101010a\r\n\
             x-tether-token: 0202020202020202020202020202020b\r\nx-tether-received: 4\r\n\
             x-tether-positions: 1:2,3:4\r\n\r\n"
        )
        .into_bytes()
        .into_iter()
        .chain([0x82, 0x00])
        .collect(),
    ]
}

#[cfg(test)]
mod tests {
    use tether_protocol::fuzz::{Rng, mutate};

    #[test]
    fn the_upgrade_parser_survives_a_bounded_fuzz_run() {
        let seeds = super::fuzz_seeds();
        for s in &seeds {
            assert!(
                matches!(super::parse_head(s), Ok(Some(_))),
                "seeds are valid"
            );
        }
        let mut rng = Rng::new(0xfeed);
        for _ in 0..20_000 {
            let pick = rng.below(seeds.len());
            let input = mutate(&mut rng, &seeds[pick]);
            super::fuzz_upgrade_head(&input);
        }
    }
}
