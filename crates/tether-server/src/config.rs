//! Server configuration: a TOML file read with serde, validated with errors that name the field.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tether_protocol::{BufferLimits, Selector};

/// A configuration that could not be used. The message names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not fit the schema.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A field has a value that is not allowed.
    #[error("invalid configuration: {field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `principals[1].subscribe[0]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A principal: a name, a password hash (PHC string, e.g. from `tether-server hash-password`)
/// and the topic selectors it may subscribe to and publish on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The principal's name.
    pub name: String,
    /// An argon2 PHC hash of the password; never the password itself.
    pub password_hash: String,
    /// Selectors the principal may subscribe to (a subscription must be covered by one).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Selectors whose topics the principal may publish on.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// What sessions without a principal may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousConfig {
    /// Whether anonymous sessions are accepted at all.
    #[serde(default)]
    pub enabled: bool,
    /// Selectors anonymous sessions may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Selectors anonymous sessions may publish on.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// Resource limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest WebSocket message accepted, in bytes (default 1 MiB).
    pub max_frame_bytes: usize,
    /// Most concurrent sessions per principal (default 10,000).
    pub max_sessions_per_principal: usize,
    /// Time allowed for the TLS handshake and the upgrade request to arrive, in ms (default
    /// 5,000): a client that trickles its request (slowloris) is dropped after it.
    pub handshake_timeout_ms: u64,
    /// New connections accepted per second from one IP address, with bursts of as many
    /// (default 1,000; 0 = unlimited). Excess connections get `429 limit_exceeded`.
    pub connection_attempts_per_second_per_address: u32,
    /// Opens and resumes handled at once (default 1,024): past it, a connection gets `503
    /// server_busy` with a retry-after hint instead of waiting, so that a storm of resumes
    /// never makes the server unresponsive.
    pub max_pending_upgrades: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 1 << 20,
            max_sessions_per_principal: 10_000,
            handshake_timeout_ms: 5_000,
            connection_attempts_per_second_per_address: 1_000,
            max_pending_upgrades: 1_024,
        }
    }
}

/// Bounds of each session's recovery buffer on the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Most unacknowledged frames kept per session (default 10,000).
    pub max_frames: usize,
    /// Most unacknowledged bytes kept per session (default 8 MiB).
    pub max_bytes: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        let d = BufferLimits::default();
        RecoveryConfig {
            max_frames: d.max_frames,
            max_bytes: d.max_bytes,
        }
    }
}

/// TLS (`wss://`): PEM files for the certificate chain and its private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub certificate: std::path::PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: std::path::PathBuf,
}

/// Signed-token (JWT) logins, next to passwords: a token names its principal (`sub`), carries
/// its permissions (`subscribe` and `publish`: lists of selectors) and expires (`exp`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// `HS256` (a shared secret), `RS256` or `ES256` (a public key).
    pub algorithm: String,
    /// The HS256 secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// A PEM file with the RS256 or ES256 public key.
    #[serde(default)]
    pub public_key: Option<std::path::PathBuf>,
    /// When set, tokens must carry this issuer (`iss`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, tokens must carry this audience (`aud`).
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew allowed when checking `exp`, in seconds (default 5).
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_leeway() -> u64 {
    5
}

/// Going away without losing anything (SIGTERM, [`crate::Server::drain`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Longest a drain waits for its sessions to leave, in ms (default 10,000).
    pub grace_ms: u64,
    /// The hint sent with `server_draining` and `server_busy`: how long clients wait before
    /// coming back, in ms (default 1,000; the built-in strategies spread their return over
    /// once to twice this).
    pub retry_after_ms: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            grace_ms: 10_000,
            retry_after_ms: 1_000,
        }
    }
}

/// Where sessions and topics live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` (the default: one node, nothing shared) or `redis://HOST:PORT[/DB]` (Redis 7):
    /// every node given the same URL forms one cluster, and a session resumes on any of them.
    pub url: String,
    /// Partitions of the shared topic log (default 16). Every node of a cluster must use the
    /// same number; changing it is a migration.
    pub partitions: u32,
    /// Entries kept per partition in the shared log (default 100,000, trimmed approximately).
    /// A client that missed more than what is kept resumes with a gap report.
    pub max_log_entries: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "memory".into(),
            partitions: 16,
            max_log_entries: 100_000,
        }
    }
}

impl StoreConfig {
    /// Whether this is the default in-memory store.
    pub fn is_memory(&self) -> bool {
        self.url == "memory"
    }
}

/// The whole server configuration. Every field has a default except the principals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Longest time a disconnected session is kept, in ms (default 300,000). A client may ask
    /// for less.
    pub max_reconnect_timeout_ms: u64,
    /// Keepalive period announced to clients that ask for none, in ms (default 10,000). The
    /// server pings after half a period of silence; one and a half periods without a byte
    /// mean a dead connection.
    pub ping_period_ms: u64,
    /// The shortest ping period a client may ask for, in ms (default 1,000).
    pub min_ping_period_ms: u64,
    /// The longest ping period a client may ask for, in ms (default 60,000).
    pub max_ping_period_ms: u64,
    /// Whether a session's writer gathers a fast stream of updates (default true): when
    /// updates came in while it wrote, it waits for more, 1 ms at most, instead of writing a
    /// few dozen at a time (never while the client waits on an ack). Off, every update is
    /// written as soon as the writer gets to it, at the cost of more system calls per update.
    pub gather_streams: bool,
    /// Recovery buffer bounds.
    pub recovery: RecoveryConfig,
    /// Limits.
    pub limits: LimitsConfig,
    /// Anonymous access.
    pub anonymous: AnonymousConfig,
    /// Principals.
    pub principals: Vec<PrincipalConfig>,
    /// Signed-token logins; absent means passwords (and anonymous access) only.
    pub tokens: Option<TokensConfig>,
    /// TLS; absent means plain `ws://`.
    pub tls: Option<TlsConfig>,
    /// Where to serve Prometheus metrics (`GET /metrics`); absent means not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Where sessions and topics live (default: in memory, one node).
    pub store: StoreConfig,
    /// Draining.
    pub drain: DrainConfig,
    /// With the memory store: where a draining server writes its sessions and topics, and
    /// where the next start on this machine reads them back (`systemctl restart` keeps every
    /// session that returns within its retention). Absent: nothing is kept across restarts.
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_reconnect_timeout_ms: 300_000,
            ping_period_ms: 10_000,
            min_ping_period_ms: 1_000,
            max_ping_period_ms: 60_000,
            gather_streams: true,
            recovery: RecoveryConfig::default(),
            limits: LimitsConfig::default(),
            anonymous: AnonymousConfig::default(),
            principals: Vec::new(),
            tokens: None,
            tls: None,
            metrics_listen: None,
            store: StoreConfig::default(),
            drain: DrainConfig::default(),
            state_dir: None,
        }
    }
}

fn check_selectors(field: &str, list: &[String]) -> Result<(), ConfigError> {
    for (i, s) in list.iter().enumerate() {
        Selector::parse(s).map_err(|e| invalid(format!("{field}[{i}]"), e.to_string()))?;
    }
    Ok(())
}

impl ServerConfig {
    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<ServerConfig, ConfigError> {
        let config: ServerConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ServerConfig::from_toml(&text)
    }

    /// The development setup: loopback, principal `control` / `password` with every
    /// permission, short retention. Never use it in production.
    pub fn dev() -> ServerConfig {
        ServerConfig {
            principals: vec![PrincipalConfig {
                name: "control".into(),
                password_hash: crate::auth::hash_password("password"),
                subscribe: vec!["**".into()],
                publish: vec!["**".into()],
            }],
            ..ServerConfig::default()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ping_period_ms == 0 {
            return Err(invalid("ping_period_ms", "must be greater than 0"));
        }
        if self.min_ping_period_ms == 0 || self.min_ping_period_ms > self.max_ping_period_ms {
            return Err(invalid(
                "min_ping_period_ms",
                "must be greater than 0 and at most max_ping_period_ms",
            ));
        }
        if self.recovery.max_frames == 0 {
            return Err(invalid("recovery.max_frames", "must be greater than 0"));
        }
        if self.recovery.max_bytes == 0 {
            return Err(invalid("recovery.max_bytes", "must be greater than 0"));
        }
        if self.limits.max_frame_bytes < 64 {
            return Err(invalid("limits.max_frame_bytes", "must be at least 64"));
        }
        if self.limits.max_sessions_per_principal == 0 {
            return Err(invalid(
                "limits.max_sessions_per_principal",
                "must be greater than 0",
            ));
        }
        if self.limits.handshake_timeout_ms == 0 {
            return Err(invalid(
                "limits.handshake_timeout_ms",
                "must be greater than 0",
            ));
        }
        if !self.store.is_memory() && !self.store.url.starts_with("redis://") {
            return Err(invalid(
                "store.url",
                format!(
                    "{:?} is neither \"memory\" nor a redis://HOST:PORT[/DB] URL",
                    self.store.url
                ),
            ));
        }
        if self.state_dir.is_some() && !self.store.is_memory() {
            return Err(invalid(
                "state_dir",
                "is for the memory store; a cluster keeps its sessions in its store",
            ));
        }
        if self.limits.max_pending_upgrades == 0 {
            return Err(invalid(
                "limits.max_pending_upgrades",
                "must be greater than 0",
            ));
        }
        if !(1..=256).contains(&self.store.partitions) {
            return Err(invalid("store.partitions", "must be between 1 and 256"));
        }
        if self.store.max_log_entries == 0 {
            return Err(invalid("store.max_log_entries", "must be greater than 0"));
        }
        check_selectors("anonymous.subscribe", &self.anonymous.subscribe)?;
        check_selectors("anonymous.publish", &self.anonymous.publish)?;
        if let Some(tokens) = &self.tokens {
            crate::auth::TokenVerifier::new(tokens)
                .map_err(|(field, message)| invalid(format!("tokens.{field}"), message))?;
        }
        if let Some(tls) = &self.tls {
            crate::tls::acceptor(tls).map_err(|(field, message)| invalid(field, message))?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.principals.iter().enumerate() {
            if p.name.is_empty() {
                return Err(invalid(
                    format!("principals[{i}].name"),
                    "must not be empty",
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(invalid(
                    format!("principals[{i}].name"),
                    format!("duplicate principal {:?}", p.name),
                ));
            }
            crate::auth::check_hash(&p.password_hash)
                .map_err(|m| invalid(format!("principals[{i}].password_hash"), m))?;
            check_selectors(&format!("principals[{i}].subscribe"), &p.subscribe)?;
            check_selectors(&format!("principals[{i}].publish"), &p.publish)?;
        }
        Ok(())
    }

    /// The ping period.
    pub fn ping_period(&self) -> Duration {
        Duration::from_millis(self.ping_period_ms)
    }

    /// The ping period granted to a client that asks for `wanted` (none: the server's own),
    /// within the bounds.
    pub fn granted_ping(&self, wanted: Option<Duration>) -> Duration {
        match wanted {
            Some(w) => w.clamp(
                Duration::from_millis(self.min_ping_period_ms),
                Duration::from_millis(self.max_ping_period_ms),
            ),
            None => self.ping_period(),
        }
    }

    /// The retry-after hint of `server_draining` and `server_busy`.
    pub fn retry_after(&self) -> Duration {
        Duration::from_millis(self.drain.retry_after_ms)
    }

    /// The maximum reconnection timeout.
    pub fn max_reconnect_timeout(&self) -> Duration {
        Duration::from_millis(self.max_reconnect_timeout_ms)
    }

    /// The recovery buffer limits.
    pub fn buffer_limits(&self) -> BufferLimits {
        BufferLimits {
            max_frames: self.recovery.max_frames,
            max_bytes: self.recovery.max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        ServerConfig::from_toml(text)
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn defaults_apply_and_fields_parse() {
        let hash = crate::auth::hash_password("pw");
        let text = format!(
            "listen = \"127.0.0.1:9000\"\nping_period_ms = 500\n[recovery]\nmax_frames = 10\n\
             [[principals]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nsubscribe = [\"a/**\"]\n"
        );
        let c = ServerConfig::from_toml(&text).expect("valid");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.ping_period(), Duration::from_millis(500));
        assert_eq!(c.recovery.max_frames, 10);
        assert_eq!(c.recovery.max_bytes, 8 << 20);
        assert_eq!(c.max_reconnect_timeout_ms, 300_000);
        assert_eq!(c.principals[0].subscribe, vec!["a/**"]);
        assert!(c.gather_streams, "on by default");
        let off = ServerConfig::from_toml("gather_streams = false").expect("valid");
        assert!(!off.gather_streams);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("ping_period_ms = 0").contains("ping_period_ms"));
        assert!(err("pingperiod = 3").contains("pingperiod"));
        assert!(err("listen = \"nope\"").contains("listen"));
        assert!(err("[limits]\nmax_frame_bytes = \"big\"").contains("max_frame_bytes"));
        let e = err("[[principals]]\nname = \"a\"\npassword_hash = \"plain\"");
        assert!(e.contains("principals[0].password_hash"), "{e}");
        let hash = crate::auth::hash_password("pw");
        let e = err(&format!(
            "[[principals]]\nname = \"a\"\npassword_hash = \"{hash}\"\nsubscribe = [\"ok\", \"a//b\"]"
        ));
        assert!(e.contains("principals[0].subscribe[1]"), "{e}");
    }
}
