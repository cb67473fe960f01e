//! Logs carry session ids and never tokens or passwords. A test binary of its own, because it
//! installs the process-wide log subscriber at the most verbose level.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Env, within};
use tether::SessionState;
use tether_server::config::PrincipalConfig;
use tether_testkit::CutMode;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const PASSWORD: &str = "hunter2-correct-horse-battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_name_sessions_but_never_tokens_or_passwords() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mut cfg = common::config();
    cfg.principals.push(PrincipalConfig {
        name: "alice".into(),
        password_hash: tether_server::auth::hash_password(PASSWORD),
        subscribe: vec!["**".into()],
        publish: vec!["**".into()],
    });
    let env = Env::with(cfg).await;
    let session = tether::Session::builder(&env.url())
        .principal("alice")
        .password(PASSWORD)
        .reconnection_strategy(tether::strategy::ConstantDelay::new(
            std::time::Duration::ZERO,
        ))
        .open()
        .await
        .expect("open");
    let id = session.session_id().to_string();
    for _ in 0..3 {
        let mut changes = session.state_changes();
        env.proxy.cut(CutMode::Rst);
        within("resume", async {
            while let Some(c) = changes.next().await {
                if c.new == SessionState::ConnectedActive {
                    break;
                }
            }
        })
        .await;
    }
    let _ = env
        .builder_as("alice", "wrong-password-also-secret")
        .open()
        .await
        .expect_err("refused");
    session.close().await;

    let logs = String::from_utf8(captured.0.lock().expect("logs").clone()).expect("utf-8 logs");
    assert!(logs.contains(&id), "logs carry the session id");
    if let Some(line) = logs.lines().find(|l| l.contains(PASSWORD)) {
        panic!("a password reached the logs: {line}");
    }
    assert!(
        !logs.contains("wrong-password-also-secret"),
        "a password reached the logs"
    );
    // Tokens are 32 hex digits, like session ids: every such run must be the session id.
    let bytes = logs.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if run == 32 {
            let found = &logs[i..i + 32];
            assert_eq!(
                found, id,
                "a 32-hex-digit value other than the session id was logged"
            );
        }
        i += run.max(1);
    }
}
