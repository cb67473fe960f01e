//! Opening one WebSocket connection (plain or TLS) with the session fields in the upgrade.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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

/// Everything needed to open connections to one server, checked once at `open`.
pub(crate) struct Connector {
    url: String,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

fn invalid_url(url: &str, message: impl Into<String>) -> Error {
    Error::InvalidUrl {
        url: url.to_owned(),
        message: message.into(),
    }
}

impl Connector {
    /// Checks the URL and builds the TLS configuration for `wss://`.
    pub(crate) fn new(url: &str, tls: &TlsOptions, timeout: Duration) -> Result<Connector, Error> {
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
            if !tls.extra_roots_pem.is_empty() || tls.accept_invalid_certificates {
                return Err(Error::InvalidArgument(
                    "TLS options given for a ws:// (plain) URL".into(),
                ));
            }
            None
        };
        Ok(Connector {
            url: url.to_owned(),
            host,
            port,
            tls,
            timeout,
        })
    }

    /// Opens a connection and reads the server's answer from the upgrade response.
    pub(crate) async fn connect(
        &self,
        request: &SessionRequest,
    ) -> Result<(Ws, SessionAccepted), Failure> {
        match tokio::time::timeout(self.timeout, self.connect_inner(request)).await {
            Ok(result) => result,
            Err(_) => Err((
                CloseReason::ConnectionError,
                format!("no answer within {:?}", self.timeout),
            )),
        }
    }

    async fn connect_inner(
        &self,
        request: &SessionRequest,
    ) -> Result<(Ws, SessionAccepted), Failure> {
        let req =
            build(&self.url, request).map_err(|e| (CloseReason::HandshakeError, e.to_string()))?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| (CloseReason::ConnectionError, e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(tls) => Box::new(tls),
                Err(e) => return Err(classify_tls(e)),
            },
            None => Box::new(tcp),
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_INCOMING))
            .max_frame_size(Some(MAX_INCOMING));
        let (ws, response) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
            .await
            .map_err(classify)?;
        let headers = response.headers();
        let accepted =
            SessionAccepted::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
                .map_err(|e| (e.reason(), format!("bad upgrade response: {e}")))?;
        Ok((ws, accepted))
    }
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

/// Checks that the request's fields can travel as header values.
pub(crate) fn check_request(url: &str, request: &SessionRequest) -> Result<(), Error> {
    build(url, request).map(|_| ())
}

fn build(
    url: &str,
    request: &SessionRequest,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, Error> {
    let mut req = url
        .into_client_request()
        .map_err(|e| invalid_url(url, e.to_string()))?;
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

fn classify_tls(e: std::io::Error) -> Failure {
    // rustls reports its own errors (bad certificate, protocol) as InvalidData.
    if e.kind() == std::io::ErrorKind::InvalidData {
        (CloseReason::HandshakeError, format!("TLS: {e}"))
    } else {
        (CloseReason::ConnectionError, format!("TLS: {e}"))
    }
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
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::HandshakeIncomplete) => (
            CloseReason::ConnectionError,
            "connection closed during the upgrade".into(),
        ),
        WsError::Url(e) => (CloseReason::HandshakeError, e.to_string()),
        other => (CloseReason::HandshakeError, other.to_string()),
    }
}
