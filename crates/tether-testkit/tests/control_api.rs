//! Tests of the `tether-faultproxy` binary and its HTTP control API.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{
    TIMEOUT, assert_eof, assert_refused, assert_reset, assert_silent, connect_and_echo, dead_addr,
    poll_until_echo_works, roundtrip, spawn_echo,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout};

/// A running `tether-faultproxy`, killed when dropped.
struct Binary {
    child: Child,
    proxy: SocketAddr,
    control: SocketAddr,
}

impl Binary {
    async fn spawn(upstream: SocketAddr) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether-faultproxy"))
            .args(["--upstream", &upstream.to_string(), "--exit-on-stdin-close"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tether-faultproxy");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        timeout(TIMEOUT, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("no startup line in time")
            .expect("read startup line");
        let ready: Value = serde_json::from_str(&line).expect("startup line is JSON");
        let object = ready.as_object().expect("startup line is a JSON object");
        assert_eq!(object.len(), 2, "unexpected startup line {line}");
        let addr = |key: &str| -> SocketAddr {
            ready[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} missing in {line}"))
                .parse()
                .expect("startup line holds IP:PORT")
        };
        let (proxy, control) = (addr("proxy"), addr("control"));
        assert!(proxy.ip().is_loopback() && proxy.port() != 0);
        assert!(control.ip().is_loopback() && control.port() != 0);
        Binary {
            child,
            proxy,
            control,
        }
    }

    /// Sends `raw` as the whole request and returns the status and JSON body.
    async fn raw(&self, raw: &[u8]) -> (u16, Value) {
        let exchange = async {
            let mut stream = TcpStream::connect(self.control)
                .await
                .expect("connect control");
            stream.write_all(raw).await.expect("send request");
            let mut response = Vec::new();
            stream
                .read_to_end(&mut response)
                .await
                .expect("read response");
            response
        };
        let response = timeout(TIMEOUT, exchange)
            .await
            .expect("control API timed out");
        let text = String::from_utf8(response).expect("response is UTF-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("response has a head");
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        let body: Value = serde_json::from_str(body).expect("body is JSON");
        (status, body)
    }

    async fn request(&self, method: &str, target: &str) -> (u16, Value) {
        let req =
            format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        self.raw(req.as_bytes()).await
    }

    /// A request that must succeed with 200.
    async fn ok(&self, method: &str, target: &str) -> Value {
        let (status, body) = self.request(method, target).await;
        assert_eq!(status, 200, "{method} {target} -> {body}");
        body
    }

    async fn status(&self) -> Value {
        self.ok("GET", "/status").await
    }

    /// Asserts that `method target` is rejected with `expected` and a JSON error message.
    async fn rejected(&self, method: &str, target: &str, expected: u16) {
        let (status, body) = self.request(method, target).await;
        assert_eq!(status, expected, "{method} {target} -> {body}");
        assert!(body["error"].is_string(), "{method} {target} -> {body}");
    }
}

#[tokio::test]
async fn startup_line_status_and_wait() {
    let (echo, _server) = spawn_echo().await;
    let bin = Binary::spawn(echo).await;

    let status = bin.status().await;
    assert_eq!(status["accepted_total"], 0);
    assert_eq!(status["forwarded_total"], 0);
    assert_eq!(status["refusing"], false);

    let _stream = connect_and_echo(bin.proxy).await;
    let waited = bin.ok("GET", "/wait?forwarded=1&timeout_ms=5000").await;
    assert_eq!(waited["ok"], true);
    assert_eq!(waited["forwarded_total"], 1);
    let status = bin.status().await;
    assert_eq!(status["active"], 1);

    let (code, body) = bin.request("GET", "/wait?forwarded=5&timeout_ms=100").await;
    assert_eq!(code, 408, "{body}");
    assert!(body["error"].is_string());
    assert_eq!(body["forwarded_total"], 1);
}

#[tokio::test]
async fn cut_rst_and_fin() {
    let (echo, _server) = spawn_echo().await;
    let bin = Binary::spawn(echo).await;

    let mut a = connect_and_echo(bin.proxy).await;
    assert_eq!(bin.ok("POST", "/cut?mode=rst").await["cut"], 1);
    assert_reset(&mut a).await;

    let mut b = connect_and_echo(bin.proxy).await;
    assert_eq!(bin.ok("POST", "/cut?mode=fin").await["cut"], 1);
    assert_eof(&mut b).await;

    assert_eq!(bin.ok("POST", "/cut?mode=rst").await["cut"], 0);
    let _c = connect_and_echo(bin.proxy).await;
    let status = bin.status().await;
    assert_eq!(status["cuts_total"], 2);
    assert_eq!(status["forwarded_total"], 3);
}

#[tokio::test]
async fn stall_then_heal() {
    let (echo, _server) = spawn_echo().await;
    let bin = Binary::spawn(echo).await;

    let mut stalled = connect_and_echo(bin.proxy).await;
    assert_eq!(bin.ok("POST", "/stall").await["stalled"], 1);
    stalled
        .write_all(b"hello?")
        .await
        .expect("write to stalled connection");
    assert_silent(&mut stalled).await;

    let _fresh = connect_and_echo(bin.proxy).await;
    let status = bin.status().await;
    assert_eq!(status["stalled"], 1);
    assert_eq!(status["active"], 1);

    assert_eq!(bin.ok("POST", "/heal").await["ok"], true);
    assert_reset(&mut stalled).await;
    assert_eq!(bin.status().await["stalled"], 0);
}

#[tokio::test]
async fn refuse_until_heal_and_for_a_while() {
    let (echo, _server) = spawn_echo().await;
    let bin = Binary::spawn(echo).await;

    assert_eq!(bin.ok("POST", "/refuse").await["ok"], true);
    assert_refused(bin.proxy).await;
    let waited = bin.ok("GET", "/wait?refused=1&timeout_ms=5000").await;
    assert_eq!(waited["refused_total"], 1);
    assert_eq!(waited["refusing"], true);
    bin.ok("POST", "/heal").await;
    let _a = connect_and_echo(bin.proxy).await;

    let started = Instant::now();
    bin.ok("POST", "/refuse?ms=300").await;
    assert_refused(bin.proxy).await;
    let worked_at = poll_until_echo_works(bin.proxy).await;
    assert!(worked_at.duration_since(started) >= Duration::from_millis(300));
    assert!(bin.status().await["refused_total"].as_u64() >= Some(2));
}

#[tokio::test]
async fn delay_and_upstream() {
    let (echo, _server) = spawn_echo().await;
    let (dead, _placeholder) = dead_addr();
    let bin = Binary::spawn(dead).await;

    // Nothing listens upstream: the client is reset and the failure counted.
    assert_refused(bin.proxy).await;
    assert_eq!(bin.status().await["upstream_failures"], 1);

    // The colon may arrive percent-encoded.
    let target = format!("/upstream?addr={}%3A{}", echo.ip(), echo.port());
    assert_eq!(bin.ok("POST", &target).await["ok"], true);
    let mut stream = connect_and_echo(bin.proxy).await;

    bin.ok("POST", "/delay?ms=100").await;
    assert_eq!(bin.status().await["delay_ms"], 100);
    let t0 = Instant::now();
    let back = roundtrip(&mut stream, b"delayed").await.expect("roundtrip");
    assert_eq!(back, b"delayed");
    assert!(t0.elapsed() >= Duration::from_millis(200));

    bin.ok("POST", "/delay?ms=0").await;
    assert_eq!(bin.status().await["delay_ms"], 0);
    let back = roundtrip(&mut stream, b"undelayed")
        .await
        .expect("roundtrip");
    assert_eq!(back, b"undelayed");
}

#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let (echo, _server) = spawn_echo().await;
    let bin = Binary::spawn(echo).await;

    bin.rejected("GET", "/nope", 404).await;
    bin.rejected("GET", "/cut", 405).await;
    bin.rejected("POST", "/status", 405).await;
    bin.rejected("POST", "/cut?mode=bogus", 400).await;
    bin.rejected("POST", "/delay", 400).await;
    bin.rejected("POST", "/delay?ms=abc", 400).await;
    bin.rejected("POST", "/delay?ms=-5", 400).await;
    bin.rejected("POST", "/refuse?ms=99999999999999999999999", 400)
        .await;
    bin.rejected("POST", "/upstream?addr=not-an-address", 400)
        .await;
    bin.rejected("POST", "/upstream", 400).await;
    bin.rejected("POST", "/stall?force=1", 400).await;
    bin.rejected("GET", "/wait", 400).await;
    bin.rejected("GET", "/wait?forwarded=1&timeout_ms=x", 400)
        .await;
    bin.rejected("GET", "/status?x=%zz", 400).await;

    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /status\r\n\r\n",
        b"GET /status HTTP/9\r\n\r\n",
        b"\xff\xfe\r\n\r\n",
        b"POST /heal HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
    ] {
        let (status, body) = bin.raw(garbage).await;
        assert_eq!(status, 400, "{garbage:?} -> {body}");
        assert!(body["error"].is_string());
    }

    // A request cut short (client half-closes before the blank line).
    let mut stream = TcpStream::connect(bin.control)
        .await
        .expect("connect control");
    stream.write_all(b"GET /sta").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut response = String::new();
    timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .expect("response timed out")
        .expect("read response");
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");

    // A body is accepted and ignored.
    let (status, _) = bin
        .raw(b"POST /heal HTTP/1.1\r\nContent-Length: 4\r\n\r\n{}{}")
        .await;
    assert_eq!(status, 200);

    // Nothing of the above disturbed the proxy.
    let _stream = connect_and_echo(bin.proxy).await;
    assert_eq!(bin.status().await["forwarded_total"], 1);
}

#[tokio::test]
async fn exits_cleanly_when_stdin_closes() {
    let (echo, _server) = spawn_echo().await;
    let mut bin = Binary::spawn(echo).await;
    let mut stream = connect_and_echo(bin.proxy).await;

    drop(bin.child.stdin.take());
    let status = timeout(TIMEOUT, bin.child.wait())
        .await
        .expect("did not exit after stdin closed")
        .expect("wait for child");
    assert!(status.success(), "exit status {status}");
    assert_reset(&mut stream).await;
}

#[cfg(unix)]
#[tokio::test]
async fn exits_cleanly_on_sigterm() {
    let (echo, _server) = spawn_echo().await;
    let mut bin = Binary::spawn(echo).await;
    let pid = bin.child.id().expect("child pid");
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("run kill");
    assert!(kill.success());
    let status = timeout(TIMEOUT, bin.child.wait())
        .await
        .expect("did not exit after SIGTERM")
        .expect("wait for child");
    assert!(status.success(), "exit status {status}");
}
