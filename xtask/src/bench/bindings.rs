//! (h) One session's throughput through the language packages, 100 B messages, each
//! direction: the Node.js package (`tether-session`, the napi-rs addon) against the raw `ws`
//! package, and the Python package (`tether`, pyo3) against the raw `websockets` package, in
//! the same run on the same machine. The Tether server runs in this process (as in (b)); the
//! raw clients talk to the raw tokio-tungstenite server of [`super::raw`] (`/down/N`,
//! `/up/N`). Each phase is a child process running `h_bench.js` or `h_bench.py`, which
//! prints its own rate (server → client: first update to last; client → server: first publish
//! to last completion, at most 4096 awaiting). Node.js's server → client is measured once more
//! with ten times the updates, as an info row: the phases above last under a tenth of a
//! second, so they measure V8's warm-up as much as the stream.
//!
//! `cargo xtask bench` installs what this needs before it measures ([`install`]): the release
//! addon (`cargo build --release -p tether-node`), `ws` (`npm install` into
//! `target/bench-h/node`), and a venv `target/bench-h/venv` with `websockets` and the package
//! built by maturin in release. The in-process quick test uses the debug builds the Node.js
//! and Python suites make (`target/debug/libtether_node.so`, `target/python-venv`) when they
//! are there (see [`Bindings::debug`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tether_server::Server;
use tokio::sync::mpsc;

use super::raw::{self, PAYLOAD};
use super::report::{Sample, Target, Unit};
use super::server_config;
use super::throughput::{DOWN_WINDOW, with_cpu};

const NODE_SCRIPT: &str = include_str!("h_bench.js");
const PYTHON_SCRIPT: &str = include_str!("h_bench.py");

/// No output from a child for this long is a failure.
const STALL: Duration = Duration::from_secs(60);

const TOPIC_DOWN: &str = "bench/down";

/// The steady-state row of server → client measures this many times the updates.
const STEADY: u64 = 10;

/// The `ws` version installed for the baseline.
const WS_PACKAGE: &str = "ws@8";

/// Where the packages measured are.
#[derive(Debug, Clone)]
pub(crate) struct Bindings {
    /// `target/bench-h`: the scripts, `node/` (with `ws` and a copy of the package).
    dir: PathBuf,
    /// The addon to load (`libtether_node.so`).
    addon: PathBuf,
    /// A Python interpreter with `tether` and `websockets` installed.
    python: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::test::root().join("target"))
}

fn addon_name() -> String {
    format!(
        "{}tether_node{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

impl Bindings {
    /// What [`install`] made: the release addon and `target/bench-h/venv`.
    pub(crate) fn release() -> Bindings {
        let target = target_dir();
        let dir = target.join("bench-h");
        Bindings {
            addon: target.join("release").join(addon_name()),
            python: venv_python(&dir.join("venv")),
            dir,
        }
    }

    /// The debug builds of the Node.js and Python suites (`cargo xtask test --only node`,
    /// `--only python`), if both are there; `ws` and `websockets` are installed as needed.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn debug() -> Option<Bindings> {
        let target = target_dir();
        let b = Bindings {
            dir: target.join("bench-h"),
            addon: target.join("debug").join(addon_name()),
            python: venv_python(&target.join("python-venv")),
        };
        let has_tether = Command::new(&b.python)
            .args(["-c", "import tether"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (b.addon.is_file() && has_tether && has_node()).then_some(b)
    }

    fn node_dir(&self) -> PathBuf {
        self.dir.join("node")
    }

    /// Writes the scripts and a fresh copy of the package's JavaScript; installs `ws` and
    /// `websockets` if they are missing.
    fn prepare(&self) -> Result<(), String> {
        let node = self.node_dir();
        let package = node.join("tether-session");
        std::fs::create_dir_all(&package).map_err(|e| format!("{}: {e}", package.display()))?;
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
        };
        write(node.join("h_bench.js"), NODE_SCRIPT)?;
        write(self.dir.join("h_bench.py"), PYTHON_SCRIPT)?;
        let source = crate::test::root().join("bindings").join("node");
        for file in ["index.js", "native.js"] {
            std::fs::copy(source.join(file), package.join(file))
                .map_err(|e| format!("copy bindings/node/{file}: {e}"))?;
        }
        if !self.addon.is_file() {
            return Err(format!(
                "no addon at {} (`cargo xtask bench` builds it)",
                self.addon.display()
            ));
        }
        install_ws(&node)?;
        install_websockets(&self.python)
    }
}

fn has_node() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `npm install ws` into `dir`, unless it is there.
fn install_ws(dir: &Path) -> Result<(), String> {
    if dir
        .join("node_modules")
        .join("ws")
        .join("package.json")
        .is_file()
    {
        return Ok(());
    }
    let manifest = dir.join("package.json");
    if !manifest.is_file() {
        std::fs::write(
            &manifest,
            "{ \"name\": \"tether-bench-h\", \"private\": true }\n",
        )
        .map_err(|e| format!("{}: {e}", manifest.display()))?;
    }
    let status = Command::new("npm")
        .current_dir(dir)
        .args(["install", "--no-audit", "--no-fund", WS_PACKAGE])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if !status.success() {
        return Err(format!("npm install {WS_PACKAGE} failed ({status})"));
    }
    Ok(())
}

/// `python -m pip install --quiet`, the packages to add.
fn pip_install(python: &Path) -> Command {
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    pip
}

/// `pip install websockets` for `python`, unless it has it.
fn install_websockets(python: &Path) -> Result<(), String> {
    let has = Command::new(python)
        .args(["-c", "import websockets"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has {
        return Ok(());
    }
    let status = pip_install(python)
        .arg("websockets")
        .status()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !status.success() {
        return Err(format!("pip install websockets failed ({status})"));
    }
    Ok(())
}

/// Builds and installs what (h) measures, in release (run by `cargo xtask bench` before it
/// measures): the addon, `ws`, and a venv with the Python package and `websockets`.
pub(crate) fn install() -> bool {
    let mut addon = crate::test::cargo();
    addon.args(["build", "--release", "-p", "tether-node", "--lib"]);
    if !crate::test::run_step("cargo build --release -p tether-node --lib", addon) {
        return false;
    }
    let b = Bindings::release();
    let venv = b.dir.join("venv");
    if !b.python.is_file() {
        let mut create = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
        create.arg("-m").arg("venv").arg(&venv);
        if !crate::test::run_step("python3 -m venv target/bench-h/venv", create) {
            return false;
        }
    }
    let mut pip = pip_install(&b.python);
    pip.current_dir(crate::test::root()).args([
        "--force-reinstall",
        "--no-deps",
        "./bindings/python",
    ]);
    if !crate::test::run_step(
        "pip install ./bindings/python into target/bench-h/venv (maturin, release)",
        pip,
    ) {
        return false;
    }
    match b.prepare() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("bench (h): {e}");
            false
        }
    }
}

/// What a script measured in one phase.
#[derive(Debug, Clone, Copy)]
struct Phase {
    /// Messages per second.
    rate: f64,
    /// Nanoseconds of CPU per message, the script's process (every thread of it) only.
    cpu: f64,
}

/// A script running in a child process; killed when dropped.
struct Script {
    child: std::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    what: String,
}

impl Script {
    fn start(b: &Bindings, lang: Lang, mode: &str, url: &str, n: u64) -> Result<Script, String> {
        let mut cmd = match lang {
            Lang::Node => {
                let mut c = Command::new("node");
                c.arg(b.node_dir().join("h_bench.js"))
                    .env("TETHER_ADDON", &b.addon);
                c
            }
            Lang::Python => {
                let mut c = Command::new(&b.python);
                c.arg(b.dir.join("h_bench.py"));
                c
            }
        };
        let what = format!("{} {mode}", lang.name());
        cmd.args([mode, url, &n.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Script { child, lines, what })
    }

    /// The next line of output.
    async fn line(&mut self) -> Result<String, String> {
        match tokio::time::timeout(STALL, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(format!("{} ended early", self.what)),
            Err(_) => Err(format!("{} stalled", self.what)),
        }
    }

    /// Reads up to the `rate` line: the phase's rate and the CPU per message of the script's
    /// process (its `cpu` line, which comes first). Then waits for the script to end (its
    /// output ends): it closes its session first. Killed before that, its session would stay
    /// on the server, kept for a resume and still subscribed, and every later phase's updates
    /// would go to it too.
    async fn rate(mut self) -> Result<Phase, String> {
        let mut cpu = None;
        let phase = loop {
            let line = self.line().await?;
            if let Some(ns) = line.strip_prefix("cpu ") {
                cpu = Some(self.number("cpu", ns)?);
            } else if let Some(rate) = line.strip_prefix("rate ") {
                let rate = self.number("rate", rate)?;
                let cpu = cpu.ok_or_else(|| format!("{}: no cpu line", self.what))?;
                break Phase { rate, cpu };
            }
        };
        loop {
            match tokio::time::timeout(STALL, self.lines.recv()).await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(phase),
                Err(_) => return Err(format!("{} did not end after its rate", self.what)),
            }
        }
    }

    fn number(&self, what: &str, text: &str) -> Result<f64, String> {
        text.trim()
            .parse::<f64>()
            .map_err(|e| format!("{}: bad {what} {text:?}: {e}", self.what))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        // It exits by itself after the rate line; a failed phase leaves it running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy)]
enum Lang {
    Node,
    Python,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Node => "node",
            Lang::Python => "python",
        }
    }
}

pub(crate) async fn run(b: &Bindings, n: u64) -> Result<Vec<Sample>, String> {
    b.prepare()?;
    let server = Server::bind(server_config()?)
        .await
        .map_err(|e| e.to_string())?;
    let (raw_addr, raw_server) = raw::start_local().await?;
    let result = async {
        let mut samples = Vec::new();
        for lang in [Lang::Node, Lang::Python] {
            samples.extend(measure(b, lang, &server, raw_addr, n).await?);
        }
        Ok::<_, String>(samples)
    }
    .await;
    raw_server.abort();
    server.shutdown(Duration::from_secs(1)).await;
    result
}

async fn measure(
    b: &Bindings,
    lang: Lang,
    server: &Server,
    raw_addr: std::net::SocketAddr,
    n: u64,
) -> Result<Vec<Sample>, String> {
    let url = server.url();
    let raw = format!("ws://{raw_addr}");
    let (tether_down, server_down) = with_cpu(n, down_tether(b, lang, server, n)).await?;
    let (raw_down, raw_server_down) = with_cpu(
        n,
        Script::start(b, lang, "raw-down", &format!("{raw}/down/{n}"), n)?.rate(),
    )
    .await?;
    // The same at STEADY times the updates (Node.js only): a phase of the row above lasts
    // under a tenth of a second, less than V8 takes to optimise the code it runs.
    let steady = match lang {
        Lang::Node => {
            let long = n * STEADY;
            let tether = down_tether(b, lang, server, long).await?;
            let raw = Script::start(b, lang, "raw-down", &format!("{raw}/down/{long}"), long)?
                .rate()
                .await?;
            Some((tether, raw))
        }
        Lang::Python => None,
    };
    let tether_up = Script::start(b, lang, "tether-up", &url, n)?.rate().await?;
    let raw_up = Script::start(b, lang, "raw-up", &format!("{raw}/up/{n}"), n)?
        .rate()
        .await?;
    let (package, baseline, down_target) = match lang {
        Lang::Node => ("Node.js", "ws", Target::RatioAtLeast(1.0)),
        Lang::Python => ("Python", "websockets", Target::None),
    };
    let note = format!("{n} messages of {PAYLOAD} B each way; raw = the {baseline} package");
    let cpu_note = format!(
        "CPU time of the {package} process (every thread: the interpreter's and the native \
         runtime's) over the phase, divided by the messages; the server's is not counted"
    );
    let key = lang.name();
    let mut samples = vec![
        Sample::new(
            &format!("h.{key}.down"),
            &format!("{package} package: topic updates server → client"),
            Unit::PerSec,
            tether_down.rate,
        )
        .baseline(raw_down.rate)
        .target(down_target)
        .note(note.clone()),
        Sample::new(
            &format!("h.{key}.down.cpu"),
            &format!("{package} package: server → client, client CPU per message (info)"),
            Unit::Ns,
            tether_down.cpu,
        )
        .baseline(raw_down.cpu)
        .note(cpu_note.clone()),
        Sample::new(
            &format!("h.{key}.down.server"),
            &format!("{package} package: server → client, server CPU per message (info)"),
            Unit::Ns,
            server_down,
        )
        .baseline(raw_server_down)
        .note(
            "CPU time of this process (the Tether server and the bench's publisher, or the raw \
             server) from the script's start to its rate line, divided by the messages: it \
             shares the machine's cores with the client",
        ),
        Sample::new(
            &format!("h.{key}.up"),
            &format!("{package} package: publishes client → server"),
            Unit::PerSec,
            tether_up.rate,
        )
        .baseline(raw_up.rate)
        .note(note),
        Sample::new(
            &format!("h.{key}.up.cpu"),
            &format!("{package} package: client → server, client CPU per message (info)"),
            Unit::Ns,
            tether_up.cpu,
        )
        .baseline(raw_up.cpu)
        .note(cpu_note),
    ];
    if let Some((tether, raw)) = steady {
        samples.push(
            Sample::new(
                &format!("h.{key}.down.steady"),
                &format!(
                    "{package} package: server → client, {STEADY}× the updates (info: past \
                     the warm-up)"
                ),
                Unit::PerSec,
                tether.rate,
            )
            .baseline(raw.rate)
            .note(format!(
                "{} messages of {PAYLOAD} B; raw = the {baseline} package",
                n * STEADY
            )),
        );
    }
    Ok(samples)
}

/// The server publishes `n` updates (within [`DOWN_WINDOW`] of what the script reported
/// received) to the script's subscription.
async fn down_tether(b: &Bindings, lang: Lang, server: &Server, n: u64) -> Result<Phase, String> {
    if server.session_count() != 0 {
        return Err("a session of an earlier phase is still on the server".into());
    }
    let mut script = Script::start(b, lang, "tether-down", &server.url(), n)?;
    while script.line().await? != "ready" {}
    let payload = Bytes::from(vec![0x5a; PAYLOAD]);
    let mut received = 0u64;
    for i in 0..n {
        while i.saturating_sub(received) >= DOWN_WINDOW {
            let line = script.line().await?;
            if let Some(k) = line.strip_prefix("got ") {
                received = k.trim().parse().unwrap_or(received);
            }
        }
        server
            .publish(TOPIC_DOWN, payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    script.rate().await
}
