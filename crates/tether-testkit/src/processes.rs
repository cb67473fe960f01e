//! Real processes for cluster tests: a `redis-server` on a free loopback port with a temporary
//! directory, and `tether-server` nodes. Each is stopped (and its directory removed) when
//! dropped, so a failing test leaves nothing running.

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a process may take to start listening.
const START: Duration = Duration::from_secs(20);

fn temp_dir(what: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tether-{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn signal(child: &Child, name: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -{name} {} failed",
            child.id()
        )))
    }
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> io::Result<()> {
    let deadline = Instant::now() + START;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{what} exited at start: {status}"
            )));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!("{what} did not listen on {addr}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` (Debian's package) on a free loopback port, without persistence.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts one. Fails with a clear message when `redis-server` is not installed (`cargo
    /// xtask test` installs it).
    pub fn start() -> io::Result<Redis> {
        let dir = temp_dir("redis")?;
        let mut redis = Redis {
            child: None,
            port: 0,
            dir,
        };
        // A free port can be taken between finding it and binding it: try a few.
        let mut last = None;
        for _ in 0..5 {
            redis.port = free_port()?;
            match redis.spawn() {
                Ok(()) => return Ok(redis),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("cannot start redis-server")))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run redis-server ({e}); install Debian's redis-server package \
                         (cargo xtask test does it)"
                    ),
                )
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        if let Err(e) = wait_listening(addr, &mut child, "redis-server") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.child = Some(child);
        Ok(())
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): everything it held is gone, as after a crash without
    /// persistence.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub fn restart_empty(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `tether-server` process, listening on a free loopback port. Its log goes to a file
/// ([`Node::log`]).
pub struct Node {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    dir: PathBuf,
    /// Kept open: a node writing to a closed pipe would fail.
    _stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Node {
    /// Starts `bin` (the `tether-server` binary) with `args` (e.g. `--dev --store URL`) and
    /// `--listen 127.0.0.1:0`, and waits for the address it prints.
    pub fn start(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> io::Result<Node> {
        Node::start_at(bin, args, env, "127.0.0.1:0".parse().expect("address"))
    }

    /// As [`Node::start`], on a given address (a node restarted where it was).
    pub fn start_at(
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        listen: SocketAddr,
    ) -> io::Result<Node> {
        let dir = temp_dir("node")?;
        let log = dir.join("tether-server.log");
        let mut command = Command::new(bin);
        command
            .args(args)
            .arg("--listen")
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn()?;
        let mut stdout = child.stdout.take().map(BufReader::new);
        let mut line = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_line(&mut line);
        }
        let addr = line
            .split("\"listen\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Node {
                child,
                addr,
                log,
                dir,
                _stdout: stdout,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                Err(io::Error::other(format!(
                    "tether-server did not start (stdout {line:?}); its log:\n{text}"
                )))
            }
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: the node dies without a word.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the node freezes (a zombie owner, as after a long GC pause or a VM freeze).
    pub fn freeze(&self) -> io::Result<()> {
        signal(&self.child, "STOP")
    }

    /// SIGCONT: a frozen node carries on where it was.
    pub fn thaw(&self) -> io::Result<()> {
        signal(&self.child, "CONT")
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> io::Result<std::process::ExitStatus> {
        signal(&self.child, "TERM")?;
        self.child.wait()
    }

    /// Whether the process has exited (and how).
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
