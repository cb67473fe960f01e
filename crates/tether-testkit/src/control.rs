//! Minimal HTTP/1.1 control API for a [`FaultProxy`].
//!
//! One request per connection, answered with `Connection: close` and a JSON
//! body. See the crate README for the endpoints.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{CutMode, FaultProxy};

/// Largest accepted request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body that is read and discarded.
const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default and largest `timeout_ms` of `GET /wait`.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
const MAX_WAIT_MS: u64 = 10 * 60 * 1000;
/// Largest accepted `ms` of `POST /delay` and `POST /refuse` (one hour).
const MAX_MS: u64 = 60 * 60 * 1000;
/// Pause after a failed `accept` so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Serves the HTTP control API for `proxy` on `listen`.
///
/// Returns the bound address (useful with port 0) and the handle of the
/// server task; abort the handle to stop serving. The server holds a clone of
/// `proxy`, so the proxy stays up while the server runs unless
/// [`FaultProxy::shutdown`] is called.
pub async fn serve_control(
    proxy: FaultProxy,
    listen: SocketAddr,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    info!(control = %addr, "control API listening");
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        if let Err(error) = handle_connection(&proxy, stream).await {
                            debug!(%peer, %error, "control connection failed");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "control accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    });
    Ok((addr, task))
}

/// Errors answered with a 4xx status and `{"error": message}`.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("timed out reading the request")]
    ReadTimeout,
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method {method} not allowed on {path} (use {allowed})")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("bad parameter {name:?}: {reason}")]
    BadParam { name: String, reason: String },
    #[error("timed out after {timeout_ms} ms waiting for {what}")]
    WaitTimeout { timeout_ms: u64, what: String },
    #[error("reading the request failed: {0}")]
    Io(#[from] io::Error),
}

impl ApiError {
    fn status(&self) -> u16 {
        match self {
            ApiError::Malformed(_) | ApiError::BadParam { .. } | ApiError::Io(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::ReadTimeout | ApiError::WaitTimeout { .. } => 408,
            ApiError::BodyTooLarge => 413,
            ApiError::HeadTooLarge => 431,
        }
    }

    fn bad(name: &str, reason: impl Into<String>) -> ApiError {
        ApiError::BadParam {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A parsed request line; headers other than `Content-Length` are ignored.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
}

async fn handle_connection(proxy: &FaultProxy, mut stream: TcpStream) -> io::Result<()> {
    let (status, body) = match respond(proxy, &mut stream).await {
        Ok(body) => (200, body),
        Err(error) => {
            let mut body = Map::new();
            body.insert("error".into(), Value::String(error.to_string()));
            if matches!(error, ApiError::WaitTimeout { .. }) {
                // Include the counters, which help to see what went wrong.
                if let Ok(Value::Object(stats)) = serde_json::to_value(proxy.stats()) {
                    body.extend(stats);
                }
            }
            (error.status(), Value::Object(body))
        }
    };
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

async fn respond(proxy: &FaultProxy, stream: &mut TcpStream) -> Result<Value, ApiError> {
    let request = tokio::time::timeout(READ_TIMEOUT, read_request(stream))
        .await
        .map_err(|_| ApiError::ReadTimeout)??;
    debug!(method = %request.method, path = %request.path, "control request");
    route(proxy, &request).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// Reads the request head (and discards any body announced by `Content-Length`).
async fn read_request(stream: &mut TcpStream) -> Result<Request, ApiError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(ApiError::HeadTooLarge);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ApiError::Malformed(
                "connection closed before end of request head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ApiError::Malformed("request head is not UTF-8"))?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::Malformed("expected \"METHOD /path HTTP/1.1\""));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ApiError::Malformed("unsupported HTTP version"));
    }
    if !target.starts_with('/') {
        return Err(ApiError::Malformed("request target must start with '/'"));
    }
    let mut content_length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(ApiError::Malformed("header line without ':'"));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| ApiError::Malformed("invalid Content-Length"))?;
        }
    }
    if content_length > MAX_BODY {
        return Err(ApiError::BodyTooLarge);
    }
    // Discard the body so that closing the socket does not reset the response.
    let mut remaining = content_length.saturating_sub(buf.len() - head_end);
    while remaining > 0 {
        let want = remaining.min(chunk.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            break;
        }
        remaining -= n;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_owned(),
        path: percent_decode(path)
            .map_err(|_| ApiError::Malformed("bad percent-encoding in path"))?,
        query: parse_query(query)?,
    })
}

/// Index just past the blank line ending the head (`\r\n\r\n` or `\n\n`).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name).map_err(|reason| ApiError::bad(name, reason))?;
            let value = percent_decode(value).map_err(|reason| ApiError::bad(&name, reason))?;
            Ok((name, value))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or("truncated percent-escape")?;
                let hex = std::str::from_utf8(hex).map_err(|_| "bad percent-escape")?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| "bad percent-escape")?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decoded value is not UTF-8")
}

/// Query parameters of one request, checked against the endpoint's allowed names.
struct Params<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Params<'a> {
    fn new(request: &'a Request, allowed: &[&str]) -> Result<Self, ApiError> {
        if let Some((name, _)) = request
            .query
            .iter()
            .find(|(name, _)| !allowed.contains(&name.as_str()))
        {
            let reason = if allowed.is_empty() {
                format!("unknown parameter; {} takes none", request.path)
            } else {
                format!(
                    "unknown parameter; {} takes {}",
                    request.path,
                    allowed.join(", ")
                )
            };
            return Err(ApiError::bad(name, reason));
        }
        Ok(Params {
            pairs: &request.query,
        })
    }

    /// The last value given for `name`.
    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn u64(&self, name: &str, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let value: u64 = raw.parse().map_err(|_| {
            ApiError::bad(
                name,
                format!("expected a non-negative integer, got {raw:?}"),
            )
        })?;
        if value > max {
            return Err(ApiError::bad(name, format!("must be at most {max}")));
        }
        Ok(Some(value))
    }

    fn required_u64(&self, name: &str, max: u64) -> Result<u64, ApiError> {
        self.u64(name, max)?
            .ok_or_else(|| ApiError::bad(name, "missing"))
    }
}

fn ok() -> Value {
    json!({ "ok": true })
}

fn stats_value(proxy: &FaultProxy) -> Map<String, Value> {
    match serde_json::to_value(proxy.stats()) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

async fn route(proxy: &FaultProxy, request: &Request) -> Result<Value, ApiError> {
    let method = request.method.as_str();
    let allowed = match request.path.as_str() {
        "/cut" | "/stall" | "/refuse" | "/delay" | "/heal" | "/upstream" => "POST",
        "/status" | "/wait" => "GET",
        _ => return Err(ApiError::NotFound(request.path.clone())),
    };
    if method != allowed {
        return Err(ApiError::MethodNotAllowed {
            method: method.to_owned(),
            path: request.path.clone(),
            allowed,
        });
    }
    match request.path.as_str() {
        "/cut" => {
            let params = Params::new(request, &["mode"])?;
            let mode: CutMode = match params.get("mode") {
                None => CutMode::Rst,
                Some(raw) => raw
                    .parse()
                    .map_err(|e: crate::ParseCutModeError| ApiError::bad("mode", e.to_string()))?,
            };
            Ok(json!({ "cut": proxy.cut(mode) }))
        }
        "/stall" => {
            Params::new(request, &[])?;
            Ok(json!({ "stalled": proxy.stall() }))
        }
        "/refuse" => {
            let params = Params::new(request, &["ms"])?;
            let duration = match params.u64("ms", MAX_MS)? {
                None | Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
            };
            proxy.refuse(duration);
            Ok(ok())
        }
        "/delay" => {
            let params = Params::new(request, &["ms"])?;
            let ms = params.required_u64("ms", MAX_MS)?;
            proxy.set_delay(Duration::from_millis(ms));
            Ok(ok())
        }
        "/heal" => {
            Params::new(request, &[])?;
            proxy.heal();
            Ok(ok())
        }
        "/upstream" => {
            let params = Params::new(request, &["addr"])?;
            let raw = params
                .get("addr")
                .ok_or_else(|| ApiError::bad("addr", "missing"))?;
            let addr: SocketAddr = raw
                .parse()
                .map_err(|_| ApiError::bad("addr", format!("expected IP:PORT, got {raw:?}")))?;
            proxy.set_upstream(addr);
            Ok(ok())
        }
        "/status" => {
            Params::new(request, &[])?;
            Ok(Value::Object(stats_value(proxy)))
        }
        "/wait" => wait(proxy, request).await,
        _ => Err(ApiError::NotFound(request.path.clone())),
    }
}

async fn wait(proxy: &FaultProxy, request: &Request) -> Result<Value, ApiError> {
    let params = Params::new(request, &["forwarded", "refused", "timeout_ms"])?;
    let forwarded = params.u64("forwarded", u64::MAX)?;
    let refused = params.u64("refused", u64::MAX)?;
    if forwarded.is_none() && refused.is_none() {
        return Err(ApiError::bad(
            "forwarded",
            "give forwarded=N and/or refused=N",
        ));
    }
    let timeout = params
        .u64("timeout_ms", MAX_WAIT_MS)?
        .map_or(DEFAULT_WAIT, Duration::from_millis);
    let both = async {
        tokio::join!(
            async {
                if let Some(n) = forwarded {
                    proxy.wait_for_forwarded(n).await;
                }
            },
            async {
                if let Some(n) = refused {
                    proxy.wait_for_refused(n).await;
                }
            },
        )
    };
    if tokio::time::timeout(timeout, both).await.is_err() {
        let what = [("forwarded", forwarded), ("refused", refused)]
            .iter()
            .filter_map(|(name, n)| n.map(|n| format!("{name}>={n}")))
            .collect::<Vec<_>>()
            .join(" and ");
        return Err(ApiError::WaitTimeout {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            what,
        });
    }
    let mut body = stats_value(proxy);
    body.insert("ok".into(), Value::Bool(true));
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("127.0.0.1%3A80").as_deref(),
            Ok("127.0.0.1:80")
        );
        assert_eq!(percent_decode("a+b").as_deref(), Ok("a b"));
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    #[test]
    fn head_end_detection() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn query_parsing() {
        let pairs = parse_query("mode=fin&x&&y=%41").expect("valid query");
        assert_eq!(
            pairs,
            vec![
                ("mode".to_owned(), "fin".to_owned()),
                ("x".to_owned(), String::new()),
                ("y".to_owned(), "A".to_owned()),
            ]
        );
    }
}
