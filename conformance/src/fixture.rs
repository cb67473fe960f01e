//! The environment of a scenario: a real server behind the fault proxy, made fresh by each
//! `env` step, and the steps that act on it (faults, another party's publishes, a drain).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tether_server::config::{PrincipalConfig, TlsConfig};
use tether_server::{Server, ServerConfig};
use tether_testkit::{CutMode, FaultProxy};
use tokio::sync::Mutex;

/// The password of both principals.
pub const PASSWORD: &str = "password";

/// Bound on the fixture's own waits (reached only when a scenario fails).
pub const GUARD: Duration = Duration::from_secs(20);

/// What went wrong in the fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A step needs an environment and there is none.
    #[error("no environment: a scenario starts with `env`")]
    NoEnv,
    /// An argument was not understood.
    #[error("{0}")]
    Argument(String),
    /// The server could not start (or restart).
    #[error("server: {0}")]
    Server(String),
    /// Files (certificates, state) could not be written.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A wait ran past the guard.
    #[error("timed out: {0}")]
    TimedOut(String),
}

/// What a runner needs to know about a fresh environment.
#[derive(Debug, Clone)]
pub struct EnvInfo {
    /// The URL to open sessions with (through the proxy).
    pub url: String,
    /// The private CA's certificate (PEM file), with `tls=1`.
    pub ca_file: Option<PathBuf>,
}

impl EnvInfo {
    /// As the HTTP API answers it: `url=... [ca=...]`.
    pub fn words(&self) -> String {
        match &self.ca_file {
            Some(ca) => format!("url={} ca={}", self.url, ca.display()),
            None => format!("url={}", self.url),
        }
    }
}

struct Env {
    server: Option<Server>,
    proxy: FaultProxy,
    config: ServerConfig,
    dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes environments, one at a time (a new `env` ends the previous one).
#[derive(Default)]
pub struct Fixture {
    env: Mutex<Option<Env>>,
}

fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tether_server::auth::hash_password(PASSWORD))
        .clone()
}

fn number<T: std::str::FromStr>(
    args: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>, FixtureError> {
    args.get(key)
        .map(|v| {
            v.parse()
                .map_err(|_| FixtureError::Argument(format!("{key}={v} is not a number")))
        })
        .transpose()
}

fn fresh_dir() -> Result<PathBuf, FixtureError> {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("tether-conformance-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it, written to `dir`
/// (`ca.pem`, `cert.pem`, `key.pem`).
fn write_pki(dir: &std::path::Path) -> Result<(), FixtureError> {
    let fail = |e: rcgen::Error| FixtureError::Server(format!("certificates: {e}"));
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tether conformance CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(fail)?)
        .map_err(fail)?;
    let key = KeyPair::generate().map_err(fail)?;
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(fail)?;
    let cert = params.signed_by(&key, &ca).map_err(fail)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(())
}

const ENV_KEYS: [&str; 5] = ["recovery", "ping_ms", "tls", "drain", "retry_after_ms"];

impl Fixture {
    /// A fresh server behind a fresh proxy, configured by an `env` step's arguments.
    pub async fn env(&self, args: &BTreeMap<String, String>) -> Result<EnvInfo, FixtureError> {
        if let Some(unknown) = args.keys().find(|k| !ENV_KEYS.contains(&k.as_str())) {
            return Err(FixtureError::Argument(format!(
                "env: unknown key {unknown}"
            )));
        }
        // The previous environment goes first (its sessions see their server vanish).
        if let Some(old) = self.env.lock().await.take() {
            stop(old).await;
        }
        let dir = fresh_dir()?;
        let mut config = ServerConfig {
            listen: "127.0.0.1:0"
                .parse()
                .map_err(|_| FixtureError::Argument("addr".into()))?,
            principals: vec![
                PrincipalConfig {
                    name: "control".into(),
                    password_hash: password_hash(),
                    subscribe: vec!["**".into()],
                    publish: vec!["**".into()],
                },
                PrincipalConfig {
                    name: "reader".into(),
                    password_hash: password_hash(),
                    subscribe: vec!["public/**".into()],
                    publish: vec!["public/**".into()],
                },
            ],
            ..ServerConfig::default()
        };
        if let Some(n) = number::<usize>(args, "recovery")? {
            config.recovery.max_frames = n;
        }
        if let Some(ms) = number::<u64>(args, "ping_ms")? {
            config.ping_period_ms = ms;
            config.min_ping_period_ms = config.min_ping_period_ms.min(ms);
        }
        if let Some(ms) = number::<u64>(args, "retry_after_ms")? {
            config.drain.retry_after_ms = ms;
        }
        let tls = args.get("tls").is_some_and(|v| v == "1");
        if tls {
            write_pki(&dir)?;
            config.tls = Some(TlsConfig {
                certificate: dir.join("cert.pem"),
                private_key: dir.join("key.pem"),
            });
        }
        if args.get("drain").is_some_and(|v| v == "1") {
            let state = dir.join("state");
            std::fs::create_dir_all(&state)?;
            config.state_dir = Some(state);
        }
        let server = Server::bind(config.clone())
            .await
            .map_err(|e| FixtureError::Server(e.to_string()))?;
        // A restart must come back on the same address.
        config.listen = server.local_addr();
        let proxy = FaultProxy::start(loopback(), server.local_addr()).await?;
        let info = EnvInfo {
            url: if tls {
                format!("wss://localhost:{}", proxy.local_addr().port())
            } else {
                format!("ws://{}", proxy.local_addr())
            },
            ca_file: tls.then(|| dir.join("ca.pem")),
        };
        *self.env.lock().await = Some(Env {
            server: Some(server),
            proxy,
            config,
            dir,
        });
        Ok(info)
    }

    async fn with_proxy<R>(&self, f: impl FnOnce(&FaultProxy) -> R) -> Result<R, FixtureError> {
        let env = self.env.lock().await;
        let env = env.as_ref().ok_or(FixtureError::NoEnv)?;
        Ok(f(&env.proxy))
    }

    /// Cuts every connection through the proxy (`rst` or `fin`).
    pub async fn cut(&self, mode: &str) -> Result<usize, FixtureError> {
        let mode = match mode {
            "rst" => CutMode::Rst,
            "fin" => CutMode::Fin,
            other => return Err(FixtureError::Argument(format!("cut mode {other}"))),
        };
        self.with_proxy(|p| p.cut(mode)).await
    }

    /// Stalls every connection through the proxy.
    pub async fn stall(&self) -> Result<usize, FixtureError> {
        self.with_proxy(FaultProxy::stall).await
    }

    /// Refuses new connections until [`Fixture::heal`].
    pub async fn refuse(&self) -> Result<(), FixtureError> {
        self.with_proxy(|p| p.refuse(None)).await
    }

    /// Undoes refuse, resets stalled connections.
    pub async fn heal(&self) -> Result<(), FixtureError> {
        self.with_proxy(FaultProxy::heal).await
    }

    /// Waits until the proxy refused `n` connections in all.
    pub async fn wait_refused(&self, n: u64) -> Result<(), FixtureError> {
        let env = self.env.lock().await;
        let env = env.as_ref().ok_or(FixtureError::NoEnv)?;
        tokio::time::timeout(GUARD, env.proxy.wait_for_refused(n))
            .await
            .map_err(|_| {
                FixtureError::TimedOut(format!(
                    "{n} refused connections (refused {})",
                    env.proxy.stats().refused_total
                ))
            })
    }

    /// Another party publishes: `value` once, or `value1`..`valueN` when `count > 1`.
    pub async fn publish(&self, topic: &str, value: &str, count: u64) -> Result<(), FixtureError> {
        let env = self.env.lock().await;
        let env = env.as_ref().ok_or(FixtureError::NoEnv)?;
        let server = env.server.as_ref().ok_or(FixtureError::NoEnv)?;
        for i in 1..=count.max(1) {
            let v = if count > 1 {
                format!("{value}{i}")
            } else {
                value.to_owned()
            };
            server
                .publish(topic, v.into_bytes())
                .await
                .map_err(|e| FixtureError::Argument(format!("publish {topic}: {e}")))?;
            if i % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    /// Drains the server (sessions are sent away with `server_draining` and the hint; they are
    /// saved to the state directory), then starts it again on the same address.
    pub async fn drain(&self) -> Result<(), FixtureError> {
        let mut env = self.env.lock().await;
        let env = env.as_mut().ok_or(FixtureError::NoEnv)?;
        if env.config.state_dir.is_none() {
            return Err(FixtureError::Argument(
                "drain needs an environment made with drain=1".into(),
            ));
        }
        let server = env.server.take().ok_or(FixtureError::NoEnv)?;
        tokio::time::timeout(GUARD, server.drain(Duration::from_secs(5)))
            .await
            .map_err(|_| FixtureError::TimedOut("the drain".into()))?
            .map_err(|e| FixtureError::Server(format!("drain: {e}")))?;
        // A drain returns once its listener is closed: the same address binds at once.
        let again = Server::bind(env.config.clone())
            .await
            .map_err(|e| FixtureError::Server(format!("restart: {e}")))?;
        env.server = Some(again);
        Ok(())
    }

    /// Ends the current environment, if any.
    pub async fn end(&self) {
        if let Some(old) = self.env.lock().await.take() {
            stop(old).await;
        }
    }
}

async fn stop(mut env: Env) {
    env.proxy.shutdown().await;
    if let Some(server) = env.server.take() {
        server.shutdown(Duration::from_millis(500)).await;
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
