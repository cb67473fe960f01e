//! Opening one WebSocket connection (plain or TLS) with the session fields in the upgrade.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use tether_protocol::CloseReason;
use tether_protocol::handshake::{HEADER_REASON, SessionAccepted, SessionRequest, refusal_reason};

use crate::Error;

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub(crate) type Ws = WebSocketStream<Box<dyn Io>>;

/// Largest message the client accepts from a server.
const MAX_INCOMING: usize = 64 << 20;

/// TLS settings chosen on the builder.
#[derive(Clone, Default)]
pub(crate) struct TlsOptions {
    /// Extra trusted roots, PEM (added to the system's).
    pub(crate) extra_roots_pem: Vec<Vec<u8>>,
    /// Development only: accept any server certificate.
    pub(crate) accept_invalid_certificates: bool,
}

/// Everything needed to open connections to a session's servers (one URL, or several tried
/// in turn), checked once at `open`.
pub(crate) struct Connector {
    targets: Vec<Target>,
    timeout: Duration,
    /// The ping period asked of the server, if the application chose one.
    ping: Option<Duration>,
}

/// One server URL, parsed.
struct Target {
    /// Path and query for the request line.
    path: String,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

fn invalid_url(url: &str, message: impl Into<String>) -> Error {
    Error::InvalidUrl {
        url: url.to_owned(),
        message: message.into(),
    }
}

impl Connector {
    /// Checks every URL and builds the TLS configuration for `wss://` ones.
    pub(crate) fn new(
        urls: &[String],
        tls: &TlsOptions,
        timeout: Duration,
        ping: Option<Duration>,
    ) -> Result<Connector, Error> {
        if urls.is_empty() {
            return Err(Error::InvalidArgument("no server URL given".into()));
        }
        let targets = urls
            .iter()
            .map(|url| Target::new(url, tls))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.iter().all(|t| t.tls.is_none())
            && (!tls.extra_roots_pem.is_empty() || tls.accept_invalid_certificates)
        {
            return Err(Error::InvalidArgument(
                "TLS options given for a ws:// (plain) URL".into(),
            ));
        }
        Ok(Connector {
            targets,
            timeout,
            ping,
        })
    }

    /// How many servers the session may try.
    pub(crate) fn targets(&self) -> usize {
        self.targets.len()
    }

    /// Opens a connection to server number `target` (modulo the number of servers) and reads
    /// the server's answer from the upgrade response.
    pub(crate) async fn connect(
        &self,
        request: &SessionRequest,
        target: usize,
    ) -> Result<(Ws, SessionAccepted), Failure> {
        let t = &self.targets[target % self.targets.len()];
        match tokio::time::timeout(self.timeout, t.connect(request, self.ping)).await {
            Ok(result) => result,
            Err(_) => Err((
                CloseReason::ConnectionError,
                format!("no answer within {:?}", self.timeout),
            )
                .into()),
        }
    }
}

impl Target {
    fn new(url: &str, tls: &TlsOptions) -> Result<Target, Error> {
        let parsed = url::Url::parse(url).map_err(|e| invalid_url(url, e.to_string()))?;
        let secure = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(invalid_url(
                    url,
                    format!("scheme {other:?} is neither ws nor wss"),
                ));
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid_url(url, "no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| invalid_url(url, "no port"))?;
        let tls = if secure {
            let name = ServerName::try_from(host.clone()).map_err(|_| {
                invalid_url(url, format!("{host:?} is not a valid TLS server name"))
            })?;
            Some((tls_connector(tls)?, name))
        } else {
            None
        };
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        Ok(Target {
            path,
            host,
            port,
            tls,
        })
    }

    async fn connect(
        &self,
        request: &SessionRequest,
        ping: Option<Duration>,
    ) -> Result<(Ws, SessionAccepted), Failure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| (CloseReason::ConnectionError, e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(tls) => Box::new(tls),
                Err(e) => return Err(classify_tls(e)),
            },
            None => Box::new(tcp),
        };
        // The upgrade is written and read here rather than by tungstenite, whose trace logs
        // would print the credentials and tokens that ride in it.
        let key = generate_key();
        let head = self.request_head(request, &key, ping);
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| (CloseReason::ConnectionError, e.to_string()))?;
        let (response, rest) = read_response(&mut stream).await?;
        if response.status != 101 {
            let reason = refusal_reason(response.status, response.header(HEADER_REASON));
            let message = if response.body.is_empty() {
                format!("server answered {}", response.status)
            } else {
                response.body.clone()
            };
            return Err(Failure {
                reason,
                message,
                retry_after: tether_protocol::handshake::retry_after(|name| response.header(name)),
            });
        }
        let expected_accept = derive_accept_key(key.as_bytes());
        let upgraded = response
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
            && response.header("sec-websocket-accept") == Some(expected_accept.as_str());
        if !upgraded {
            return Err((
                CloseReason::HandshakeError,
                "not a valid WebSocket upgrade response".into(),
            )
                .into());
        }
        let accepted = SessionAccepted::from_headers(|name| response.header(name))
            .map_err(|e| (e.reason(), format!("bad upgrade response: {e}")))?;
        const READ_BUFFER: usize = 16 * 1024;
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(MAX_INCOMING))
            .max_frame_size(Some(MAX_INCOMING));
        let part = tether_protocol::handshake::read_buffer_after_upgrade(&rest, READ_BUFFER);
        // A server that streams is read 64 KiB at a time all the same, by a buffer held only
        // while it streams (see `tether_io::BulkReader`).
        let stream: Box<dyn Io> = Box::new(tether_io::BulkReader::new(stream));
        let ws =
            WebSocketStream::from_partially_read(stream, part, Role::Client, Some(config)).await;
        Ok((ws, accepted))
    }

    fn request_head(&self, request: &SessionRequest, key: &str, ping: Option<Duration>) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut head = format!(
            "GET {} HTTP/1.1\r\nhost: {host}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: {key}\r\n",
            self.path
        );
        for (name, value) in request.to_headers() {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(&value);
            head.push_str("\r\n");
        }
        // Several frames per WebSocket message, if the server agrees (its answer says so).
        head.push_str(tether_protocol::handshake::HEADER_BATCH);
        head.push_str(": 1\r\n");
        // The ping period the application asked for; the server grants it within its bounds.
        if let Some(ping) = ping {
            head.push_str(tether_protocol::handshake::HEADER_PING);
            head.push_str(&format!(": {}\r\n", ping.as_millis()));
        }
        head.push_str("\r\n");
        head
    }
}

/// An HTTP response head (and a short body, for refusals).
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Largest response head accepted, and the most of a refusal's body read.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 4 * 1024;

/// Reads the response head; returns it with any bytes read past it (the first frames).
async fn read_response(stream: &mut Box<dyn Io>) -> Result<(Response, Vec<u8>), Failure> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let (mut response, len) = loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| (CloseReason::ConnectionError, e.to_string()))?;
        if n == 0 {
            return Err((
                CloseReason::ConnectionError,
                "connection closed during the upgrade".into(),
            )
                .into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let response = Response {
                    status: parsed.code.unwrap_or(0),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value).trim().to_owned();
                            (h.name.to_owned(), value)
                        })
                        .collect(),
                    body: String::new(),
                };
                break (response, len);
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err((
                    CloseReason::HandshakeError,
                    "upgrade response head too large".into(),
                )
                    .into());
            }
            Err(e) => {
                return Err((
                    CloseReason::HandshakeError,
                    format!("malformed upgrade response: {e}"),
                )
                    .into());
            }
        }
    };
    let rest = buf.split_off(len);
    if response.status != 101 {
        // A refusal: read its short text body for the error message.
        let wanted = response
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_BODY);
        let mut body = rest;
        while body.len() < wanted {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        body.truncate(wanted);
        response.body = String::from_utf8_lossy(&body).trim().to_owned();
        return Ok((response, Vec::new()));
    }
    Ok((response, rest))
}

fn tls_connector(options: &TlsOptions) -> Result<tokio_rustls::TlsConnector, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?;
    let config = if options.accept_invalid_certificates {
        tracing::warn!("TLS certificate verification is OFF (development only)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        for pem in &options.extra_roots_pem {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| Error::InvalidArgument(format!("extra root certificate: {e}")))?;
            if certs.is_empty() {
                return Err(Error::InvalidArgument(
                    "extra root certificate: no certificate in the PEM".into(),
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| Error::InvalidArgument(format!("extra root certificate: {e}")))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The operating system's trusted roots, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "a system root certificate could not be loaded");
        }
        found.certs
    })
}

mod danger {
    use std::sync::Arc;

    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    /// Accepts any certificate (signatures are still checked, so the handshake is real).
    #[derive(Debug)]
    pub(super) struct AcceptAnyCertificate(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Checks that the request's fields can travel as header values (printable ASCII).
pub(crate) fn check_request(request: &SessionRequest) -> Result<(), Error> {
    for (name, value) in request.to_headers() {
        if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(Error::InvalidArgument(format!(
                "{name} may only contain printable ASCII characters"
            )));
        }
    }
    Ok(())
}

/// A failed connection attempt: the typed reason, details, and the server's hint of when to
/// try again (a `503` with `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) reason: CloseReason,
    pub(crate) message: String,
    pub(crate) retry_after: Option<Duration>,
}

impl From<(CloseReason, String)> for Failure {
    fn from((reason, message): (CloseReason, String)) -> Failure {
        Failure {
            reason,
            message,
            retry_after: None,
        }
    }
}

fn classify_tls(e: std::io::Error) -> Failure {
    // rustls reports its own errors (bad certificate, protocol) as InvalidData.
    if e.kind() == std::io::ErrorKind::InvalidData {
        (CloseReason::HandshakeError, format!("TLS: {e}")).into()
    } else {
        (CloseReason::ConnectionError, format!("TLS: {e}")).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;
    use tokio_tungstenite::tungstenite::Message;

    /// Serves `data` and records how much room each read offered.
    struct RecordingReader {
        data: std::io::Cursor<Vec<u8>>,
        offered: Vec<usize>,
    }

    impl tokio::io::AsyncRead for RecordingReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.offered.push(buf.remaining());
            Pin::new(&mut self.data).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for RecordingReader {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn reads_after_the_upgrade_fill_the_read_buffer_not_one_frame() {
        // 300 small binary frames from a server (unmasked), 118 bytes each on the wire.
        let mut wire = Vec::new();
        for _ in 0..300 {
            wire.extend_from_slice(&[0x82, 116]);
            wire.extend_from_slice(&[0x5a; 116]);
        }
        let reader = RecordingReader {
            data: std::io::Cursor::new(wire),
            offered: Vec::new(),
        };
        let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
        let mut ws = WebSocketStream::from_partially_read(
            reader,
            tether_protocol::handshake::read_buffer_after_upgrade(&[], 16 * 1024),
            Role::Client,
            Some(config),
        )
        .await;
        // Kept, as a subscriber keeps the values it was handed: their bytes share the buffer.
        let mut kept = Vec::new();
        for _ in 0..300 {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => kept.push(b),
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
        let offered = &ws.get_ref().offered;
        // 35 KiB of frames: a handful of reads of kilobytes (4 here), not one read per frame.
        assert!(offered.len() <= 10, "reads: {offered:?}");
    }
}
