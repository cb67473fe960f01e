//! The install checks of `cargo xtask dist`: every artefact installed the way its ecosystem
//! does, into fresh temporary directories, by commands whose environment is emptied but for a
//! `PATH` without cargo or rustc (checked), a temporary `HOME` and the locale. In each
//! language a short program (`smoke/`) then opens a session against the real server (run
//! here, in this process) through the fault proxy, makes a round trip, prints `ready <id>`;
//! the proxy cuts the connection (TCP reset); the program waits for the session to resume,
//! makes a second round trip, checks that it received exactly `one`, `two` with the same
//! session id, closes, and prints `ok <id>`.
//!
//! One check needs Rust on purpose: the Python sdist is built from source in a temporary
//! directory outside the workspace (sharing target/ as a cache), then installed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tether_server::{Server, ServerConfig};
use tether_testkit::{CutMode, FaultProxy};

use super::{
    NPM_PLATFORM, NUGET_ID, NUGET_TFM, Profile, c_sdk_name, capture, copy, expect_file, file_name,
    find_one, maven_dir, mkdir, read, remove, step, workspace_version, write,
};
use crate::test::{Counts, root};

/// The files of the Swift package, relative to bindings/uniffi/swift (and to the package
/// directory in the tarball).
pub(crate) const SWIFT_PACKAGE_FILES: [&str; 5] = [
    "Package.swift",
    "README.md",
    "Sources/Tether/Tether.swift",
    "Sources/TetherFFI/TetherFFI.h",
    "Sources/TetherFFI/module.modulemap",
];

/// The checks' `PATH`: the system's directories only. `~/.cargo/bin` (rustup's cargo and
/// rustc) is not among them; [`no_rust`] checks that no other cargo or rustc is either.
const NO_RUST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A failure guard for one program run (it normally ends within seconds).
const PROGRAM_GUARD: Duration = Duration::from_secs(120);

const SMOKE_JS: &str = include_str!("smoke/smoke.js");
const SMOKE_PY: &str = include_str!("smoke/smoke.py");
const SMOKE_JAVA: &str = include_str!("smoke/Smoke.java");
const CONSUMER_POM: &str = include_str!("smoke/pom.xml");
const SMOKE_C: &str = include_str!("smoke/smoke.c");
const SMOKE_CS: &str = include_str!("smoke/Smoke.cs");

/// The interpreter behind `python3` (or `$PYTHON`), resolved to its real path: a pyenv shim
/// does not work without pyenv's environment.
pub(crate) fn host_python() -> Result<PathBuf, String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut which = Command::new(&python);
    which.args(["-c", "import sys; print(sys.executable)"]);
    let path = capture(&python, &mut which)?;
    Ok(PathBuf::from(path.trim()))
}

/// What the checks share: the artefacts, a scratch directory, the server.
struct Checks {
    out: PathBuf,
    version: String,
    /// A fresh temporary directory for this run.
    work: PathBuf,
    runtime: tokio::runtime::Runtime,
    server: SocketAddr,
}

type Check = fn(&Checks) -> Result<String, String>;

/// The scratch directory, a runtime and the server (bound to a free loopback port).
fn prepare(out: &Path) -> Result<(Checks, Server), String> {
    let version = workspace_version(&root())?;
    let work = std::env::temp_dir().join(format!("tether-dist-check-{}", std::process::id()));
    remove(&work)?;
    mkdir(&work)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut config = ServerConfig::dev();
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = runtime
        .block_on(Server::bind(config))
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let checks = Checks {
        out: out.to_path_buf(),
        version,
        work,
        runtime,
        server: server.local_addr(),
    };
    Ok((checks, server))
}

/// Installs and runs every artefact in `out`; each check counts as a test in `counts`.
pub(crate) fn run(out: &Path, profile: Profile, counts: &mut Counts) -> bool {
    println!(
        "\n==> install checks of {} ({} build; no cargo or rustc on PATH)",
        out.display(),
        profile.dir()
    );
    let prepared = prepare(out);
    let (checks, server) = match prepared {
        Ok(ready) => ready,
        Err(e) => {
            eprintln!("install checks: {e}");
            counts.failed += 1;
            return false;
        }
    };
    println!(
        "server ws://{} (tether-server, in this process); scratch {}",
        checks.server,
        checks.work.display()
    );

    let all: [(&str, Check); 11] = [
        ("SHA256SUMS matches every artefact", sums),
        ("no cargo or rustc on the checks' PATH", no_rust),
        (
            "npm: both tarballs into a fresh project, program survives a cut",
            node,
        ),
        (
            "pip: the wheel into a fresh venv, program survives a cut",
            python_wheel,
        ),
        (
            "pip: the sdist builds outside the workspace (with Rust)",
            python_sdist,
        ),
        (
            "Maven: a consumer project, one dependency, program survives a cut",
            java,
        ),
        (
            "C: pkg-config from the unpacked SDK, shared, program survives a cut",
            c_shared,
        ),
        ("C: static library, program survives a cut", c_static),
        (
            ".NET: nuget install, mcs, mono, program survives a cut",
            dotnet,
        ),
        (
            ".NET: the unpacked layout equals the .nupkg's",
            dotnet_layout,
        ),
        (
            "Swift: the package's sources (not compiled: no Swift toolchain)",
            swift,
        ),
    ];
    let mut results = Vec::new();
    for (name, check) in all {
        println!("\n==> check: {name}");
        let started = Instant::now();
        let result = check(&checks);
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(detail) => println!("ok   {name} ({seconds:.1} s): {detail}"),
            Err(why) => println!("FAIL {name} ({seconds:.1} s): {why}"),
        }
        results.push((name, result, seconds));
    }
    checks
        .runtime
        .block_on(server.shutdown(Duration::from_secs(1)));

    println!("\n==> install checks of {}", out.display());
    let (mut passed, mut failed) = (0u64, 0u64);
    for (name, result, seconds) in &results {
        match result {
            Ok(detail) => {
                passed += 1;
                println!("  ok   {name} ({seconds:.1} s): {detail}");
            }
            Err(why) => {
                failed += 1;
                println!("  FAIL {name} ({seconds:.1} s): {why}");
            }
        }
    }
    if failed == 0 {
        let _ = remove(&checks.work);
    } else {
        println!("  (scratch directory kept: {})", checks.work.display());
    }
    println!("{passed} passed, {failed} failed");
    counts.passed += passed;
    counts.failed += failed;
    failed == 0
}

impl Checks {
    /// A fresh directory under the scratch directory.
    fn dir(&self, name: &str) -> Result<PathBuf, String> {
        let dir = self.work.join(name);
        remove(&dir)?;
        mkdir(&dir)?;
        Ok(dir)
    }

    /// `program`, with an environment holding only a `PATH` without cargo or rustc, `home`
    /// as `HOME`, the scratch directory as `TMPDIR`, and the locale.
    fn clean(&self, program: impl AsRef<std::ffi::OsStr>, home: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", NO_RUST_PATH)
            .env("HOME", home)
            .env("TMPDIR", &self.work)
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// Runs a smoke program (`cmd`, to which the URL and the topic `dist/<name>` are appended)
    /// through a fresh fault proxy: cuts its connection when it prints `ready <id>`, then
    /// expects `ok <id>` and success.
    fn smoke(&self, name: &str, mut cmd: Command) -> Result<String, String> {
        let proxy = self
            .runtime
            .block_on(FaultProxy::start(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                self.server,
            ))
            .map_err(|e| format!("fault proxy: {e}"))?;
        let log = self.work.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.arg(format!("ws://{}", proxy.local_addr()))
            .arg(format!("dist/{name}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let result = self.watch(name, cmd, &proxy);
        self.runtime.block_on(proxy.shutdown());
        result.map_err(|e| {
            let text = read(&log).unwrap_or_default();
            let from = (text.len().saturating_sub(3000)..text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            format!("{e}; stderr: {}", text[from..].trim())
        })
    }

    fn watch(&self, name: &str, mut cmd: Command, proxy: &FaultProxy) -> Result<String, String> {
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {name}: {e}"))?;
        let (done, wait) = mpsc::channel::<()>();
        let pid = child.id().to_string();
        let guard = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(PROGRAM_GUARD) {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                return true;
            }
            false
        });
        let (mut ready, mut ok, mut cut) = (None, None, 0);
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("  | {line}");
                if let Some(id) = line.strip_prefix("ready ") {
                    ready = Some(id.trim().to_owned());
                    cut = proxy.cut(CutMode::Rst);
                    println!("  (cut {cut} connection(s) with a TCP reset)");
                } else if let Some(id) = line.strip_prefix("ok ") {
                    ok = Some(id.trim().to_owned());
                }
            }
        }
        let status = child.wait().map_err(|e| format!("{name}: {e}"));
        let _ = done.send(());
        let timed_out = guard.join().unwrap_or(false);
        let status = status?;
        if timed_out {
            return Err(format!(
                "{name} ran past {} s and was killed",
                PROGRAM_GUARD.as_secs()
            ));
        }
        if !status.success() {
            return Err(format!("{name} failed ({status})"));
        }
        let ready = ready.ok_or_else(|| format!("{name} never printed `ready <id>`"))?;
        if cut == 0 {
            return Err("the proxy had no connection to cut".into());
        }
        let valid = ready.len() == 32 && ready.chars().all(|c| c.is_ascii_hexdigit());
        if !valid {
            return Err(format!("{name} printed a strange session id {ready:?}"));
        }
        match ok {
            Some(id) if id == ready => Ok(format!("session {ready} resumed after the cut")),
            Some(id) => Err(format!("session id {ready} before the cut, {id} after")),
            None => Err(format!("{name} never printed `ok <id>`")),
        }
    }
}

fn sums(c: &Checks) -> Result<String, String> {
    let home = c.dir("sums-home")?;
    let mut sum = c.clean("sha256sum", &home);
    sum.current_dir(&c.out)
        .args(["--check", "--strict", "SHA256SUMS"]);
    let output = sum
        .output()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    let report = String::from_utf8_lossy(&output.stdout);
    let (good, bad): (Vec<&str>, Vec<&str>) = report.lines().partition(|l| l.ends_with(": OK"));
    if !output.status.success() || !bad.is_empty() {
        return Err(format!(
            "{}{}",
            bad.join("; "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    if good.is_empty() {
        return Err("SHA256SUMS lists no file".into());
    }
    Ok(format!("{} files", good.len()))
}

fn no_rust(c: &Checks) -> Result<String, String> {
    let home = c.dir("no-rust-home")?;
    let mut probe = c.clean("sh", &home);
    probe.args([
        "-c",
        "for t in cargo rustc rustup; do command -v $t; done; true",
    ]);
    let found = capture("sh", &mut probe)?;
    if found.trim().is_empty() {
        Ok(format!("PATH={NO_RUST_PATH}"))
    } else {
        Err(format!("found on PATH: {}", found.trim()))
    }
}

fn node(c: &Checks) -> Result<String, String> {
    let dir = c.dir("node")?;
    let home = c.dir("node-home")?;
    write(
        &dir.join("package.json"),
        "{ \"name\": \"tether-dist-check\", \"version\": \"1.0.0\", \"private\": true }\n",
    )?;
    let npm = c.out.join("npm");
    let main = npm.join(format!("tether-session-{}.tgz", c.version));
    let platform = npm.join(format!("tether-session-{NPM_PLATFORM}-{}.tgz", c.version));
    let mut install = c.clean("npm", &home);
    install
        .current_dir(&dir)
        // --offline: nothing may come from the registry, the optional dependency included.
        .args([
            "install",
            "--offline",
            "--no-audit",
            "--no-fund",
            "--foreground-scripts",
        ])
        .env("npm_config_update_notifier", "false")
        .arg(&main)
        .arg(&platform);
    step(
        "npm install --offline <main tarball> <platform tarball>",
        install,
    )?;

    let modules = dir.join("node_modules");
    let addon = modules
        .join(format!("tether-session-{NPM_PLATFORM}"))
        .join(format!("tether-session.{NPM_PLATFORM}.node"));
    expect_file(&addon)?;
    let built_here = std::fs::read_dir(modules.join("tether-session"))
        .map_err(|e| format!("node_modules/tether-session: {e}"))?
        .filter_map(Result::ok)
        .any(|e| file_name(&e.path()).ends_with(".node"));
    if built_here {
        return Err("an addon was built inside node_modules/tether-session".into());
    }
    // The platform package satisfies the main package's optional dependency on it (the edge
    // through which npm selects it when installing from a registry).
    let mut explain = c.clean("npm", &home);
    explain.current_dir(&dir).args([
        "explain",
        "--json",
        &format!("tether-session-{NPM_PLATFORM}"),
    ]);
    let explained: serde_json::Value = serde_json::from_str(&capture("npm explain", &mut explain)?)
        .map_err(|e| format!("npm explain: {e}"))?;
    let optional_edge = explained[0]["dependents"].as_array().is_some_and(|deps| {
        deps.iter().any(|d| {
            d["type"] == "optional"
                && d["from"]["name"] == "tether-session"
                && d["spec"] == *c.version
        })
    });
    if !optional_edge {
        return Err(format!(
            "tether-session does not name tether-session-{NPM_PLATFORM}@{} as an optional dependency: {explained}",
            c.version
        ));
    }
    // The ES module entry loads too, and `types` comes first in every `exports` condition
    // list, as TypeScript requires (npm kept the manifest's order).
    let mut entries = c.clean("node", &home);
    entries.current_dir(&dir).args([
        "--input-type=module",
        "-e",
        "import { connect } from 'tether-session';
         import { createRequire } from 'node:module';
         const manifest = createRequire(import.meta.url)('tether-session/package.json');
         const conditions = Object.values(manifest.exports['.']).map((c) => Object.keys(c)[0]);
         console.log(typeof connect, conditions.join(','));",
    ]);
    let seen = capture("node (ES module import)", &mut entries)?;
    if seen.trim() != "function types,types" {
        return Err(format!(
            "import of the ES module entry / exports order: {}",
            seen.trim()
        ));
    }
    write(&dir.join("smoke.js"), SMOKE_JS)?;
    let mut node = c.clean("node", &home);
    node.current_dir(&dir).arg("smoke.js");
    let ran = c.smoke("node", node)?;
    Ok(format!(
        "the addon came from {} (tether-session's optional dependency); ESM and CJS entries load; {ran}",
        file_name(&platform)
    ))
}

/// A fresh venv made by the host's Python, in a clean environment.
fn venv(c: &Checks, name: &str, home: &Path) -> Result<PathBuf, String> {
    let venv = c.work.join(name);
    let mut create = c.clean(host_python()?, home);
    create.arg("-m").arg("venv").arg(&venv);
    step(&format!("python3 -m venv {name}"), create)?;
    Ok(venv.join("bin").join("python"))
}

/// Installs `wheel` (no index: nothing else may be fetched) and returns `tether.__version__`.
fn pip_install(c: &Checks, py: &Path, wheel: &Path, home: &Path) -> Result<String, String> {
    let mut install = c.clean(py, home);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--no-index",
            "--disable-pip-version-check",
        ])
        .arg(wheel);
    step(
        &format!("pip install --no-index {}", file_name(wheel)),
        install,
    )?;
    let mut version = c.clean(py, home);
    version
        .current_dir(home)
        .args(["-c", "import tether; print(tether.__version__)"]);
    let found = capture("python -c 'import tether'", &mut version)?;
    if found.trim() != c.version {
        return Err(format!(
            "tether.__version__ is {}, expected {}",
            found.trim(),
            c.version
        ));
    }
    Ok(found.trim().to_owned())
}

fn python_wheel(c: &Checks) -> Result<String, String> {
    let home = c.dir("python-home")?;
    let wheel = find_one(&c.out.join("python"), ".whl")?;
    let py = venv(c, "python-venv", &home)?;
    pip_install(c, &py, &wheel, &home)?;
    let script = home.join("smoke.py");
    write(&script, SMOKE_PY)?;
    let mut run = c.clean(&py, &home);
    run.current_dir(&home).arg(&script);
    let ran = c.smoke("python", run)?;
    Ok(format!("{}; {ran}", file_name(&wheel)))
}

fn python_sdist(c: &Checks) -> Result<String, String> {
    let sdist = c
        .out
        .join("python")
        .join(format!("tether_session-{}.tar.gz", c.version));
    expect_file(&sdist)?;
    let tools = root().join("target").join("dist-tools").join("venv");
    let wheels = c.dir("sdist-wheel")?;
    // Unpacked here, then built by pip (maturin, cargo; debug profile: this checks the
    // source, not the speed) into a target directory of its own that keeps the compiled
    // registry crates from run to run. Two things keep a stale build of the sdist's own
    // crates out: that target directory is not the workspace's (cargo names path crates by
    // their path relative to the workspace root, the same in the sdist, and would take the
    // workspace's tether-protocol for the sdist's), and `tar -m` dates the files now (the
    // sdist's are all dated 2006, older than any earlier build of them).
    let source = c.dir("sdist-source")?;
    let mut unpack = Command::new("tar");
    unpack
        .arg("-xzmf")
        .arg(&sdist)
        .arg("-C")
        .arg(&source)
        .arg("--strip-components=1");
    step(&format!("tar xzmf {}", file_name(&sdist)), unpack)?;
    let mut build = Command::new(tools.join("bin").join("python"));
    build
        .current_dir(&c.work)
        .args([
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-w",
        ])
        .arg(&wheels)
        .arg(&source)
        .env("PATH", with_tools_on_path(&tools)?)
        .env("MATURIN_PEP517_ARGS", "--profile dev")
        .env("CARGO_TARGET_DIR", root().join("target").join("dist-sdist"))
        .env("TMPDIR", &c.work);
    step(
        &format!(
            "pip wheel (the unpacked {}: maturin builds it from source)",
            file_name(&sdist)
        ),
        build,
    )?;
    let wheel = find_one(&wheels, ".whl")?;
    let home = c.dir("sdist-home")?;
    let py = venv(c, "sdist-venv", &home)?;
    let version = pip_install(c, &py, &wheel, &home)?;
    Ok(format!(
        "{} built {}, which imports as tether {version}",
        file_name(&sdist),
        file_name(&wheel)
    ))
}

/// `PATH` with the tools venv's bin/ first (pip's build backend runs `maturin` from it).
fn with_tools_on_path(venv: &Path) -> Result<std::ffi::OsString, String> {
    let mut dirs = vec![venv.join("bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).map_err(|e| format!("PATH: {e}"))
}

/// The consumer project's local Maven repository: plugins, JNA and kotlin-stdlib are cached
/// there across runs (the first run downloads them from Maven Central); Tether itself is
/// removed before each run, so that it always comes from dist/maven.
fn consumer_repository() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".m2").join("tether-dist-check")
}

fn java(c: &Checks) -> Result<String, String> {
    let dir = c.dir("java")?;
    let home = c.dir("java-home")?;
    let repository = c.out.join("maven");
    let local = consumer_repository();
    remove(&local.join("io").join("tether"))?;
    let url = format!(
        "file://{}",
        repository
            .canonicalize()
            .map_err(|e| format!("{}: {e}", repository.display()))?
            .display()
    );
    write(
        &dir.join("pom.xml"),
        &CONSUMER_POM
            .replace("@REPOSITORY@", &url)
            .replace("@VERSION@", &c.version),
    )?;
    let sources = dir.join("src").join("main").join("java");
    mkdir(&sources)?;
    write(&sources.join("Smoke.java"), SMOKE_JAVA)?;
    let classpath_file = dir.join("classpath.txt");
    let mut mvn = c.clean("mvn", &home);
    mvn.current_dir(&dir)
        .args(["-B", "-ntp"])
        .arg(format!("-Dmaven.repo.local={}", local.display()))
        .arg(format!("-Dmdep.outputFile={}", classpath_file.display()))
        .args(["compile", "dependency:build-classpath"]);
    step(
        "mvn compile dependency:build-classpath (the consumer project)",
        mvn,
    )?;

    let classpath = read(&classpath_file)?.trim().to_owned();
    let entries: Vec<&str> = classpath.split(':').collect();
    let jar_name = format!("tether-{}.jar", c.version);
    let resolved = entries
        .iter()
        .find(|e| e.ends_with(&format!("/io/tether/tether/{}/{jar_name}", c.version)))
        .ok_or_else(|| format!("the classpath has no {jar_name}: {classpath}"))?;
    let published = maven_dir(&repository, &c.version).join(&jar_name);
    let same = std::fs::read(resolved).ok() == std::fs::read(&published).ok();
    if !same {
        return Err(format!("{resolved} differs from {}", published.display()));
    }
    for needed in ["/jna-", "/kotlin-stdlib-"] {
        if !entries.iter().any(|e| e.contains(needed)) {
            return Err(format!(
                "the POM brought no {}: {classpath}",
                needed.trim_matches(['/', '-'])
            ));
        }
    }
    let mut java = c.clean("java", &home);
    java.current_dir(&dir)
        .arg("-cp")
        .arg(format!(
            "{}:{classpath}",
            dir.join("target/classes").display()
        ))
        .arg("Smoke");
    let ran = c.smoke("java", java)?;
    Ok(format!(
        "resolved {jar_name} from dist/maven with JNA and kotlin-stdlib ({} jars); {ran}",
        entries.len()
    ))
}

/// Unpacks the C SDK, then moves it elsewhere (its .pc must not care); returns its directory.
fn c_sdk(c: &Checks, name: &str) -> Result<PathBuf, String> {
    let unpacked = c.dir(&format!("{name}-unpacked"))?;
    let home = c.dir(&format!("{name}-home"))?;
    let sdk_name = c_sdk_name(&c.version);
    let tarball = c.out.join("c").join(format!("{sdk_name}.tar.gz"));
    let mut tar = c.clean("tar", &home);
    tar.arg("-xzf").arg(&tarball).arg("-C").arg(&unpacked);
    step(&format!("tar xzf {}", file_name(&tarball)), tar)?;
    let moved = c.dir(&format!("{name}-sdk"))?.join(&sdk_name);
    std::fs::rename(unpacked.join(&sdk_name), &moved)
        .map_err(|e| format!("moving the SDK: {e}"))?;
    for file in [
        "include/tether.h",
        "lib/libtether_ffi.so",
        "lib/libtether_ffi.a",
        "lib/pkgconfig/tether.pc",
        "README.md",
    ] {
        expect_file(&moved.join(file))?;
    }
    Ok(moved)
}

/// `pkg-config <args> tether` against the SDK's .pc.
fn pkg_config(c: &Checks, sdk: &Path, home: &Path, args: &[&str]) -> Result<String, String> {
    let mut pc = c.clean("pkg-config", home);
    pc.args(args)
        .arg("tether")
        .env("PKG_CONFIG_PATH", sdk.join("lib").join("pkgconfig"));
    Ok(capture("pkg-config", &mut pc)?.trim().to_owned())
}

/// Compiles smoke.c with `args` (split on whitespace) into `exe`.
fn gcc(c: &Checks, dir: &Path, home: &Path, exe: &str, args: &[String]) -> Result<(), String> {
    write(&dir.join("smoke.c"), SMOKE_C)?;
    let mut gcc = c.clean("gcc", home);
    gcc.current_dir(dir)
        .args([
            "-Wall", "-Wextra", "-Werror", "-pthread", "smoke.c", "-o", exe,
        ])
        .args(args.iter().flat_map(|a| a.split_whitespace()));
    step(&format!("gcc smoke.c -o {exe} {}", args.join(" ")), gcc)
}

fn c_shared(c: &Checks) -> Result<String, String> {
    let sdk = c_sdk(c, "c-shared")?;
    let home = c.dir("c-shared-home")?;
    let cflags = pkg_config(c, &sdk, &home, &["--cflags"])?;
    let libs = pkg_config(c, &sdk, &home, &["--libs"])?;
    let libdir = PathBuf::from(pkg_config(c, &sdk, &home, &["--variable=libdir"])?);
    let libdir = libdir
        .canonicalize()
        .map_err(|e| format!("libdir {}: {e}", libdir.display()))?;
    if libdir != sdk.join("lib") {
        return Err(format!(
            "tether.pc points at {}, not at the moved SDK",
            libdir.display()
        ));
    }
    let dir = c.dir("c-shared")?;
    gcc(
        c,
        &dir,
        &home,
        "smoke",
        &[
            cflags.clone(),
            libs.clone(),
            format!("-Wl,-rpath,{}", libdir.display()),
        ],
    )?;
    let mut ldd = c.clean("ldd", &home);
    ldd.arg(dir.join("smoke"));
    let linked = capture("ldd", &mut ldd)?;
    let from_sdk = linked
        .lines()
        .any(|l| l.contains("libtether_ffi.so => ") && l.contains(&*sdk.to_string_lossy()));
    if !from_sdk {
        return Err(format!(
            "smoke does not load the SDK's libtether_ffi.so: {linked}"
        ));
    }
    let mut run = c.clean(dir.join("smoke"), &home);
    run.current_dir(&dir);
    let ran = c.smoke("c-shared", run)?;
    Ok(format!("cc smoke.c {cflags} {libs}; {ran}"))
}

fn c_static(c: &Checks) -> Result<String, String> {
    let sdk = c_sdk(c, "c-static")?;
    let home = c.dir("c-static-home")?;
    let cflags = pkg_config(c, &sdk, &home, &["--cflags"])?;
    // The archive itself, then what it needs (`Libs.private`).
    let system: Vec<String> = pkg_config(c, &sdk, &home, &["--static", "--libs-only-l"])?
        .split_whitespace()
        .filter(|l| *l != "-ltether_ffi")
        .map(str::to_owned)
        .collect();
    let dir = c.dir("c-static")?;
    let archive = sdk.join("lib").join("libtether_ffi.a");
    let mut args = vec![cflags, archive.display().to_string()];
    args.extend(system.iter().cloned());
    gcc(c, &dir, &home, "smoke", &args)?;
    let mut ldd = c.clean("ldd", &home);
    ldd.arg(dir.join("smoke"));
    let linked = capture("ldd", &mut ldd)?;
    if linked.contains("libtether_ffi") {
        return Err(format!(
            "the static build still loads libtether_ffi: {linked}"
        ));
    }
    let mut run = c.clean(dir.join("smoke"), &home);
    run.current_dir(&dir);
    let ran = c.smoke("c-static", run)?;
    Ok(format!("libtether_ffi.a {}; {ran}", system.join(" ")))
}

fn dotnet(c: &Checks) -> Result<String, String> {
    let feed = c.out.join("dotnet");
    let home = c.dir("dotnet-home")?;
    let packages = c.dir("dotnet-packages")?;
    let mut install = c.clean("nuget", &home);
    install
        .args(["install", NUGET_ID, "-Version", &c.version, "-Source"])
        .arg(&feed)
        .arg("-OutputDirectory")
        .arg(&packages)
        .arg("-NonInteractive")
        .stdin(Stdio::null());
    step(
        &format!(
            "nuget install {NUGET_ID} -Version {} -Source dist/dotnet",
            c.version
        ),
        install,
    )?;
    let package = packages.join(format!("{NUGET_ID}.{}", c.version));
    let dll = package.join("lib").join(NUGET_TFM).join("Tether.dll");
    let native = package
        .join("runtimes")
        .join("linux-x64")
        .join("native")
        .join("libtether_ffi.so");
    // What `dotnet publish -r linux-x64` does: the assembly and the RID's native library side
    // by side in the application's directory, where mono looks for `tether_ffi`.
    let app = c.dir("dotnet-app")?;
    copy(&dll, &app.join("Tether.dll"))?;
    copy(&native, &app.join("libtether_ffi.so"))?;
    write(&app.join("Smoke.cs"), SMOKE_CS)?;
    let mut mcs = c.clean("mcs", &home);
    mcs.current_dir(&app).args([
        "-warnaserror+",
        "-r:Tether.dll",
        "-out:Smoke.exe",
        "Smoke.cs",
    ]);
    step("mcs -r:Tether.dll Smoke.cs", mcs)?;
    let mut mono = c.clean("mono", &home);
    mono.current_dir(&app).arg(app.join("Smoke.exe"));
    let ran = c.smoke("dotnet", mono)?;
    Ok(format!(
        "{NUGET_ID}.{}.nupkg: lib/{NUGET_TFM}/Tether.dll + runtimes/linux-x64/native/libtether_ffi.so, no LD_LIBRARY_PATH; {ran}",
        c.version
    ))
}

fn dotnet_layout(c: &Checks) -> Result<String, String> {
    let name = format!("{NUGET_ID}.{}", c.version);
    let nupkg = c.out.join("dotnet").join(format!("{name}.nupkg"));
    let layout = c.out.join("dotnet").join(&name);
    let files = [
        format!("lib/{NUGET_TFM}/Tether.dll"),
        format!("lib/{NUGET_TFM}/Tether.xml"),
        "runtimes/linux-x64/native/libtether_ffi.so".to_owned(),
        "README.md".to_owned(),
    ];
    for file in &files {
        let mut unzip = Command::new("unzip");
        unzip.arg("-p").arg(&nupkg).arg(file);
        let packed = unzip.output().map_err(|e| format!("unzip: {e}"))?.stdout;
        let unpacked = std::fs::read(layout.join(file))
            .map_err(|e| format!("{}: {e}", layout.join(file).display()))?;
        if packed.is_empty() || packed != unpacked {
            return Err(format!("{file} differs between {name}.nupkg and {name}/"));
        }
    }
    Ok(format!("{} files", files.len()))
}

fn swift(c: &Checks) -> Result<String, String> {
    let name = format!("tether-swift-{}", c.version);
    let tarball = c.out.join("swift").join(format!("{name}.tar.gz"));
    let dir = c.dir("swift")?;
    let home = c.dir("swift-home")?;
    let mut tar = c.clean("tar", &home);
    tar.arg("-xzf").arg(&tarball).arg("-C").arg(&dir);
    step(&format!("tar xzf {}", file_name(&tarball)), tar)?;
    // What a Swift user gets: the package's files, its manifest naming the library product
    // over the C module, and the C module's map naming the generated header. (That the
    // sources are current is the uniffi suite's check, against a fresh generation.)
    let package = dir.join(&name);
    let mut listed = Vec::new();
    super::collect_files(&package, &package, &mut listed)?;
    listed.sort();
    let mut expected: Vec<String> = SWIFT_PACKAGE_FILES
        .iter()
        .map(|f| (*f).to_owned())
        .collect();
    expected.sort();
    if listed != expected {
        return Err(format!(
            "the package holds {listed:?}, expected {expected:?}"
        ));
    }
    let manifest = read(&package.join("Package.swift"))?;
    let modulemap = read(&package.join("Sources/TetherFFI/module.modulemap"))?;
    let swift = read(&package.join("Sources/Tether/Tether.swift"))?;
    if !manifest.contains(".library(name: \"Tether\"") || !manifest.contains("\"TetherFFI\"") {
        return Err("Package.swift does not declare the Tether library over TetherFFI".into());
    }
    if !modulemap.contains("TetherFFI.h") || !swift.contains("import TetherFFI") {
        return Err("the Swift sources and the TetherFFI module do not refer to each other".into());
    }
    Ok(format!(
        "{} files: Package.swift, the generated Swift, header and module map",
        SWIFT_PACKAGE_FILES.len()
    ))
}
