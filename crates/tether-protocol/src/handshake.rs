//! Session open and resume, carried inside the WebSocket upgrade.
//!
//! Opening or resuming a session costs no round trip beyond TCP and the upgrade: the request
//! fields ride in the upgrade request's headers and the answer in the `101 Switching Protocols`
//! response's headers. A refusal is an ordinary HTTP error response whose
//! [`HEADER_REASON`] names the [`CloseReason`].
//!
//! This module only maps fields to and from header name/value pairs; it does no I/O.

use std::fmt;
use std::time::Duration;

use crate::{CloseReason, Position};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Request and response: protocol version.
pub const HEADER_VERSION: &str = "x-tether-version";
/// Request: principal name (absent for anonymous).
pub const HEADER_PRINCIPAL: &str = "x-tether-principal";
/// Request: credentials (a password).
pub const HEADER_CREDENTIALS: &str = "x-tether-credentials";
/// Request (open): a signed token (JWT) naming the principal and its permissions, instead of
/// a principal and a password.
pub const HEADER_AUTH_TOKEN: &str = "x-tether-auth-token";
/// Request: requested reconnection timeout in ms (0 disables); response: granted timeout.
pub const HEADER_RECONNECT_TIMEOUT: &str = "x-tether-reconnect-timeout-ms";
/// Request (resume) and response: session id.
pub const HEADER_SESSION: &str = "x-tether-session";
/// Request (resume): current resume token; response: the new token.
pub const HEADER_TOKEN: &str = "x-tether-token";
/// Request (resume) and response: last sequence number received in order from the peer.
pub const HEADER_RECEIVED: &str = "x-tether-received";
/// Request (resume): last position seen per partition, `partition:offset,…`.
pub const HEADER_POSITIONS: &str = "x-tether-positions";
/// Request (resume): the client's requests up to this sequence number are completed (it has
/// their answers). Optional; absent means 0.
pub const HEADER_CONFIRMED: &str = "x-tether-confirmed";
/// Request (optional): the ping period the client would like, in ms (as MQTT's keepalive);
/// response: the period granted (the server keeps it within its bounds).
pub const HEADER_PING: &str = "x-tether-ping-ms";
/// Response: largest frame the server accepts, in bytes.
pub const HEADER_MAX_FRAME: &str = "x-tether-max-frame";
/// Request: the client can send and read batched messages (several frames per WebSocket
/// message, see [`crate::frame::push_to_batch`]); response: both sides batch on this connection.
pub const HEADER_BATCH: &str = "x-tether-batch";
/// Refusal response: the close reason's name.
pub const HEADER_REASON: &str = "x-tether-reason";
/// Refusal response (503): how long to wait before trying again, in ms (next to the standard
/// `Retry-After`, in whole seconds).
pub const HEADER_RETRY_AFTER_MS: &str = "x-tether-retry-after-ms";
/// Refusal response: the standard header, in whole seconds.
pub const HEADER_RETRY_AFTER: &str = "retry-after";

/// Most partitions listed in a resume request; more are left out (a single server does not
/// need them, a cluster falls back to the session sequence).
pub const MAX_RESUME_POSITIONS: usize = 64;

/// A 128-bit session identifier, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// From 16 bytes (the server draws them from a CSPRNG).
    pub fn from_bytes(bytes: [u8; 16]) -> SessionId {
        SessionId(bytes)
    }
    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Option<SessionId> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(SessionId(bytes))
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// A secret that proves the right to resume a session. Rotated on every resume. Its `Debug`
/// output is redacted so that it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumeToken([u8; 16]);

impl ResumeToken {
    /// From 16 bytes drawn from a CSPRNG.
    pub fn from_bytes(bytes: [u8; 16]) -> ResumeToken {
        ResumeToken(bytes)
    }
    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Option<ResumeToken> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(ResumeToken(bytes))
    }
    /// The raw bytes (compare them in constant time).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// The hex form sent in the header.
    pub fn to_header_value(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(<redacted>)")
    }
}

/// A session's resume tokens, as the server keeps them: the one handed out last, and the one
/// presented by the last successful resume.
///
/// Every resume rotates the token, but the answer carrying the new one can be lost (the
/// connection cut during the upgrade, the server killed just after): the client then still
/// holds the previous token. Accepting it once more, until the new one is used, keeps such a
/// session resumable; tokens still rotate on every resume and only ever the last two work.
/// Comparisons are constant-time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeTokens {
    current: ResumeToken,
    previous: Option<ResumeToken>,
}

impl ResumeTokens {
    /// A new session's token.
    pub fn new(current: ResumeToken) -> Self {
        ResumeTokens {
            current,
            previous: None,
        }
    }

    /// Tokens as stored (the current one and the previous one, if any).
    pub fn from_parts(current: ResumeToken, previous: Option<ResumeToken>) -> Self {
        ResumeTokens { current, previous }
    }

    /// The token to hand out.
    pub fn current(&self) -> &ResumeToken {
        &self.current
    }

    /// The token presented by the last successful resume, still accepted.
    pub fn previous(&self) -> Option<&ResumeToken> {
        self.previous.as_ref()
    }

    /// Whether `presented` may resume the session (the current token, or the previous one).
    pub fn accepts(&self, presented: &ResumeToken) -> bool {
        use subtle::ConstantTimeEq;
        let current = self.current.as_bytes().ct_eq(presented.as_bytes());
        let previous = match &self.previous {
            Some(p) => p.as_bytes().ct_eq(presented.as_bytes()),
            None => subtle::Choice::from(0),
        };
        bool::from(current | previous)
    }

    /// A resume presenting `presented` succeeded: `next` is handed out, `presented` stays
    /// valid until `next` is used.
    pub fn rotate(&mut self, presented: ResumeToken, next: ResumeToken) {
        self.previous = Some(presented);
        self.current = next;
    }
}

/// Why an upgrade request or response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A header the handshake needs is missing.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header's value could not be parsed.
    #[error("invalid value for header {0}")]
    Invalid(&'static str),
    /// The peer speaks another protocol version.
    #[error("protocol version {0} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version(String),
}

impl HandshakeError {
    /// The close reason to report for this error.
    pub fn reason(&self) -> CloseReason {
        match self {
            HandshakeError::Version(_) => CloseReason::ProtocolVersionMismatch,
            _ => CloseReason::HandshakeError,
        }
    }
}

/// What a client asks for in the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRequest {
    /// Open a new session.
    Open {
        /// Principal, or `None` for anonymous.
        principal: Option<String>,
        /// Password.
        credentials: Option<String>,
        /// A signed token (JWT) instead of a principal and a password.
        auth_token: Option<String>,
        /// Requested reconnection timeout; zero disables reconnection.
        reconnect_timeout: Duration,
    },
    /// Resume an existing session.
    Resume {
        /// The session to resume.
        session: SessionId,
        /// Its current resume token.
        token: ResumeToken,
        /// Last server sequence number received in order.
        received: u64,
        /// Last position seen per partition.
        positions: Vec<Position>,
        /// The client's requests up to here are completed (it has their answers), so a server
        /// continuing the session elsewhere need not answer them again.
        confirmed: u64,
    },
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

fn parse_u64(value: Option<&str>, name: &'static str) -> Result<u64, HandshakeError> {
    value
        .ok_or(HandshakeError::Missing(name))?
        .trim()
        .parse()
        .map_err(|_| HandshakeError::Invalid(name))
}

fn check_version(value: Option<&str>) -> Result<(), HandshakeError> {
    let v = value.ok_or(HandshakeError::Missing(HEADER_VERSION))?;
    if v.trim() == PROTOCOL_VERSION.to_string() {
        Ok(())
    } else {
        Err(HandshakeError::Version(v.chars().take(16).collect()))
    }
}

impl SessionRequest {
    /// The request headers (name, value).
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![(HEADER_VERSION, PROTOCOL_VERSION.to_string())];
        match self {
            SessionRequest::Open {
                principal,
                credentials,
                auth_token,
                reconnect_timeout,
            } => {
                if let Some(t) = auth_token {
                    h.push((HEADER_AUTH_TOKEN, t.clone()));
                }
                if let Some(p) = principal {
                    h.push((HEADER_PRINCIPAL, p.clone()));
                }
                if let Some(c) = credentials {
                    h.push((HEADER_CREDENTIALS, c.clone()));
                }
                h.push((HEADER_RECONNECT_TIMEOUT, ms(*reconnect_timeout)));
            }
            SessionRequest::Resume {
                session,
                token,
                received,
                positions,
                confirmed,
            } => {
                h.push((HEADER_SESSION, session.to_string()));
                h.push((HEADER_TOKEN, token.to_header_value()));
                h.push((HEADER_RECEIVED, received.to_string()));
                if *confirmed > 0 {
                    h.push((HEADER_CONFIRMED, confirmed.to_string()));
                }
                if !positions.is_empty() {
                    let list: Vec<String> = positions
                        .iter()
                        .take(MAX_RESUME_POSITIONS)
                        .map(|p| format!("{}:{}", p.partition, p.offset))
                        .collect();
                    h.push((HEADER_POSITIONS, list.join(",")));
                }
            }
        }
        h
    }

    /// The ping period a request asks for, if any (see [`HEADER_PING`]).
    pub fn wanted_ping<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Duration> {
        get(HEADER_PING)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
    }

    /// Whether a request asks for batched messages (see [`HEADER_BATCH`]).
    pub fn wants_batch<'a>(get: impl Fn(&str) -> Option<&'a str>) -> bool {
        get(HEADER_BATCH).is_some_and(|v| v.trim() == "1")
    }

    /// Reads a request from its headers; `get` looks a header up by lower-case name.
    pub fn from_headers<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<SessionRequest, HandshakeError> {
        check_version(get(HEADER_VERSION))?;
        if let Some(session) = get(HEADER_SESSION) {
            let session =
                SessionId::parse(session.trim()).ok_or(HandshakeError::Invalid(HEADER_SESSION))?;
            let token = get(HEADER_TOKEN).ok_or(HandshakeError::Missing(HEADER_TOKEN))?;
            let token =
                ResumeToken::parse(token.trim()).ok_or(HandshakeError::Invalid(HEADER_TOKEN))?;
            let received = parse_u64(get(HEADER_RECEIVED), HEADER_RECEIVED)?;
            let mut positions = Vec::new();
            if let Some(list) = get(HEADER_POSITIONS) {
                for item in list.split(',').filter(|s| !s.trim().is_empty()) {
                    let (p, o) = item
                        .trim()
                        .split_once(':')
                        .ok_or(HandshakeError::Invalid(HEADER_POSITIONS))?;
                    let partition = p
                        .parse()
                        .map_err(|_| HandshakeError::Invalid(HEADER_POSITIONS))?;
                    let offset = o
                        .parse()
                        .map_err(|_| HandshakeError::Invalid(HEADER_POSITIONS))?;
                    if positions.len() == MAX_RESUME_POSITIONS {
                        return Err(HandshakeError::Invalid(HEADER_POSITIONS));
                    }
                    positions.push(Position { partition, offset });
                }
            }
            let confirmed = match get(HEADER_CONFIRMED) {
                Some(v) => parse_u64(Some(v), HEADER_CONFIRMED)?,
                None => 0,
            };
            return Ok(SessionRequest::Resume {
                session,
                token,
                received,
                positions,
                confirmed,
            });
        }
        let reconnect_timeout = match get(HEADER_RECONNECT_TIMEOUT) {
            Some(v) => Duration::from_millis(
                v.trim()
                    .parse()
                    .map_err(|_| HandshakeError::Invalid(HEADER_RECONNECT_TIMEOUT))?,
            ),
            None => Duration::from_secs(60),
        };
        Ok(SessionRequest::Open {
            principal: get(HEADER_PRINCIPAL).map(str::to_owned),
            credentials: get(HEADER_CREDENTIALS).map(str::to_owned),
            auth_token: get(HEADER_AUTH_TOKEN).map(str::to_owned),
            reconnect_timeout,
        })
    }
}

/// The server's answer in a `101` upgrade response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAccepted {
    /// The session id (unchanged by a resume).
    pub session: SessionId,
    /// The token for the next resume.
    pub token: ResumeToken,
    /// The reconnection timeout the server grants (min of request and server maximum).
    pub reconnect_timeout: Duration,
    /// The ping period; one and a half periods of silence mean a dead connection.
    pub ping_period: Duration,
    /// Last client sequence number the server received in order.
    pub received: u64,
    /// Largest frame the server accepts.
    pub max_frame: usize,
    /// Both sides batch frames on this connection (see [`HEADER_BATCH`]).
    pub batch: bool,
}

impl SessionAccepted {
    /// The response headers.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (HEADER_VERSION, PROTOCOL_VERSION.to_string()),
            (HEADER_SESSION, self.session.to_string()),
            (HEADER_TOKEN, self.token.to_header_value()),
            (HEADER_RECONNECT_TIMEOUT, ms(self.reconnect_timeout)),
            (HEADER_PING, ms(self.ping_period)),
            (HEADER_RECEIVED, self.received.to_string()),
            (HEADER_MAX_FRAME, self.max_frame.to_string()),
        ];
        if self.batch {
            h.push((HEADER_BATCH, "1".to_string()));
        }
        h
    }

    /// Reads the response headers.
    pub fn from_headers<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<SessionAccepted, HandshakeError> {
        check_version(get(HEADER_VERSION))?;
        let session = get(HEADER_SESSION).ok_or(HandshakeError::Missing(HEADER_SESSION))?;
        let token = get(HEADER_TOKEN).ok_or(HandshakeError::Missing(HEADER_TOKEN))?;
        let ping = parse_u64(get(HEADER_PING), HEADER_PING)?;
        if ping == 0 {
            return Err(HandshakeError::Invalid(HEADER_PING));
        }
        Ok(SessionAccepted {
            session: SessionId::parse(session.trim())
                .ok_or(HandshakeError::Invalid(HEADER_SESSION))?,
            token: ResumeToken::parse(token.trim()).ok_or(HandshakeError::Invalid(HEADER_TOKEN))?,
            reconnect_timeout: Duration::from_millis(parse_u64(
                get(HEADER_RECONNECT_TIMEOUT),
                HEADER_RECONNECT_TIMEOUT,
            )?),
            ping_period: Duration::from_millis(ping),
            received: parse_u64(get(HEADER_RECEIVED), HEADER_RECEIVED)?,
            max_frame: usize::try_from(parse_u64(get(HEADER_MAX_FRAME), HEADER_MAX_FRAME)?)
                .map_err(|_| HandshakeError::Invalid(HEADER_MAX_FRAME))?,
            batch: get(HEADER_BATCH).is_some_and(|v| v.trim() == "1"),
        })
    }
}

/// The HTTP status a refusal is sent with.
pub fn refusal_status(reason: CloseReason) -> u16 {
    match reason {
        CloseReason::AuthenticationFailed => 401,
        CloseReason::AccessDenied => 403,
        CloseReason::UnknownSession => 404,
        CloseReason::ProtocolVersionMismatch => 426,
        CloseReason::LimitExceeded => 429,
        CloseReason::ClosedByServer | CloseReason::ServerDraining | CloseReason::ServerBusy => 503,
        _ => 400,
    }
}

/// The retry-after headers of a refusal (the precise one in ms and the standard one in
/// seconds, rounded up).
pub fn retry_after_headers(retry_after: std::time::Duration) -> [(&'static str, String); 2] {
    let ms = retry_after.as_millis();
    [
        (HEADER_RETRY_AFTER_MS, ms.to_string()),
        (HEADER_RETRY_AFTER, ms.div_ceil(1000).to_string()),
    ]
}

/// Reads a refusal's retry-after hint: the ms header, else the standard one (seconds; an
/// HTTP date is not understood and ignored). Absurd values are capped at an hour.
pub fn retry_after<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Duration> {
    let cap = Duration::from_secs(3600);
    if let Some(ms) = get(HEADER_RETRY_AFTER_MS).and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms).min(cap));
    }
    get(HEADER_RETRY_AFTER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(cap))
}

/// Reads a refusal: the reason header if present and known, else a guess from the status.
pub fn refusal_reason(status: u16, reason_header: Option<&str>) -> CloseReason {
    if let Some(r) = reason_header.and_then(|h| CloseReason::from_name(h.trim())) {
        return r;
    }
    match status {
        401 => CloseReason::AuthenticationFailed,
        403 => CloseReason::AccessDenied,
        404 => CloseReason::UnknownSession,
        426 => CloseReason::ProtocolVersionMismatch,
        429 => CloseReason::LimitExceeded,
        500..=599 => CloseReason::ConnectionError,
        _ => CloseReason::HandshakeError,
    }
}

/// The bytes read past an upgrade head, in a buffer with `capacity` room: the buffer to hand a
/// WebSocket library (tungstenite's `from_partially_read`) together with the connection.
/// tungstenite keeps the capacity of the buffer it starts from as the size of its later reads;
/// handed a bare leftover (usually empty), it read one frame per system call.
pub fn read_buffer_after_upgrade(rest: &[u8], capacity: usize) -> Vec<u8> {
    let mut part = Vec::with_capacity(capacity.max(rest.len()));
    part.extend_from_slice(rest);
    part
}

// ---------------------------------------------------------------------------------------------
// The browser carrier: the same fields in `Sec-WebSocket-Protocol` values and a first message.

/// The subprotocol a client offers to carry its request in `Sec-WebSocket-Protocol` values
/// (a browser's `WebSocket` cannot set other headers), and that the server selects in its
/// `101` when it accepts the carrier. Its answer then comes as the connection's first message
/// (see [`accepted_answer`]), since a page cannot read the `101`'s other headers either.
pub const SUBPROTOCOL: &str = "tether.v1";
/// The prefix of every carrier value: `tether.<field>.<base64url of the value>`, where
/// `<field>` is a request header's name without `x-tether-`.
const CARRIER_PREFIX: &str = "tether.";
const HEADER_PREFIX: &str = "x-tether-";
/// The request header that offers subprotocols (lower case).
pub const HEADER_SUBPROTOCOL: &str = "sec-websocket-protocol";
/// Carrier answers only: a refusal's details (the body of an HTTP refusal).
pub const HEADER_MESSAGE: &str = "x-tether-message";
/// Largest carrier answer a client reads.
const MAX_ANSWER: usize = 8 * 1024;

/// A session request as `Sec-WebSocket-Protocol` values: [`SUBPROTOCOL`] first, then one
/// `tether.<field>.<base64url(value)>` per request header (`x-tether-<field>`), batching and
/// the wished ping period included. Every value is an HTTP token, as browsers require.
pub fn to_subprotocols(
    request: &SessionRequest,
    batch: bool,
    ping: Option<Duration>,
) -> Vec<String> {
    let mut headers = request.to_headers();
    if batch {
        headers.push((HEADER_BATCH, "1".to_string()));
    }
    if let Some(ping) = ping {
        headers.push((HEADER_PING, ms(ping)));
    }
    let mut values = vec![SUBPROTOCOL.to_string()];
    for (name, value) in headers {
        let Some(field) = name.strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        if name == HEADER_VERSION {
            continue; // carried by SUBPROTOCOL itself
        }
        values.push(format!(
            "{CARRIER_PREFIX}{field}.{}",
            data_encoding::BASE64URL_NOPAD.encode(value.as_bytes())
        ));
    }
    values
}

/// Reads the request headers a `Sec-WebSocket-Protocol` header carries: `Ok(None)` when it
/// does not offer [`SUBPROTOCOL`] (the request's own headers apply), else the `x-tether-*`
/// headers it stands for, the version included. Values not starting with `tether.` are
/// ignored (other subprotocols); a malformed or repeated carrier value is an error.
pub fn from_subprotocols(offered: &str) -> Result<Option<Vec<(String, String)>>, HandshakeError> {
    let values: Vec<&str> = offered
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if !values.contains(&SUBPROTOCOL) {
        return Ok(None);
    }
    let invalid = || HandshakeError::Invalid(HEADER_SUBPROTOCOL);
    let mut headers = vec![(HEADER_VERSION.to_string(), PROTOCOL_VERSION.to_string())];
    for value in values {
        let Some(rest) = value.strip_prefix(CARRIER_PREFIX) else {
            continue;
        };
        if value == SUBPROTOCOL {
            continue;
        }
        let (field, encoded) = rest.split_once('.').ok_or_else(invalid)?;
        let valid_field = !field.is_empty()
            && field
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_field {
            return Err(invalid());
        }
        let name = format!("{HEADER_PREFIX}{field}");
        if headers.iter().any(|(n, _)| *n == name) {
            return Err(invalid());
        }
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(encoded.as_bytes())
            .map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        headers.push((name, text));
    }
    Ok(Some(headers))
}

/// The answer to a carrier request, as the server sends it in the connection's first
/// message (binary): the status line and the headers of the HTTP answer it stands for.
fn encode_answer(status: u16, headers: &[(&str, String)]) -> Vec<u8> {
    let mut text = format!("{status}\r\n");
    for (name, value) in headers {
        // Values are the server's own; keep every answer one line per header regardless.
        let value: String = value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.into_bytes()
}

/// The first message after a `101` that accepted a carrier request: status `101` and the
/// `x-tether-*` headers of [`SessionAccepted::to_headers`] (plus batching and the ping period
/// granted), as in the native `101`.
pub fn accepted_answer(headers: &[(&'static str, String)]) -> Vec<u8> {
    let headers: Vec<(&str, String)> = headers
        .iter()
        .filter(|(name, _)| name.starts_with(HEADER_PREFIX))
        .map(|(n, v)| (*n, v.clone()))
        .collect();
    encode_answer(101, &headers)
}

/// The first (and only) message after a `101` when the server refuses a carrier request: the
/// refusal's status, reason, details and retry-after hint, as an HTTP refusal would carry
/// them. The server then closes the connection.
pub fn refusal_answer(
    reason: CloseReason,
    message: &str,
    retry_after: Option<Duration>,
) -> Vec<u8> {
    let mut headers: Vec<(&str, String)> = vec![
        (HEADER_VERSION, PROTOCOL_VERSION.to_string()),
        (HEADER_REASON, reason.as_str().to_string()),
        (HEADER_MESSAGE, message.chars().take(512).collect()),
    ];
    if let Some(hint) = retry_after {
        headers.extend(retry_after_headers(hint));
    }
    encode_answer(refusal_status(reason), &headers)
}

/// A refused open or resume, as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: CloseReason,
    /// Details.
    pub message: String,
    /// The server's hint of when to try again (with `server_draining`, `server_busy`).
    pub retry_after: Option<Duration>,
}

/// The server's answer to a carrier request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The session is open or resumed.
    Accepted(SessionAccepted),
    /// Refused; the server closes the connection.
    Refused(Refusal),
}

/// Reads a carrier answer (the first message after the `101`).
pub fn read_answer(bytes: &[u8]) -> Result<Answer, HandshakeError> {
    const WHAT: &str = "the carrier answer";
    if bytes.len() > MAX_ANSWER {
        return Err(HandshakeError::Invalid(WHAT));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| HandshakeError::Invalid(WHAT))?;
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or(HandshakeError::Invalid(WHAT))?;
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(HandshakeError::Invalid(WHAT))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if status == 101 {
        return SessionAccepted::from_headers(get).map(Answer::Accepted);
    }
    Ok(Answer::Refused(Refusal {
        reason: refusal_reason(status, get(HEADER_REASON)),
        message: get(HEADER_MESSAGE).unwrap_or_default().to_string(),
        retry_after: retry_after(get),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn round_trip_request(req: &SessionRequest) -> Result<SessionRequest, HandshakeError> {
        let map: HashMap<&str, String> = req.to_headers().into_iter().collect();
        SessionRequest::from_headers(|k| map.get(k).map(String::as_str))
    }

    #[test]
    fn open_and_resume_requests_round_trip() {
        let open = SessionRequest::Open {
            principal: Some("control".into()),
            credentials: Some("password".into()),
            auth_token: None,
            reconnect_timeout: Duration::from_millis(2500),
        };
        assert_eq!(round_trip_request(&open), Ok(open));
        let resume = SessionRequest::Resume {
            session: SessionId::from_bytes([7; 16]),
            token: ResumeToken::from_bytes([9; 16]),
            received: 42,
            positions: vec![Position {
                partition: 1,
                offset: 5,
            }],
            confirmed: 3,
        };
        assert_eq!(round_trip_request(&resume), Ok(resume));
    }

    #[test]
    fn accepted_round_trips_and_version_is_checked() {
        let acc = SessionAccepted {
            session: SessionId::from_bytes([1; 16]),
            token: ResumeToken::from_bytes([2; 16]),
            reconnect_timeout: Duration::from_secs(2),
            ping_period: Duration::from_secs(10),
            received: 3,
            max_frame: 1 << 20,
            batch: false,
        };
        let mut map: HashMap<&str, String> = acc.to_headers().into_iter().collect();
        assert_eq!(
            SessionAccepted::from_headers(|k| map.get(k).map(String::as_str)),
            Ok(acc)
        );
        map.insert(HEADER_VERSION, "2".into());
        let err = SessionAccepted::from_headers(|k| map.get(k).map(String::as_str))
            .expect_err("version 2 is refused");
        assert_eq!(err.reason(), CloseReason::ProtocolVersionMismatch);
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        let get = |k: &str| match k {
            HEADER_VERSION => Some("1"),
            HEADER_SESSION => Some("not-hex"),
            _ => None,
        };
        assert_eq!(
            SessionRequest::from_headers(get),
            Err(HandshakeError::Invalid(HEADER_SESSION))
        );
        assert_eq!(
            SessionRequest::from_headers(|_| None),
            Err(HandshakeError::Missing(HEADER_VERSION))
        );
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = ResumeToken::from_bytes([0xab; 16]);
        assert!(!format!("{t:?}").contains("ab"));
    }

    #[test]
    fn refusals_map_both_ways() {
        for r in CloseReason::ALL {
            assert_eq!(refusal_reason(refusal_status(r), Some(r.as_str())), r);
        }
        assert_eq!(refusal_reason(401, None), CloseReason::AuthenticationFailed);
    }

    #[test]
    fn a_token_whose_answer_was_lost_still_resumes_once_the_new_one_is_unused() {
        let t = |b| ResumeToken::from_bytes([b; 16]);
        let mut tokens = ResumeTokens::new(t(1));
        assert!(tokens.accepts(&t(1)) && !tokens.accepts(&t(2)));
        tokens.rotate(t(1), t(2));
        // The answer with token 2 was lost: the client presents 1 again.
        assert!(tokens.accepts(&t(1)) && tokens.accepts(&t(2)));
        tokens.rotate(t(1), t(3));
        assert!(tokens.accepts(&t(1)) && tokens.accepts(&t(3)) && !tokens.accepts(&t(2)));
        // The client uses 3: 1 stops working.
        tokens.rotate(t(3), t(4));
        assert!(!tokens.accepts(&t(1)) && tokens.accepts(&t(3)) && tokens.accepts(&t(4)));
    }

    #[test]
    fn requests_travel_as_subprotocol_tokens_and_come_back_as_headers() {
        let requests = [
            SessionRequest::Open {
                principal: Some("contrôle, \"x\"".into()),
                credentials: Some("pass word=;/".into()),
                auth_token: None,
                reconnect_timeout: Duration::from_millis(2500),
            },
            SessionRequest::Open {
                principal: None,
                credentials: None,
                auth_token: Some("a.b.c".into()),
                reconnect_timeout: Duration::ZERO,
            },
            SessionRequest::Resume {
                session: SessionId::from_bytes([7; 16]),
                token: ResumeToken::from_bytes([9; 16]),
                received: 42,
                positions: vec![Position {
                    partition: 1,
                    offset: 5,
                }],
                confirmed: 3,
            },
        ];
        // RFC 7230 token characters: what a browser accepts in `new WebSocket(url, protocols)`.
        let token = |v: &str| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        for request in requests {
            let values = to_subprotocols(&request, true, Some(Duration::from_secs(2)));
            assert_eq!(values[0], SUBPROTOCOL);
            assert!(values.iter().all(|v| token(v)), "{values:?}");
            let offered = format!("chat, {}", values.join(", "));
            let headers = from_subprotocols(&offered)
                .expect("valid")
                .expect("offers the carrier");
            let get = |k: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(SessionRequest::from_headers(get), Ok(request));
            assert!(SessionRequest::wants_batch(get));
            assert_eq!(
                SessionRequest::wanted_ping(get),
                Some(Duration::from_secs(2))
            );
        }
        assert_eq!(from_subprotocols("chat, superchat"), Ok(None));
        for bad in [
            "tether.v1, tether.principal",
            "tether.v1, tether.principal.!!",
            "tether.v1, tether.Principal.YQ",
            "tether.v1, tether.principal.YQ, tether.principal.Yg",
        ] {
            assert_eq!(
                from_subprotocols(bad),
                Err(HandshakeError::Invalid(HEADER_SUBPROTOCOL)),
                "{bad}"
            );
        }
    }

    #[test]
    fn carrier_answers_read_back() {
        let acc = SessionAccepted {
            session: SessionId::from_bytes([1; 16]),
            token: ResumeToken::from_bytes([2; 16]),
            reconnect_timeout: Duration::from_secs(2),
            ping_period: Duration::from_secs(10),
            received: 3,
            max_frame: 1 << 20,
            batch: true,
        };
        let mut headers = acc.to_headers();
        headers.push(("sec-websocket-protocol", SUBPROTOCOL.into()));
        assert_eq!(
            read_answer(&accepted_answer(&headers)),
            Ok(Answer::Accepted(acc))
        );
        let hint = Some(Duration::from_millis(1500));
        let refused = refusal_answer(CloseReason::ServerDraining, "going\r\naway", hint);
        assert_eq!(
            read_answer(&refused),
            Ok(Answer::Refused(Refusal {
                reason: CloseReason::ServerDraining,
                message: "going  away".into(),
                retry_after: hint,
            }))
        );
        let refused = refusal_answer(CloseReason::AuthenticationFailed, "no", None);
        assert!(matches!(
            read_answer(&refused),
            Ok(Answer::Refused(Refusal {
                reason: CloseReason::AuthenticationFailed,
                retry_after: None,
                ..
            }))
        ));
        assert!(read_answer(b"\x00\x01").is_err());
        assert!(read_answer(b"101\r\nx-tether-version: 1\r\n").is_err());
    }
}
