//! Server child processes (so that their memory is theirs alone), their RSS, and the
//! file-descriptor limit.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Tells a re-run test binary which server to be (see [`Launcher::Harness`]).
pub(crate) const CHILD_ENV: &str = "TETHER_BENCH_CHILD";

/// How to start server processes.
#[derive(Debug, Clone)]
pub(crate) enum Launcher {
    /// `target/release/tether-server`, and this xtask with `bench --child ROLE` for the raw
    /// server, the fault proxies and the storm's probe.
    Binaries { server: PathBuf, xtask: PathBuf },
    /// The test harness runs itself with only `test` (an ignored test that calls
    /// [`child_main`]), since `cargo test` builds no binary a test could start.
    #[cfg_attr(not(test), allow(dead_code))]
    Harness { exe: PathBuf, test: String },
}

/// A server (or proxy) running in a child process; killed when dropped.
pub(crate) struct ChildServer {
    child: std::process::Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its standard output after the `listen` line, line by line.
    lines: mpsc::Receiver<String>,
    files: Vec<PathBuf>,
}

impl ChildServer {
    /// Its WebSocket URL.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident set size, in bytes.
    pub(crate) fn rss(&self) -> Result<u64, String> {
        rss_of(self.child.id())
    }

    /// Writes a command line to its standard input (a pipe write: does not wait).
    pub(crate) fn send_line(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot write to the child: {e}"))
    }

    /// The next line it printed, waiting at most `timeout`.
    pub(crate) fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn temp_path(kind: &str, ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tether-bench-{}-{}-{kind}.{ext}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Launcher {
    /// This program as a child of the given role (see [`child_main`]).
    fn xtask_child(&self, role: &str) -> Command {
        match self {
            Launcher::Binaries { xtask, .. } => {
                let mut c = Command::new(xtask);
                c.args(["bench", "--child", role]);
                c
            }
            Launcher::Harness { exe, test } => {
                let mut c = Command::new(exe);
                c.args([
                    test,
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, role);
                c
            }
        }
    }
}

/// Starts a Tether server with configuration `toml`, listening on any free loopback port.
pub(crate) fn spawn_tether_server(launcher: &Launcher, toml: &str) -> Result<ChildServer, String> {
    let config = temp_path("server", "toml");
    std::fs::write(&config, toml).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let mut cmd = match launcher {
        Launcher::Binaries { server, .. } => {
            let mut c = Command::new(server);
            c.arg("--config")
                .arg(&config)
                .args(["--listen", "127.0.0.1:0"]);
            c
        }
        Launcher::Harness { .. } => launcher.xtask_child(&format!("tether:{}", config.display())),
    };
    cmd.env("RUST_LOG", "warn");
    start(cmd, "tether-server", vec![config])
}

/// Starts the raw tokio-tungstenite server, with tungstenite's default read buffer (0) or
/// `read_buffer` bytes.
pub(crate) fn spawn_raw_server(
    launcher: &Launcher,
    read_buffer: usize,
) -> Result<ChildServer, String> {
    start(
        launcher.xtask_child(&format!("raw:{read_buffer}")),
        "raw server",
        Vec::new(),
    )
}

/// Starts a fault proxy in front of `upstream`; the line `cut` on its standard input cuts
/// every connection (RST) and it answers `{"cut":N}`.
pub(crate) fn spawn_proxy(
    launcher: &Launcher,
    upstream: SocketAddr,
) -> Result<ChildServer, String> {
    start(
        launcher.xtask_child(&format!("proxy:{upstream}")),
        "fault proxy",
        Vec::new(),
    )
}

/// Starts the probe process of the storm (see [`super::storm::probe_main`]), connected to
/// `url`; it prints its `listen` line once its session is open.
pub(crate) fn spawn_probe(launcher: &Launcher, url: &str) -> Result<ChildServer, String> {
    start(
        launcher.xtask_child(&format!("probe:{url}")),
        "probe",
        Vec::new(),
    )
}

/// Reads `{"listen":"ADDR"}`, wherever it starts on the line (the test harness prints the
/// test's name first).
fn parse_listen(line: &str) -> Option<SocketAddr> {
    let start = line.find("{\"listen\"")?;
    let v: serde_json::Value = serde_json::from_str(line[start..].trim()).ok()?;
    v.get("listen")?.as_str()?.parse().ok()
}

fn start(mut cmd: Command, what: &str, mut files: Vec<PathBuf>) -> Result<ChildServer, String> {
    let log = temp_path("child", "log");
    let stderr = std::fs::File::create(&log).map_err(|e| format!("cannot create a log: {e}"))?;
    files.push(log.clone());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {what} ({:?}): {e}", cmd.get_program()))?;
    let out = child.stdout.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Some(out) = out else { return };
        // Keep reading to the end so that the child never blocks on a full pipe.
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = ChildServer {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        lines: rx,
        files,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match server.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = parse_listen(&line) {
                    server.addr = addr;
                    return Ok(server);
                }
            }
            Err(_) => {
                drop(server);
                return Err(format!(
                    "{what} did not print its address; its log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default().trim()
                ));
            }
        }
    }
}

/// The body of a child process: prints `{"listen":"ADDR"}`, then serves until its standard
/// input closes. `role` is `raw:<read buffer size, 0 for the default>` (the raw server),
/// `tether:<config file>` (a Tether server, in the test suite), `proxy:<upstream>` (a fault
/// proxy that cuts on the line `cut`) or `probe:<url>` (the storm's probe session). Returns
/// only on failure (the probe returns when stopped).
pub(crate) fn child_main(role: &str) -> bool {
    if let Some(url) = role.strip_prefix("probe:") {
        return super::storm::probe_main(url);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return false;
        }
    };
    let started = runtime.block_on(async {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        if let Some(size) = role.strip_prefix("raw:") {
            let read_buffer = size.parse::<usize>().map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(any)
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let config = (read_buffer > 0).then(|| {
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(read_buffer)
            });
            tokio::spawn(super::raw::serve_with(listener, config));
            Ok::<_, String>((addr, Running::Task))
        } else if let Some(path) = role.strip_prefix("tether:") {
            let mut config = tether_server::ServerConfig::from_file(std::path::Path::new(path))
                .map_err(|e| e.to_string())?;
            config.listen = any;
            let server = tether_server::Server::bind(config)
                .await
                .map_err(|e| e.to_string())?;
            Ok((server.local_addr(), Running::Server(Box::new(server))))
        } else if let Some(upstream) = role.strip_prefix("proxy:") {
            let upstream: SocketAddr = upstream.parse().map_err(|e| format!("{e}"))?;
            let proxy = tether_testkit::FaultProxy::start(any, upstream)
                .await
                .map_err(|e| e.to_string())?;
            Ok((proxy.local_addr(), Running::Proxy(proxy)))
        } else {
            Err(format!("unknown role {role:?}"))
        }
    });
    let (addr, running) = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench child: {e}");
            return false;
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{{\"listen\":\"{addr}\"}}");
    let _ = out.flush();
    // Serve on the runtime's workers until the parent closes our standard input.
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        if let (Running::Proxy(proxy), "cut") = (&running, line.trim()) {
            let n = proxy.cut(tether_testkit::CutMode::Rst);
            let _ = writeln!(out, "{{\"cut\":{n}}}");
            let _ = out.flush();
        }
    }
    std::process::exit(0)
}

/// What a child process keeps alive.
enum Running {
    Task,
    Server(#[allow(dead_code, reason = "kept alive, never read")] Box<tether_server::Server>),
    Proxy(tether_testkit::FaultProxy),
}

/// The resident set size of a process, from `/proc/<pid>/status`.
pub(crate) fn rss_of(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Raises this process's descriptor limit (inherited by the children started later) to
/// `want`, raising the hard limit too when allowed; returns the soft limit in force.
pub(crate) fn raise_fd_limit(want: u64) -> u64 {
    use rlimit::Resource;
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return 1024;
    };
    if soft >= want {
        return soft;
    }
    if Resource::NOFILE.set(want, hard.max(want)).is_err() {
        let _ = Resource::NOFILE.set(hard.min(want), hard);
    }
    Resource::NOFILE.get().map_or(soft, |(s, _)| s)
}

/// This process's descriptor limit (soft).
pub(crate) fn fd_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _)| soft)
}

/// `/proc/loadavg`'s first three fields.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
