//! The browser client (`bindings/browser`): the Rust core in WebAssembly behind the TypeScript
//! shell, tested in a real browser. Installs Debian's `chromium` when missing, builds the
//! package (xtask/src/browser.rs), starts the embedded server, the fault proxy and the page
//! server (as `cargo xtask demo --browser` does), then runs `node --test` over
//! `bindings/browser/test/` (puppeteer-core drives the headless Chromium). The demo page's
//! screenshot goes to target/browser/demo.png.
//!
//! No browser outlives the run: Chromium gets a profile directory of its own under
//! target/browser, and whatever process still names it when the tests end (a test that failed
//! before closing its browser, a crashed test process) is killed by its id.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::browser::{self, Stage};
use crate::test::{Counts, root, run_parsed};

/// Debian's Chromium, if installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The processes whose command line mentions `marker` (a profile directory of ours).
fn processes_naming(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// The process group of process `pid` (field 5 of `/proc/<pid>/stat`, after the name in
/// parentheses).
fn process_group(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(2)?.parse().ok()
}

/// Kills every process still using `profile`, by id, and the process groups they lead or
/// belong to (Chromium leads its own group: its zygotes, renderers, GPU and utility
/// processes), never this process's own group; returns how many processes named it.
fn kill_leftovers(profile: &Path) -> usize {
    let marker = profile.to_string_lossy().into_owned();
    let pids = processes_naming(&marker);
    if pids.is_empty() {
        return 0;
    }
    let own_group = process_group("self");
    let mut targets: Vec<String> = pids
        .iter()
        .filter_map(|pid| process_group(&pid.to_string()))
        .filter(|&group| Some(group) != own_group && group > 1)
        .map(|group| format!("-{group}"))
        .collect();
    targets.sort();
    targets.dedup();
    targets.extend(pids.iter().map(u32::to_string));
    let _ = Command::new("kill")
        .args(["-KILL", "--"])
        .args(&targets)
        .status();
    pids.len()
}

pub(crate) fn test(counts: &mut Counts) -> Option<bool> {
    let dir = browser::dir();
    if !dir.join("package.json").is_file() {
        return None;
    }
    if !crate::apt::ensure("the browser tests", &["chromium"], || chromium().is_some()) {
        return Some(false);
    }
    let chromium = chromium()?;
    if !browser::build() {
        return Some(false);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return Some(false);
        }
    };
    let stage = match runtime.block_on(Stage::start(0)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start the server, the proxy and the page server: {e}");
            return Some(false);
        }
    };
    let out = root().join("target").join("browser");
    let profile = out.join(format!("profile-{}", std::process::id()));
    let screenshot = out.join("demo.png");
    let _ = std::fs::create_dir_all(&profile);
    let _ = std::fs::remove_file(&screenshot);

    let mut node = Command::new("node");
    node.current_dir(&dir)
        .args(["--test", "--test-reporter=tap", "test/"])
        .env("TETHER_BROWSER_BASE", stage.page_url())
        .env("TETHER_CONTROL", stage.control().to_string())
        .env(
            "TETHER_PROXY",
            stage.proxy_url().trim_start_matches("ws://"),
        )
        .env("TETHER_CHROMIUM", &chromium)
        .env("TETHER_BROWSER_PROFILE", &profile)
        .env("TETHER_SCREENSHOT", &screenshot);
    let before = *counts;
    let ok = run_parsed(
        "node --test bindings/browser/test/ (headless Chromium)",
        node,
        counts,
        super::node::node_test_line,
    );
    let ran = counts.passed + counts.failed > before.passed + before.failed;
    if !ran {
        eprintln!("node --test ran no test");
    }
    let leftovers = kill_leftovers(&profile);
    if leftovers > 0 {
        eprintln!("killed {leftovers} browser process(es) the tests left running");
    }
    runtime.block_on(stage.stop());
    runtime.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&profile);
    let shot = screenshot.is_file();
    if ok && !shot {
        eprintln!(
            "the tests passed but wrote no screenshot at {}",
            screenshot.display()
        );
    } else if shot {
        println!("screenshot of the demo page: {}", screenshot.display());
    }
    let size = browser::gzip_size(&browser::wasm_output());
    if let Some(gz) = size {
        println!("WebAssembly module: {gz} bytes gzip -9");
    }
    Some(ok && ran && shot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell naming `marker`, waiting on its stdin with a builtin, once it has started.
    fn waiting_shell(marker: &str, own_group: bool) -> std::process::Child {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo ready; read line", marker])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        if own_group {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().expect("sh runs");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("it starts");
        assert_eq!(line.trim(), "ready");
        child
    }

    #[test]
    fn finds_processes_by_a_marker_on_their_command_line() {
        let marker = format!("tether-marker-{}", std::process::id());
        let mut child = waiting_shell(&marker, false);
        assert_eq!(processes_naming(&marker), [child.id()]);
        // It shares this process's group, which must survive the kill.
        assert_eq!(
            process_group(&child.id().to_string()),
            process_group("self")
        );
        assert_eq!(kill_leftovers(Path::new(&marker)), 1);
        let status = child.wait().expect("it ends");
        assert!(!status.success());
        assert!(processes_naming(&marker).is_empty());
    }

    #[test]
    fn kills_the_process_group_of_a_leftover() {
        use std::os::unix::process::CommandExt;
        let marker = format!("tether-group-{}", std::process::id());
        // A group leader naming the marker, and a process in its group that does not (as
        // Chromium's zygotes and renderers need not).
        let mut leader = waiting_shell(&marker, true);
        let mut member = Command::new("sleep")
            .arg("600")
            .process_group(leader.id() as i32)
            .spawn()
            .expect("sleep runs");
        assert_eq!(process_group(&member.id().to_string()), Some(leader.id()));
        assert_eq!(processes_naming(&marker), [leader.id()]);
        assert_eq!(kill_leftovers(Path::new(&marker)), 1);
        assert!(!leader.wait().expect("it ends").success());
        assert!(!member.wait().expect("it ends").success());
    }
}
