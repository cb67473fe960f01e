//! Debian packages the jobs need (redis-server for the cluster tests, mono for .NET, ...),
//! installed with apt-get when missing, so that a fresh machine needs no manual step.

use std::process::{Command, Stdio};

use crate::test::run_step;

/// Whether `tool arg` runs and succeeds (`redis-server --version`, say).
pub(crate) fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs `packages` with apt-get (after an update) unless `present` says they are there;
/// `why` names the need in the step's title. Returns whether they are present afterwards.
pub(crate) fn ensure(why: &str, packages: &[&str], present: impl Fn() -> bool) -> bool {
    if present() {
        return true;
    }
    let mut update = Command::new("apt-get");
    update
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive");
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let installed = run_step(&format!("apt-get update (for {why})"), update)
        && run_step(
            &format!(
                "apt-get install -y --no-install-recommends {}",
                packages.join(" ")
            ),
            install,
        );
    if !installed || !present() {
        eprintln!("{why} needs the Debian packages {packages:?}, which could not be installed");
        return false;
    }
    true
}

/// redis-server, for the cluster tests and `chaos --store redis`. Debian's package may start
/// a system-wide server on port 6379; the tests start their own on free ports, so it is
/// stopped if the install started it.
pub(crate) fn ensure_redis() -> bool {
    let already = have("redis-server", "--version");
    if !ensure("the cluster tests", &["redis-server"], || {
        have("redis-server", "--version")
    }) {
        return false;
    }
    if !already {
        let _ = Command::new("service")
            .args(["redis-server", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    true
}
