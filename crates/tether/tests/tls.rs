//! `wss://` end to end, with a CA generated at test time.

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::{config, manual, within};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tether::{CloseReason, Error, Session, SessionState};
use tether_server::Server;
use tether_server::config::TlsConfig;
use tether_testkit::{CutMode, FaultProxy};

struct Pki {
    ca_pem: String,
    dir: PathBuf,
}

/// A CA and a server certificate for `localhost` and 127.0.0.1, in a fresh directory.
fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tether test CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    let dir = std::env::temp_dir().join(format!(
        "tether-tls-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
    Pki {
        ca_pem: ca.pem(),
        dir,
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_server(pki: &Pki) -> Server {
    let mut cfg = config();
    cfg.tls = Some(TlsConfig {
        certificate: pki.dir.join("cert.pem"),
        private_key: pki.dir.join("key.pem"),
    });
    Server::bind(cfg).await.expect("TLS server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_private_ca_works_and_survives_a_cut() {
    let pki = pki();
    let server = tls_server(&pki).await;
    let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), server.local_addr())
        .await
        .expect("proxy");
    let mut strategy = manual();
    let session = Session::builder(&format!("wss://localhost:{}", proxy.local_addr().port()))
        .principal("control")
        .password("password")
        .tls_root_certificate_pem(&pki.ca_pem)
        .reconnection_strategy_arc(strategy.strategy.clone())
        .open()
        .await
        .expect("open over TLS");
    let id = session.session_id();
    let mut sub = session.subscribe("tls/t").await.expect("subscribe");
    session.publish("tls/t", "one").await.expect("publish");
    assert_eq!(
        within("update", sub.next()).await.expect("update").value,
        Bytes::from("one")
    );
    proxy.cut(CutMode::Rst);
    strategy.next_attempt().await.start();
    within(
        "resumed",
        session.wait_for_state(SessionState::ConnectedActive),
    )
    .await;
    assert_eq!(session.session_id(), id);
    session
        .publish("tls/t", "two")
        .await
        .expect("publish after resume");
    assert_eq!(
        within("update", sub.next()).await.expect("update").value,
        Bytes::from("two")
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_is_refused_unless_verification_is_explicitly_skipped() {
    let pki = pki();
    let server = tls_server(&pki).await;
    let url = format!("wss://127.0.0.1:{}", server.local_addr().port());
    let err = Session::builder(&url)
        .principal("control")
        .password("password")
        .open()
        .await
        .expect_err("untrusted certificate");
    assert_eq!(err.reason(), Some(CloseReason::HandshakeError), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    let session = Session::builder(&url)
        .principal("control")
        .password("password")
        .danger_accept_invalid_certificates(true)
        .open()
        .await
        .expect("dev-only skip");
    session.close().await;

    // Plain ws:// to a TLS server fails cleanly too.
    let err = Session::builder(&format!("ws://127.0.0.1:{}", server.local_addr().port()))
        .principal("control")
        .password("password")
        .connect_timeout(std::time::Duration::from_secs(5))
        .open()
        .await
        .expect_err("no TLS");
    assert!(err.reason().is_some(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_arguments_are_typed_errors() {
    let err = Session::builder("wss://localhost:1")
        .tls_root_certificate_pem("not a pem")
        .open()
        .await
        .expect_err("bad pem");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let err = Session::builder("ws://localhost:1")
        .danger_accept_invalid_certificates(true)
        .open()
        .await
        .expect_err("TLS option on ws://");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

    let mut cfg = config();
    cfg.tls = Some(TlsConfig {
        certificate: "/nonexistent/cert.pem".into(),
        private_key: "/nonexistent/key.pem".into(),
    });
    let err = Server::bind(cfg).await.err().expect("missing files");
    assert!(err.to_string().contains("tls.certificate"), "{err}");
}
