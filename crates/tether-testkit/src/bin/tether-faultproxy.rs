//! `tether-faultproxy`: a fault-injecting TCP proxy driven over HTTP.
//!
//! Prints one JSON line `{"proxy":"IP:PORT","control":"IP:PORT"}` on stdout
//! once listening, logs to stderr, and exits on SIGTERM/SIGINT (or when stdin
//! is closed, with `--exit-on-stdin-close`). See the crate README for the
//! control API.

use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use tether_testkit::{FaultProxy, serve_control};
use tokio::sync::oneshot;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// Fault-injecting TCP proxy with an HTTP control API, for end-to-end tests.
#[derive(Debug, Parser)]
#[command(name = "tether-faultproxy", version)]
struct Args {
    /// Address to forward connections to, e.g. 127.0.0.1:8080.
    #[arg(long)]
    upstream: SocketAddr,
    /// Address the proxy listens on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address of the HTTP control API (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Exit when stdin reaches end-of-file (e.g. the parent test process died).
    #[arg(long)]
    exit_on_stdin_close: bool,
}

/// The line printed on stdout once both listeners are up.
#[derive(Serialize)]
struct Ready {
    proxy: SocketAddr,
    control: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %err, "tether-faultproxy failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> io::Result<()> {
    let proxy = FaultProxy::start(args.listen, args.upstream).await?;
    let (control, control_task) = serve_control(proxy.clone(), args.control).await?;
    // Install the signal handlers before announcing readiness, so a harness
    // that signals right after reading the line does not kill us the hard way.
    let stdin_closed = if args.exit_on_stdin_close {
        Some(watch_stdin()?)
    } else {
        None
    };
    let exit = exit_requested(stdin_closed)?;

    let line = serde_json::to_string(&Ready {
        proxy: proxy.local_addr(),
        control,
    })?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }

    let reason = exit.await;
    info!(reason, "shutting down");
    control_task.abort();
    proxy.shutdown().await;
    Ok(())
}

/// Reads stdin on a plain thread (a Tokio blocking read could hold up runtime
/// shutdown) and signals when it reaches end-of-file or fails.
fn watch_stdin() -> io::Result<oneshot::Receiver<()>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = [0u8; 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        })?;
    Ok(rx)
}

/// Registers the exit triggers and returns a future that resolves, with the
/// trigger's name, on the first of SIGTERM, SIGINT or stdin closing.
fn exit_requested(
    stdin_closed: Option<oneshot::Receiver<()>>,
) -> io::Result<impl Future<Output = &'static str>> {
    let stdin_closed = async {
        match stdin_closed {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                () = stdin_closed => "stdin closed",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => "ctrl-c",
                () = stdin_closed => "stdin closed",
            }
        })
    }
}
