//! The `tether-server` binary: configuration errors name the field, `hash-password` prints a
//! usable hash, and `--dev` announces itself, prints its address and drains then stops on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use tether_protocol::CloseReason;
use tether_protocol::frame::{self, ServerFrame};
use tether_protocol::handshake::{SessionAccepted, SessionRequest};

const BIN: &str = env!("CARGO_BIN_EXE_tether-server");

/// Bound on every wait, so that a failure fails instead of hanging.
const STEP: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A configuration file that removes itself.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tether-server-test-{}-{}.toml",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, text).expect("write the config file");
        TempConfig(path)
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn run_with_config(text: &str) -> Output {
    let file = TempConfig::new(text);
    within(
        "the server to exit",
        Command::new(BIN)
            .arg("--config")
            .arg(&file.0)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run tether-server")
}

/// Runs the binary with a bad configuration; checks that it fails and names `field`.
async fn assert_config_error(text: &str, field: &str) -> String {
    let out = run_with_config(text).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "exited successfully with {text:?}: {stderr}"
    );
    assert!(
        stderr.contains(field),
        "stderr does not name {field}: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "printed a listen line: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[tokio::test]
async fn invalid_configurations_fail_naming_the_field() {
    assert_config_error(
        "listen = \"127.0.0.1:0\"\nping_period_ms = 0\n",
        "ping_period_ms",
    )
    .await;
    assert_config_error(
        "listen = \"127.0.0.1:0\"\nretention_seconds = 30\n",
        "retention_seconds",
    )
    .await;
    let stderr = assert_config_error(
        "listen = \"127.0.0.1:0\"\n[[principals]]\nname = \"alice\"\npassword_hash = \"hunter2\"\n",
        "principals[0].password_hash",
    )
    .await;
    assert!(
        !stderr.contains("hunter2"),
        "a plain-text password was echoed: {stderr}"
    );
    assert_config_error(
        "listen = \"127.0.0.1:0\"\n[limits]\nmax_frame_bytes = 10\n",
        "limits.max_frame_bytes",
    )
    .await;
}

#[tokio::test]
async fn hash_password_reads_stdin_and_prints_a_verifiable_phc_string() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tether-server");
    let mut stdin = child.stdin.take().expect("stdin");
    within("write", stdin.write_all(b"correct horse\n"))
        .await
        .expect("write the password");
    drop(stdin);
    let out = within("hash-password to exit", child.wait_with_output())
        .await
        .expect("hash-password runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let hash = stdout.trim();
    assert!(hash.starts_with("$argon2"), "{hash:?}");
    assert!(!stdout.contains("correct horse"));
    assert!(tether_server::auth::verify_password(hash, "correct horse"));
    assert!(!tether_server::auth::verify_password(
        hash,
        "correct horse\n"
    ));
    assert!(!tether_server::auth::verify_password(hash, "wrong"));
    tether_server::auth::check_hash(hash).expect("usable in a configuration");
}

#[tokio::test]
async fn dev_mode_warns_prints_its_address_and_drains_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["--dev", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tether-server");
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = within("the listen line", stdout.next_line())
        .await
        .expect("read stdout")
        .expect("a line on stdout");
    let json: serde_json::Value = serde_json::from_str(&line).expect("the line is JSON");
    let addr: SocketAddr = json["listen"]
        .as_str()
        .expect("a listen field")
        .parse()
        .expect("an address");
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0);

    // The well-known development principal works.
    let mut request = format!("ws://{addr}")
        .into_client_request()
        .expect("request");
    let open = SessionRequest::Open {
        principal: Some("control".into()),
        credentials: Some("password".into()),
        auth_token: None,
        reconnect_timeout: Duration::from_secs(30),
    };
    for (name, value) in open.to_headers() {
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).expect("header value"));
    }
    let (mut ws, response) = within("the upgrade", tokio_tungstenite::connect_async(request))
        .await
        .expect("the dev principal opens a session");
    let headers = response.headers();
    SessionAccepted::from_headers(|n| headers.get(n).and_then(|v| v.to_str().ok()))
        .expect("session fields");

    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());

    // A drain, not the end of the session: it is told to come back after a hint.
    let mut went_away = None;
    while let Some(Ok(message)) = within("the connection to end", ws.next()).await {
        if let Message::Binary(b) = message
            && let Ok(ServerFrame::GoAway {
                reason,
                retry_after_ms,
                ..
            }) = frame::decode_server(&b)
        {
            went_away = Some((reason, retry_after_ms));
        }
    }
    assert_eq!(went_away, Some((CloseReason::ServerDraining, 1000)));

    let status = within("the server to exit", child.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let stderr = within("stderr", stderr_text).await.expect("stderr task");
    assert!(
        stderr.to_lowercase().contains("development"),
        "no development warning on stderr: {stderr}"
    );
    assert!(
        within("stdout", stdout.next_line())
            .await
            .expect("read stdout")
            .is_none(),
        "more than one line on stdout"
    );
}
