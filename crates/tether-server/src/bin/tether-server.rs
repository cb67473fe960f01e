//! `tether-server`: run a Tether server from a config file, or a development setup.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tether_server::{Server, ServerConfig, auth};

#[derive(Parser)]
#[command(name = "tether-server", version, about = "The Tether session server")]
struct Cli {
    /// Development setup: loopback, principal `control` / `password`. Never in production.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address; overrides the configuration (use 127.0.0.1:0 for any free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Where sessions and topics live: `memory` (one node) or `redis://HOST:PORT[/DB]`; every
    /// node given the same store forms one cluster. Overrides the configuration's
    /// `[store] url`.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// With the memory store: where a drain (SIGTERM) saves sessions and topics, and where the
    /// next start reads them back. Overrides `state_dir`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Keepalive period announced to clients, in ms. Overrides `ping_period_ms`.
    #[arg(long, value_name = "MS")]
    ping_ms: Option<u64>,
    /// Longest a disconnected session is kept, in ms. Overrides `max_reconnect_timeout_ms`.
    #[arg(long, value_name = "MS")]
    retention_ms: Option<u64>,
    /// How long SIGTERM's drain waits for sessions to leave, in ms. Overrides
    /// `[drain] grace_ms`.
    #[arg(long, value_name = "MS")]
    drain_grace_ms: Option<u64>,
    /// With `--dev`: also accept anonymous sessions, with every permission.
    #[arg(long, requires = "dev")]
    anonymous: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print an argon2 hash of a password for the configuration file. Reads the password from
    /// standard input when it is not given.
    HashPassword {
        /// The password (prefer standard input: arguments show up in process lists).
        password: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashPassword { password }) = cli.command {
        let password = match password {
            Some(p) => p,
            None => {
                let mut line = String::new();
                if std::io::stdin().lock().read_line(&mut line).is_err() {
                    eprintln!("error: cannot read the password from standard input");
                    return ExitCode::FAILURE;
                }
                line.trim_end_matches(['\r', '\n']).to_owned()
            }
        };
        if password.is_empty() {
            eprintln!("error: empty password");
            return ExitCode::FAILURE;
        }
        println!("{}", auth::hash_password(&password));
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = if cli.dev {
        eprintln!(
            "WARNING: development setup. Principal 'control' with password 'password' may do \
             anything; listening on loopback only. Do not use this in production."
        );
        ServerConfig::dev()
    } else if let Some(path) = &cli.config {
        match ServerConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        eprintln!("error: give --config FILE, or --dev for a development setup (see --help)");
        return ExitCode::from(2);
    };
    if let Some(listen) = cli.listen {
        if cli.dev && !listen.ip().is_loopback() {
            eprintln!("error: --dev only listens on loopback");
            return ExitCode::from(2);
        }
        config.listen = listen;
    }
    if let Some(store) = cli.store {
        config.store.url = store;
    }
    if let Some(dir) = cli.state_dir {
        config.state_dir = Some(dir);
    }
    if let Some(ms) = cli.ping_ms {
        config.ping_period_ms = ms;
    }
    if let Some(ms) = cli.retention_ms {
        config.max_reconnect_timeout_ms = ms;
    }
    if let Some(ms) = cli.drain_grace_ms {
        config.drain.grace_ms = ms;
    }
    if cli.anonymous {
        config.anonymous.enabled = true;
        config.anonymous.subscribe = vec!["**".into()];
        config.anonymous.publish = vec!["**".into()];
    }
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let grace = Duration::from_millis(config.drain.grace_ms);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        // One line on stdout so that scripts and other languages' tests can find the port.
        match server.metrics_addr() {
            Some(m) => println!(
                "{{\"listen\":\"{}\",\"metrics\":\"{m}\"}}",
                server.local_addr()
            ),
            None => println!("{{\"listen\":\"{}\"}}", server.local_addr()),
        }
        wait_for_signal().await;
        // A restart or a deploy, not the end of the sessions: they are sent elsewhere (or
        // saved for the next start), with nothing applied left unconfirmed.
        match server.drain(grace).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
