//! TLS for `wss://`, with rustls (ring provider).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Builds the acceptor; an error names the config field and says what is wrong.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, (&'static str, String)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.certificate)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            (
                "tls.certificate",
                format!("{}: {e}", config.certificate.display()),
            )
        })?;
    if certs.is_empty() {
        return Err((
            "tls.certificate",
            format!("{}: no certificate found", config.certificate.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.private_key).map_err(|e| {
        (
            "tls.private_key",
            format!("{}: {e}", config.private_key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            (
                "tls.private_key",
                format!("does not match the certificate or is unusable: {e}"),
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
