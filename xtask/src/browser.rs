//! Tether in the browser (`bindings/browser`): building the package (the Rust core compiled to
//! WebAssembly, `wasm-bindgen`, the TypeScript shell), and the page server that
//! `cargo xtask demo --browser` and the browser tests share.
//!
//! The page server is a small HTTP server here, in the xtask, next to an embedded Tether
//! server and the fault proxy: it serves the demo page, the package and the examples, and
//! passes `/proxy/*` through to the fault proxy's HTTP control API, so that the page's cut,
//! stall and refuse buttons use that API from the page's own origin (the control API sends no
//! CORS headers, and a test tool need not). It also gives the page a server side: numbered
//! messages published by the server (`POST /api/feed`), and a tally of what a direct
//! subscriber received (`GET /api/tally`), to check that nothing was lost either way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tether::Session;
use tether_server::{Server, ServerConfig};
use tether_testkit::FaultProxy;

use crate::test::{cargo, root, run_step};

/// The package's directory.
pub(crate) fn dir() -> PathBuf {
    root().join("bindings").join("browser")
}

/// The `wasm-bindgen` crate's version in Cargo.lock: the CLI must be exactly the same.
fn wasm_bindgen_version() -> Option<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            let version = lines.next()?.strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_owned());
        }
    }
    None
}

/// `wasm-bindgen` of the locked version, installed into target/tools when missing.
fn wasm_bindgen() -> Option<PathBuf> {
    let Some(version) = wasm_bindgen_version() else {
        eprintln!("Cargo.lock names no wasm-bindgen version");
        return None;
    };
    let tools = root().join("target").join("tools");
    let bin = tools.join("bin").join("wasm-bindgen");
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed.as_deref() == Some(&format!("wasm-bindgen {version}")) {
        return Some(bin);
    }
    let mut install = cargo();
    install
        .args([
            "install",
            "wasm-bindgen-cli",
            "--version",
            &version,
            "--root",
        ])
        .arg(&tools)
        // Its build stays out of the shared target/ and goes once installed.
        .env("CARGO_TARGET_DIR", tools.join("build"));
    let ok = run_step(
        &format!("cargo install wasm-bindgen-cli --version {version} (into target/tools)"),
        install,
    );
    let _ = std::fs::remove_dir_all(tools.join("build"));
    ok.then_some(bin)
}

/// The wasm target, added with rustup when missing.
fn wasm_target() -> bool {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown"));
    if installed {
        return true;
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", "wasm32-unknown-unknown"]);
    if run_step("rustup target add wasm32-unknown-unknown", add) {
        return true;
    }
    eprintln!(
        "the wasm32-unknown-unknown target cannot be installed: the browser package cannot be built"
    );
    false
}

/// The compiled module, before wasm-bindgen.
fn wasm_file() -> PathBuf {
    root()
        .join("target")
        .join("wasm32-unknown-unknown")
        .join("wasm")
        .join("tether_wasm.wasm")
}

/// The module as the page downloads it.
pub(crate) fn wasm_output() -> PathBuf {
    dir().join("dist").join("wasm").join("tether_wasm_bg.wasm")
}

/// Builds the package into bindings/browser/dist: the core to WebAssembly (`--profile wasm`),
/// its JavaScript bindings (`wasm-bindgen --target web`), `npm install` (TypeScript, and the
/// browser driver for the tests), then `tsc`.
pub(crate) fn build() -> bool {
    if !wasm_target() {
        return false;
    }
    let Some(bindgen) = wasm_bindgen() else {
        return false;
    };
    let mut core = cargo();
    core.args([
        "build",
        "-p",
        "tether-wasm",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
    ]);
    if !run_step(
        "cargo build -p tether-wasm --target wasm32-unknown-unknown --profile wasm",
        core,
    ) {
        return false;
    }
    let mut bind = Command::new(bindgen);
    bind.args(["--target", "web", "--out-name", "tether_wasm", "--out-dir"])
        .arg(dir().join("dist").join("wasm"))
        .arg(wasm_file());
    if !run_step(
        "wasm-bindgen --target web (into bindings/browser/dist/wasm)",
        bind,
    ) {
        return false;
    }
    let mut install = Command::new("npm");
    install
        .current_dir(dir())
        .args(["install", "--no-audit", "--no-fund"]);
    if !run_step("npm install in bindings/browser", install) {
        return false;
    }
    let mut tsc = Command::new("npx");
    tsc.current_dir(dir()).args(["tsc", "-p", "tsconfig.json"]);
    if !run_step("tsc -p bindings/browser (into dist/)", tsc) {
        return false;
    }
    if let Some(gz) = gzip_size(&wasm_output()) {
        println!("tether_wasm_bg.wasm: {} bytes gzip -9", gz);
    }
    true
}

/// The size of `file` compressed with `gzip -9 -n` (no name or time in the header, as a web
/// server's `Content-Encoding: gzip` sends it; the same bytes give the same size).
pub(crate) fn gzip_size(file: &Path) -> Option<u64> {
    let out = Command::new("gzip").arg("-9nc").arg(file).output().ok()?;
    out.status.success().then_some(out.stdout.len() as u64)
}

// ---------------------------------------------------------------------------------------------
// The server side: a Tether server, the fault proxy, and the page server.

/// What a direct subscriber saw of one topic's numbered values.
#[derive(Debug, Default, Clone)]
struct Tally {
    received: u64,
    seen: Vec<bool>,
    distinct: u64,
    duplicates: u64,
    reordered: u64,
    last: u64,
}

impl Tally {
    fn add(&mut self, n: u64) {
        self.received += 1;
        let i = n as usize;
        if i >= self.seen.len() {
            self.seen.resize(i + 1, false);
        }
        if self.seen[i] {
            self.duplicates += 1;
        } else {
            self.seen[i] = true;
            self.distinct += 1;
        }
        if n <= self.last {
            self.reordered += 1;
        }
        self.last = n;
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "received": self.received,
            "distinct": self.distinct,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "last": self.last,
        })
    }
}

type Tallies = Arc<Mutex<HashMap<String, Tally>>>;

/// The embedded server, the proxy in front of it, its control API, and the page server.
pub(crate) struct Stage {
    server: Arc<Server>,
    proxy: FaultProxy,
    observer: Session,
    page: SocketAddr,
    control: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    server_url: String,
    proxy_url: String,
    control: SocketAddr,
    /// Values for the server to publish (topic, value), in order.
    publish: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    tallies: Tallies,
}

impl Stage {
    /// Starts everything on loopback; the page server on `page_port` (0: any free port).
    pub(crate) async fn start(page_port: u16) -> Result<Stage, Box<dyn std::error::Error>> {
        let mut config = ServerConfig::dev();
        config.listen = "127.0.0.1:0".parse()?;
        // Short enough that a stall is found within 1.5 s.
        config.ping_period_ms = 1000;
        let server = Server::bind(config).await?;
        let proxy = FaultProxy::start("127.0.0.1:0".parse()?, server.local_addr()).await?;
        let (control, control_task) =
            tether_testkit::serve_control(proxy.clone(), "127.0.0.1:0".parse()?).await?;

        // A subscriber over a direct connection counts what the pages publish.
        let tallies: Tallies = Arc::default();
        let observer = Session::builder(&server.url())
            .principal("control")
            .password("password")
            .open()
            .await?;
        let t = tallies.clone();
        observer
            .subscribe_with("**", move |update| {
                if update.snapshot {
                    return;
                }
                if let Some(n) = std::str::from_utf8(&update.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    let mut tallies = t.lock().unwrap_or_else(|e| e.into_inner());
                    tallies.entry(update.topic.to_string()).or_default().add(n);
                }
            })
            .await?;

        // The server publishes through one task, in order.
        let (publish, mut publish_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        let server = Arc::new(server);
        let publisher = {
            let server = server.clone();
            tokio::spawn(async move {
                while let Some((topic, value)) = publish_rx.recv().await {
                    let _ = server.publish(&topic, value).await;
                }
            })
        };
        let shared = Arc::new(Shared {
            server_url: server.url(),
            proxy_url: format!("ws://{}", proxy.local_addr()),
            control,
            publish,
            tallies,
        });
        let listener = TcpListener::bind(("127.0.0.1", page_port)).await?;
        let page = listener.local_addr()?;
        let serve = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = handle(stream, &shared).await;
                });
            }
        });
        Ok(Stage {
            server,
            proxy,
            observer,
            page,
            control,
            tasks: vec![control_task, publisher, serve],
        })
    }

    /// `http://127.0.0.1:port`, where the page server answers.
    pub(crate) fn page_url(&self) -> String {
        format!("http://{}", self.page)
    }

    /// The fault proxy's control API (`127.0.0.1:port`).
    pub(crate) fn control(&self) -> SocketAddr {
        self.control
    }

    /// The WebSocket URL through the fault proxy.
    pub(crate) fn proxy_url(&self) -> String {
        format!("ws://{}", self.proxy.local_addr())
    }

    /// Stops everything.
    pub(crate) async fn stop(self) {
        self.observer.close().await;
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.proxy.shutdown().await;
        // The publisher had the other reference; it has ended.
        if let Ok(server) = Arc::try_unwrap(self.server) {
            server.shutdown(Duration::from_secs(1)).await;
        }
    }
}

/// One HTTP/1.1 request, answered with `Connection: close`.
async fn handle(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > 16 * 1024 {
            return respond(&mut stream, 431, "text/plain", b"head too large").await;
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query: HashMap<&str, &str> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    if let Some(rest) = path.strip_prefix("/proxy/") {
        return pass_to_control(&mut stream, shared.control, method, rest, query).await;
    }
    match (method, path) {
        ("GET", "/config.json") => {
            let body = serde_json::json!({
                "url": shared.proxy_url,
                "direct": shared.server_url,
                "control": "/proxy",
            })
            .to_string();
            respond(&mut stream, 200, "application/json", body.as_bytes()).await
        }
        ("GET", "/api/tally") => {
            let topic = query.get("topic").copied().unwrap_or_default();
            let tally = shared
                .tallies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(topic)
                .cloned()
                .unwrap_or_default();
            let body = tally.json().to_string();
            respond(&mut stream, 200, "application/json", body.as_bytes()).await
        }
        ("POST", "/api/feed") => {
            let topic = query.get("topic").copied().unwrap_or_default().to_owned();
            let count: u64 = query.get("count").and_then(|c| c.parse().ok()).unwrap_or(0);
            let interval = query
                .get("interval_ms")
                .and_then(|c| c.parse().ok())
                .unwrap_or(10u64);
            let publish = shared.publish.clone();
            if tether_protocol::topic::validate_topic(&topic).is_err() || count == 0 {
                return respond(&mut stream, 400, "text/plain", b"topic and count needed").await;
            }
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_millis(interval.max(1)));
                for n in 1..=count {
                    ticker.tick().await;
                    if publish.send((topic.clone(), n.to_string())).is_err() {
                        return;
                    }
                }
            });
            respond(&mut stream, 200, "application/json", b"{\"ok\":true}").await
        }
        ("GET", _) => serve_file(&mut stream, path).await,
        _ => respond(&mut stream, 405, "text/plain", b"method not allowed").await,
    }
}

/// Forwards a request to the fault proxy's control API and its answer back.
async fn pass_to_control(
    stream: &mut TcpStream,
    control: SocketAddr,
    method: &str,
    path: &str,
    query: HashMap<&str, &str>,
) -> std::io::Result<()> {
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut upstream = TcpStream::connect(control).await?;
    let request = format!(
        "{method} /{path}?{} HTTP/1.1\r\nHost: {control}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        query.join("&")
    );
    upstream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).await?;
    stream.write_all(&answer).await?;
    stream.shutdown().await
}

/// The files the page server serves, by URL prefix.
fn mounts() -> [(&'static str, PathBuf); 3] {
    [
        ("/tether/", dir().join("dist")),
        ("/examples/", root().join("examples").join("browser")),
        ("/", dir().join("demo")),
    ]
}

async fn serve_file(stream: &mut TcpStream, path: &str) -> std::io::Result<()> {
    let path = if path == "/" { "/index.html" } else { path };
    let file = mounts().into_iter().find_map(|(prefix, base)| {
        let rest = Path::new(path.strip_prefix(prefix)?);
        // Plain names only: no `..`, no absolute parts.
        rest.components()
            .all(|c| matches!(c, Component::Normal(_)))
            .then(|| base.join(rest))
    });
    let Some(file) = file.filter(|f| f.is_file()) else {
        return respond(stream, 404, "text/plain", b"not found").await;
    };
    let kind = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "text/plain; charset=utf-8",
    };
    // Small local files: a blocking read is fine here.
    let body = std::fs::read(&file)?;
    respond(stream, 200, kind, &body).await
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    kind: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let text = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {text}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

// ---------------------------------------------------------------------------------------------
// cargo xtask demo --browser

/// Builds the package, starts the stage on `port` and serves the demo page until Ctrl-C.
pub(crate) fn demo(port: u16) -> bool {
    if !build() {
        return false;
    }
    let Some(runtime) = crate::test::runtime() else {
        return false;
    };
    let ok = runtime.block_on(async {
        let stage = match Stage::start(port).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot start the demo (is port {port} free? try --port 0): {e}");
                return false;
            }
        };
        let (gz, raw) = (
            gzip_size(&wasm_output()).unwrap_or(0),
            std::fs::metadata(wasm_output()).map_or(0, |m| m.len()),
        );
        println!(
            "\ntether in the browser: open {}/ in a browser\n\
             - the page's session goes through the fault proxy {} to the server (ping period 1 s)\n\
             - its buttons cut, stall and refuse through the proxy's control API ({}, as /proxy/* of the page)\n\
             - the example port of the seed's JavaScript: {}/examples/reconnect.html\n\
             - WebAssembly module: {raw} bytes, {gz} bytes gzip -9\n\
             Ctrl-C stops it.",
            stage.page_url(),
            stage.proxy_url(),
            stage.control(),
            stage.page_url(),
        );
        let _ = tokio::signal::ctrl_c().await;
        println!("stopping");
        stage.stop().await;
        true
    });
    tether::shutdown(Duration::from_secs(2));
    ok
}
