//! Signed-token logins: a JWT names the principal and carries its permissions; it expires; a
//! forged one is refused; the permissions travel with the session across a restart.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Env, config, within};
use tether::{CloseReason, Error, RequestErrorKind, Session, SessionState};
use tether_server::config::TokensConfig;

const SECRET: &str = "a secret of at least thirty-two bytes";

fn token(sub: &str, exp_from_now: i64, secret: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let claims = serde_json::json!({
        "sub": sub,
        "exp": now + exp_from_now,
        "subscribe": ["fleet/**"],
        "publish": [format!("fleet/{sub}/*")],
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn with_tokens() -> tether_server::ServerConfig {
    let mut cfg = config();
    cfg.tokens = Some(TokensConfig {
        algorithm: "HS256".into(),
        secret: Some(SECRET.into()),
        leeway_s: 0,
        ..TokensConfig::default()
    });
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_opens_a_session_with_the_permissions_it_carries() {
    let env = Env::with(with_tokens()).await;
    let session = Session::builder(&env.url())
        .token(token("truck-9", 300, SECRET))
        .open()
        .await
        .expect("the token opens a session");
    let info = env.server.session(&session.session_id()).expect("kept");
    assert_eq!(info.principal.as_deref(), Some("truck-9"));
    let mut mine = session
        .subscribe("fleet/truck-9/*")
        .await
        .expect("subscribe");
    session
        .publish("fleet/truck-9/position", "1,2")
        .await
        .expect("within the token's permissions");
    assert_eq!(
        within("update", mine.next()).await.expect("update").value,
        "1,2".as_bytes()
    );
    let denied = session
        .publish("fleet/truck-8/position", "no")
        .await
        .expect_err("outside the token's permissions");
    assert_eq!(
        denied.request_error_kind(),
        Some(RequestErrorKind::AccessDenied)
    );
    assert_eq!(session.state(), SessionState::ConnectedActive);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_forged_tokens_are_refused_as_authentication_failures() {
    let env = Env::with(with_tokens()).await;
    for (what, t) in [
        ("expired", token("truck-9", -60, SECRET)),
        (
            "forged",
            token("truck-9", 300, "another secret, thirty-two bytes long"),
        ),
        ("garbage", "a.b.c".to_string()),
    ] {
        match Session::builder(&env.url()).token(t).open().await {
            Err(Error::Open { reason, message }) => {
                assert_eq!(reason, CloseReason::AuthenticationFailed, "{what}");
                assert!(message.contains("token refused"), "{what}: {message}");
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
    // A server without a [tokens] section refuses tokens too.
    let plain = Env::start().await;
    let err = Session::builder(&plain.url())
        .token(token("truck-9", 300, SECRET))
        .open()
        .await
        .expect_err("not configured");
    assert_eq!(err.reason(), Some(CloseReason::AuthenticationFailed));
    // A token and a password together make no sense: refused before anything is sent.
    let both = Session::builder(&env.url())
        .principal("control")
        .token("x")
        .open()
        .await
        .expect_err("both");
    assert!(matches!(both, Error::InvalidArgument(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sessions_permissions_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("tether-token-state-{}", std::process::id()));
    let mut cfg = with_tokens();
    cfg.state_dir = Some(dir.clone());
    cfg.drain.retry_after_ms = 50;
    let Env { server, proxy } = Env::with(cfg.clone()).await;
    let session = Session::builder(&format!("ws://{}", proxy.local_addr()))
        .token(token("truck-3", 300, SECRET))
        .open()
        .await
        .expect("open");
    let addr = server.local_addr();
    within("drain", server.drain(Duration::from_secs(5)))
        .await
        .expect("drained");
    cfg.listen = addr;
    let again = tether_server::Server::bind(cfg).await.expect("restart");
    within(
        "resume",
        session.wait_for_state(SessionState::ConnectedActive),
    )
    .await;
    session
        .publish("fleet/truck-3/x", "after")
        .await
        .expect("the token's permissions came back with the session");
    let denied = session.publish("fleet/truck-4/x", "no").await;
    assert!(denied.is_err_and(|e| e.is_access_denied()));
    session.close().await;
    again.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
