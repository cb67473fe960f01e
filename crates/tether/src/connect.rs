//! Opening one WebSocket connection with the session fields in the upgrade.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use tether_protocol::CloseReason;
use tether_protocol::handshake::{HEADER_REASON, SessionAccepted, SessionRequest, refusal_reason};

use crate::Error;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest message the client accepts from a server.
const MAX_INCOMING: usize = 64 << 20;

/// Checks a URL before anything is attempted.
pub(crate) fn check_url(url: &str) -> Result<(), Error> {
    let parsed = url::Url::parse(url).map_err(|e| Error::InvalidUrl {
        url: url.to_owned(),
        message: e.to_string(),
    })?;
    match parsed.scheme() {
        "ws" => {}
        "wss" => {
            return Err(Error::InvalidUrl {
                url: url.to_owned(),
                message: "wss:// (TLS) is not supported by this build yet; use ws://".into(),
            });
        }
        other => {
            return Err(Error::InvalidUrl {
                url: url.to_owned(),
                message: format!("scheme {other:?} is not ws"),
            });
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::InvalidUrl {
            url: url.to_owned(),
            message: "no host".into(),
        });
    }
    Ok(())
}

/// Checks that the request's fields can travel as header values.
pub(crate) fn check_request(url: &str, request: &SessionRequest) -> Result<(), Error> {
    build(url, request).map(|_| ())
}

fn build(
    url: &str,
    request: &SessionRequest,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, Error> {
    let mut req = url.into_client_request().map_err(|e| Error::InvalidUrl {
        url: url.to_owned(),
        message: e.to_string(),
    })?;
    for (name, value) in request.to_headers() {
        let value = HeaderValue::from_str(&value).map_err(|_| {
            Error::InvalidArgument(format!("{name} contains characters a header cannot carry"))
        })?;
        req.headers_mut().insert(name, value);
    }
    Ok(req)
}

/// A failed connection attempt: the typed reason and details.
pub(crate) type Failure = (CloseReason, String);

/// Opens a connection and reads the server's answer from the upgrade response.
pub(crate) async fn connect(
    url: &str,
    request: &SessionRequest,
    timeout: Duration,
) -> Result<(Ws, SessionAccepted), Failure> {
    let req = build(url, request).map_err(|e| (CloseReason::HandshakeError, e.to_string()))?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INCOMING))
        .max_frame_size(Some(MAX_INCOMING));
    let attempt = tokio_tungstenite::connect_async_with_config(req, Some(config), true);
    let (ws, response) = match tokio::time::timeout(timeout, attempt).await {
        Err(_) => {
            return Err((
                CloseReason::ConnectionError,
                format!("no answer within {timeout:?}"),
            ));
        }
        Ok(Err(e)) => return Err(classify(e)),
        Ok(Ok(ok)) => ok,
    };
    let headers = response.headers();
    let accepted =
        SessionAccepted::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
            .map_err(|e| (e.reason(), format!("bad upgrade response: {e}")))?;
    Ok((ws, accepted))
}

fn classify(e: WsError) -> Failure {
    match e {
        WsError::Http(response) => {
            let reason_header = response
                .headers()
                .get(HEADER_REASON)
                .and_then(|v| v.to_str().ok());
            let reason = refusal_reason(response.status().as_u16(), reason_header);
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .unwrap_or_default();
            let message = if body.is_empty() {
                format!("server answered {}", response.status())
            } else {
                body
            };
            (reason, message)
        }
        WsError::Io(e) => (CloseReason::ConnectionError, e.to_string()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => (
            CloseReason::ConnectionError,
            "connection closed during the upgrade".into(),
        ),
        WsError::Protocol(ProtocolError::HandshakeIncomplete) => (
            CloseReason::ConnectionError,
            "connection closed during the upgrade".into(),
        ),
        WsError::Url(e) => (CloseReason::HandshakeError, e.to_string()),
        other => (CloseReason::HandshakeError, other.to_string()),
    }
}
