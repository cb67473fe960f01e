//! Shared set-up for the end-to-end tests: a real server on loopback behind the fault proxy.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tether::strategy::{AttemptInfo, ReconnectionAttempt, ReconnectionStrategy};
use tether::{CloseReason, SessionState, StateChange};
use tether_server::config::PrincipalConfig;
use tether_server::{Server, ServerConfig};
use tether_testkit::FaultProxy;
use tokio::sync::mpsc;

/// Generous bound for anything that should happen "soon": a failing test fails instead of
/// hanging, and a passing one never waits for it.
pub const BOUND: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn hash(password: &'static str) -> String {
    static HASHES: OnceLock<Mutex<std::collections::HashMap<&'static str, String>>> =
        OnceLock::new();
    let map = HASHES.get_or_init(Default::default);
    let mut map = map.lock().expect("hash cache");
    map.entry(password)
        .or_insert_with(|| tether_server::auth::hash_password(password))
        .clone()
}

/// Loopback, any port, `control`/`password` with every permission, `reader`/`secret` with
/// `public/**` only.
pub fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        principals: vec![
            PrincipalConfig {
                name: "control".into(),
                password_hash: hash("password"),
                subscribe: vec!["**".into()],
                publish: vec!["**".into()],
            },
            PrincipalConfig {
                name: "reader".into(),
                password_hash: hash("secret"),
                subscribe: vec!["public/**".into()],
                publish: vec!["public/chat".into()],
            },
        ],
        ..ServerConfig::default()
    }
}

pub struct Env {
    pub server: Server,
    pub proxy: FaultProxy,
}

impl Env {
    pub async fn start() -> Env {
        Env::with(config()).await
    }

    pub async fn with(config: ServerConfig) -> Env {
        let server = Server::bind(config).await.expect("server starts");
        let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("address"), server.local_addr())
            .await
            .expect("proxy starts");
        Env { server, proxy }
    }

    /// The URL through the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}", self.proxy.local_addr())
    }

    /// A builder for `control`, the principal with every permission.
    pub fn builder(&self) -> tether::SessionBuilder {
        self.builder_as("control", "password")
    }

    /// A builder for another principal (`reader` / `secret`, or a wrong password).
    pub fn builder_as(&self, principal: &str, password: &str) -> tether::SessionBuilder {
        tether::Session::builder(&self.url())
            .principal(principal)
            .password(password)
    }

    /// A session opened as another principal with the defaults (the open must succeed).
    #[allow(dead_code)] // not every test binary opens one
    pub async fn open_as(&self, principal: &str, password: &str) -> tether::Session {
        within("open", self.builder_as(principal, password).open())
            .await
            .expect("open")
    }
}

/// A server URL, for tests that took the server out of its [`Env`].
pub struct Url(pub String);

impl Url {
    pub fn builder(&self) -> tether::SessionBuilder {
        tether::Session::builder(&self.0)
            .principal("control")
            .password("password")
    }
}

/// A listener that records every change.
#[derive(Clone, Default)]
pub struct Recorder {
    pub changes: Arc<Mutex<Vec<StateChange>>>,
    pub added: Arc<tokio::sync::Notify>,
}

impl Recorder {
    pub fn listener(&self) -> impl tether::SessionListener {
        let changes = self.changes.clone();
        let added = self.added.clone();
        move |c: &StateChange| {
            changes.lock().expect("recorder").push(*c);
            added.notify_waiters();
        }
    }

    /// Waits until the listener has seen `n` changes (listeners run on the callback thread,
    /// a little after the state itself changed).
    pub async fn wait_len(&self, n: usize) {
        within("listener callbacks", async {
            loop {
                let added = self.added.notified();
                tokio::pin!(added);
                added.as_mut().enable();
                if self.changes.lock().expect("recorder").len() >= n {
                    return;
                }
                added.await;
            }
        })
        .await
    }
    pub fn transitions(&self) -> Vec<(SessionState, SessionState, Option<CloseReason>)> {
        self.changes
            .lock()
            .expect("recorder")
            .iter()
            .map(|c| (c.old, c.new, c.reason))
            .collect()
    }
}

/// A strategy that hands every attempt to the test, which decides from its own thread.
pub struct Manual {
    pub attempts: mpsc::UnboundedSender<ReconnectionAttempt>,
    pub successes: mpsc::UnboundedSender<AttemptInfo>,
    pub failures: AtomicU32,
    pub failure_reasons: Mutex<Vec<CloseReason>>,
}

pub struct ManualHandle {
    pub strategy: Arc<Manual>,
    pub attempts: mpsc::UnboundedReceiver<ReconnectionAttempt>,
    pub successes: mpsc::UnboundedReceiver<AttemptInfo>,
}

impl ManualHandle {
    pub async fn next_attempt(&mut self) -> ReconnectionAttempt {
        within("a reconnection attempt", self.attempts.recv())
            .await
            .expect("strategy alive")
    }
    pub fn failures(&self) -> u32 {
        self.strategy.failures.load(Ordering::SeqCst)
    }
}

pub fn manual() -> ManualHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stx, srx) = mpsc::unbounded_channel();
    ManualHandle {
        strategy: Arc::new(Manual {
            attempts: tx,
            successes: stx,
            failures: AtomicU32::new(0),
            failure_reasons: Mutex::new(Vec::new()),
        }),
        attempts: rx,
        successes: srx,
    }
}

impl ReconnectionStrategy for Manual {
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        let _ = self.attempts.send(attempt);
    }
    fn on_success(&self, attempt: &AttemptInfo) {
        let _ = self.successes.send(attempt.clone());
    }
    fn on_failure(&self, _attempt: &AttemptInfo, reason: CloseReason) {
        self.failure_reasons.lock().expect("reasons").push(reason);
        self.failures.fetch_add(1, Ordering::SeqCst);
    }
}
