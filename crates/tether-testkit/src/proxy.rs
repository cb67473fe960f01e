//! The proxy itself: listener, connection registry and fault controls.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::forward::forward;
use crate::{CutMode, ProxyStats};

/// How long a connection cut with [`CutMode::Fin`] keeps draining its peers'
/// input before it is closed, so that the close is seen as an orderly FIN
/// rather than turned into a reset by unread data.
const FIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the accept
/// loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// A fault-injecting TCP proxy.
///
/// Created with [`FaultProxy::start`]. Cloning is cheap and every clone
/// controls the same proxy. The proxy stops (listener closed, every connection
/// reset) on [`FaultProxy::shutdown`] or when the last clone is dropped.
#[derive(Clone)]
pub struct FaultProxy {
    shared: Arc<Shared>,
    _guard: Arc<DropGuard>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("local_addr", &self.shared.local_addr)
            .field("upstream", &self.upstream())
            .field("stats", &self.stats())
            .finish()
    }
}

/// State shared by the handles, the accept loop and the connection tasks.
struct Shared {
    local_addr: SocketAddr,
    upstream: Mutex<SocketAddr>,
    registry: Mutex<Registry>,
    refuse: Mutex<Refuse>,
    delay: watch::Sender<Duration>,
    forwarded: watch::Sender<u64>,
    refused: watch::Sender<u64>,
    accepted_total: AtomicU64,
    upstream_failures: AtomicU64,
    cuts_total: AtomicU64,
    shutdown: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    /// Receives `None` once every connection task (and the accept loop) has ended.
    tasks_done: Mutex<Option<mpsc::Receiver<()>>>,
}

/// Shuts the proxy down when the last [`FaultProxy`] handle is dropped.
struct DropGuard {
    shared: Arc<Shared>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refuse {
    Off,
    Until(Instant),
    Forever,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, ConnEntry>,
    closed: bool,
}

struct ConnEntry {
    cmd: watch::Sender<ConnCmd>,
    stalled: bool,
}

/// What a connection task is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnCmd {
    Run,
    Stall,
    Close(CutMode),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Closes `stream` with a TCP reset (`SO_LINGER` 0).
fn reset(stream: TcpStream) {
    if let Err(error) = SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        debug!(%error, "could not set SO_LINGER 0; closing normally");
    }
    drop(stream);
}

impl FaultProxy {
    /// Listens on `listen` (e.g. `127.0.0.1:0`) and forwards every accepted
    /// TCP connection to `upstream`.
    ///
    /// Must be called from within a Tokio runtime; the proxy runs on spawned tasks.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let (tracker, tasks_done) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            local_addr,
            upstream: Mutex::new(upstream),
            registry: Mutex::new(Registry::default()),
            refuse: Mutex::new(Refuse::Off),
            delay: watch::Sender::new(Duration::ZERO),
            forwarded: watch::Sender::new(0),
            refused: watch::Sender::new(0),
            accepted_total: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            cuts_total: AtomicU64::new(0),
            shutdown: watch::Sender::new(false),
            accept_task: Mutex::new(None),
            tasks_done: Mutex::new(Some(tasks_done)),
        });
        let task = tokio::spawn(accept_loop(Arc::clone(&shared), listener, tracker));
        *lock(&shared.accept_task) = Some(task);
        info!(%local_addr, %upstream, "fault proxy listening");
        Ok(FaultProxy {
            _guard: Arc::new(DropGuard {
                shared: Arc::clone(&shared),
            }),
            shared,
        })
    }

    /// The address the proxy listens on (with the actual port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The upstream address new connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        *lock(&self.shared.upstream)
    }

    /// Changes the upstream for new connections; current connections are not affected.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
        info!(%upstream, "upstream changed");
    }

    /// Cuts every current connection (stalled ones included) and returns how many were cut.
    ///
    /// [`CutMode::Rst`] closes both sockets with a TCP reset; [`CutMode::Fin`]
    /// shuts both down for writing (orderly end-of-file) and then closes them.
    /// The connections leave the registry immediately (they no longer count in
    /// [`ProxyStats::active`]); the sockets are closed by their tasks right
    /// after. New connections are forwarded normally.
    pub fn cut(&self, mode: CutMode) -> usize {
        let entries: Vec<ConnEntry> = {
            let mut registry = lock(&self.shared.registry);
            registry.conns.drain().map(|(_, entry)| entry).collect()
        };
        for entry in &entries {
            entry.cmd.send_replace(ConnCmd::Close(mode));
        }
        let n = entries.len();
        self.shared
            .cuts_total
            .fetch_add(n as u64, Ordering::Relaxed);
        info!(%mode, cut = n, "cut connections");
        n
    }

    /// Stalls every current connection and returns how many were newly stalled.
    ///
    /// A stalled connection stops forwarding in both directions without
    /// closing either socket and without reading from them, so both peers see
    /// a silent, half-open connection (their writes succeed until the kernel
    /// buffers fill up). Stalled connections are never resumed: they are closed
    /// with a TCP reset by [`FaultProxy::heal`], by [`FaultProxy::cut`] (with
    /// its mode), or when the proxy shuts down. New connections are forwarded normally.
    pub fn stall(&self) -> usize {
        let mut registry = lock(&self.shared.registry);
        let mut n = 0;
        for entry in registry.conns.values_mut().filter(|e| !e.stalled) {
            entry.stalled = true;
            entry.cmd.send_replace(ConnCmd::Stall);
            n += 1;
        }
        drop(registry);
        info!(stalled = n, "stalled connections");
        n
    }

    /// Refuses new connections: each one is accepted and immediately reset.
    ///
    /// With `Some(duration)` refusing stops by itself after `duration`; with
    /// `None` it lasts until [`FaultProxy::heal`]. A new call replaces the
    /// previous one. Current connections are not affected.
    pub fn refuse(&self, duration: Option<Duration>) {
        let state = match duration {
            Some(d) => Instant::now()
                .checked_add(d)
                .map_or(Refuse::Forever, Refuse::Until),
            None => Refuse::Forever,
        };
        *lock(&self.shared.refuse) = state;
        info!(?duration, "refusing new connections");
    }

    /// Sets the one-way latency added to every forwarded chunk, in both
    /// directions, for current and new connections. `Duration::ZERO` removes it.
    ///
    /// A chunk read at time `t` is written at `t + delay` (so a round trip
    /// through the proxy takes at least twice the delay); reading goes on
    /// meanwhile, so throughput is not limited and byte order is preserved.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay.send_replace(delay);
        info!(?delay, "delay changed");
    }

    /// Undoes [`FaultProxy::refuse`] and [`FaultProxy::set_delay`], and closes
    /// stalled connections with a TCP reset.
    pub fn heal(&self) {
        *lock(&self.shared.refuse) = Refuse::Off;
        self.shared.delay.send_replace(Duration::ZERO);
        let stalled: Vec<ConnEntry> = {
            let mut registry = lock(&self.shared.registry);
            let ids: Vec<u64> = registry
                .conns
                .iter()
                .filter(|(_, e)| e.stalled)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| registry.conns.remove(id))
                .collect()
        };
        for entry in &stalled {
            entry.cmd.send_replace(ConnCmd::Close(CutMode::Rst));
        }
        info!(dropped_stalled = stalled.len(), "healed");
    }

    /// Current counters.
    pub fn stats(&self) -> ProxyStats {
        let (active, stalled) = {
            let registry = lock(&self.shared.registry);
            let stalled = registry.conns.values().filter(|e| e.stalled).count() as u64;
            (registry.conns.len() as u64 - stalled, stalled)
        };
        ProxyStats {
            accepted_total: self.shared.accepted_total.load(Ordering::Relaxed),
            forwarded_total: *self.shared.forwarded.borrow(),
            refused_total: *self.shared.refused.borrow(),
            upstream_failures: self.shared.upstream_failures.load(Ordering::Relaxed),
            cuts_total: self.shared.cuts_total.load(Ordering::Relaxed),
            active,
            stalled,
            delay_ms: duration_millis(*self.shared.delay.borrow()),
            refusing: self.shared.is_refusing(),
        }
    }

    /// Waits until at least `n` connections in total have been accepted and
    /// connected upstream since start. Resolves immediately if that is already so.
    pub async fn wait_for_forwarded(&self, n: u64) {
        let mut rx = self.shared.forwarded.subscribe();
        // The sender lives in `shared`, which `self` keeps alive, so this only
        // returns once the condition holds.
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    /// Waits until at least `n` connection attempts in total have been refused
    /// since start. Resolves immediately if that is already so.
    pub async fn wait_for_refused(&self, n: u64) {
        let mut rx = self.shared.refused.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    /// Stops listening, closes every connection with a TCP reset, and waits
    /// until all of the proxy's tasks have ended. Idempotent; the other methods
    /// keep working afterwards but there is nothing left for them to act on.
    pub async fn shutdown(&self) {
        self.shared.begin_shutdown();
        let task = lock(&self.shared.accept_task).take();
        // (No let-chain: the workspace's rust-version predates them.)
        if let Some(task) = task {
            let result = task.await;
            if let Err(error) = result {
                warn!(%error, "accept loop ended abnormally");
            }
        }
        // In case the accept loop did not get to it.
        self.shared.close_all();
        let rx = lock(&self.shared.tasks_done).take();
        if let Some(mut rx) = rx {
            while rx.recv().await.is_some() {}
        }
        info!(local_addr = %self.shared.local_addr, "fault proxy shut down");
    }
}

impl Shared {
    fn is_refusing(&self) -> bool {
        let mut refuse = lock(&self.refuse);
        match *refuse {
            Refuse::Off => false,
            Refuse::Forever => true,
            Refuse::Until(until) => {
                if Instant::now() < until {
                    true
                } else {
                    *refuse = Refuse::Off;
                    false
                }
            }
        }
    }

    fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.close_all();
    }

    /// Closes every registered connection with a reset and stops registering new ones.
    fn close_all(&self) {
        let entries: Vec<ConnEntry> = {
            let mut registry = lock(&self.registry);
            registry.closed = true;
            registry.conns.drain().map(|(_, entry)| entry).collect()
        };
        for entry in &entries {
            entry.cmd.send_replace(ConnCmd::Close(CutMode::Rst));
        }
    }

    fn register(&self) -> Option<(u64, watch::Receiver<ConnCmd>)> {
        let mut registry = lock(&self.registry);
        if registry.closed {
            return None;
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let (cmd, rx) = watch::channel(ConnCmd::Run);
        registry.conns.insert(
            id,
            ConnEntry {
                cmd,
                stalled: false,
            },
        );
        Some((id, rx))
    }

    fn unregister(&self, id: u64) {
        lock(&self.registry).conns.remove(&id);
    }

    fn on_accept(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        tracker: &mpsc::Sender<()>,
    ) {
        self.accepted_total.fetch_add(1, Ordering::Relaxed);
        if self.is_refusing() {
            // Count before resetting, so a client that saw the reset also sees the count.
            self.refused.send_modify(|n| *n += 1);
            debug!(%peer, "refused connection");
            reset(stream);
            return;
        }
        let Some((id, cmd)) = self.register() else {
            reset(stream);
            return;
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "could not set TCP_NODELAY on client socket");
        }
        debug!(%peer, id, "accepted connection");
        tokio::spawn(conn_task(
            Arc::clone(self),
            id,
            stream,
            cmd,
            tracker.clone(),
        ));
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tracker: mpsc::Sender<()>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => shared.on_accept(stream, peer, &tracker),
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    shared.close_all();
    debug!("accept loop ended");
}

/// Waits for a command other than [`ConnCmd::Run`]. A vanished sender (which
/// the registry never lets happen without a command) counts as a reset.
async fn next_cmd(rx: &mut watch::Receiver<ConnCmd>) -> ConnCmd {
    match rx.wait_for(|c| *c != ConnCmd::Run).await {
        Ok(cmd) => *cmd,
        Err(_) => ConnCmd::Close(CutMode::Rst),
    }
}

/// Waits for a [`ConnCmd::Close`] and returns its mode.
async fn next_close(rx: &mut watch::Receiver<ConnCmd>) -> CutMode {
    match rx.wait_for(|c| matches!(c, ConnCmd::Close(_))).await {
        Ok(cmd) => match *cmd {
            ConnCmd::Close(mode) => mode,
            ConnCmd::Run | ConnCmd::Stall => CutMode::Rst,
        },
        Err(_) => CutMode::Rst,
    }
}

/// Drives one proxied connection. `_tracker` is held so that
/// [`FaultProxy::shutdown`] can wait for this task to end.
async fn conn_task(
    shared: Arc<Shared>,
    id: u64,
    mut client: TcpStream,
    mut cmd: watch::Receiver<ConnCmd>,
    _tracker: mpsc::Sender<()>,
) {
    let upstream_addr = *lock(&shared.upstream);
    let connected = tokio::select! {
        biased;
        c = next_cmd(&mut cmd) => Err(c),
        r = TcpStream::connect(upstream_addr) => Ok(r),
    };
    let mut upstream = match connected {
        Err(command) => {
            let mode = match command {
                ConnCmd::Close(mode) => mode,
                ConnCmd::Run | ConnCmd::Stall => next_close(&mut cmd).await,
            };
            close(&shared, mode, client, None).await;
            return;
        }
        Ok(Err(error)) => {
            shared.upstream_failures.fetch_add(1, Ordering::Relaxed);
            warn!(%error, upstream = %upstream_addr, id, "upstream unreachable; resetting client");
            shared.unregister(id);
            reset(client);
            return;
        }
        Ok(Ok(upstream)) => upstream,
    };
    if let Err(error) = upstream.set_nodelay(true) {
        debug!(%error, "could not set TCP_NODELAY on upstream socket");
    }
    shared.forwarded.send_modify(|n| *n += 1);
    debug!(id, upstream = %upstream_addr, "forwarding");

    let delay = shared.delay.subscribe();
    let outcome = tokio::select! {
        biased;
        c = next_cmd(&mut cmd) => Err(c),
        r = forward(&mut client, &mut upstream, delay) => Ok(r),
    };
    match outcome {
        Ok(Ok(())) => {
            shared.unregister(id);
            debug!(id, "connection closed by peers");
        }
        Ok(Err(error)) => {
            shared.unregister(id);
            debug!(id, %error, "connection failed; resetting both sides");
            reset(client);
            reset(upstream);
        }
        Err(command) => {
            let mode = match command {
                ConnCmd::Close(mode) => mode,
                ConnCmd::Run | ConnCmd::Stall => {
                    debug!(id, "stalled");
                    next_close(&mut cmd).await
                }
            };
            close(&shared, mode, client, Some(upstream)).await;
        }
    }
}

/// Closes a connection's sockets the way `mode` says.
async fn close(shared: &Shared, mode: CutMode, client: TcpStream, upstream: Option<TcpStream>) {
    match mode {
        CutMode::Rst => {
            reset(client);
            if let Some(upstream) = upstream {
                reset(upstream);
            }
        }
        CutMode::Fin => {
            let mut client = client;
            let mut upstream = upstream;
            let mut shutdown = shared.shutdown.subscribe();
            let orderly = async {
                tokio::join!(fin_and_drain(&mut client), async {
                    if let Some(upstream) = upstream.as_mut() {
                        fin_and_drain(upstream).await;
                    }
                });
            };
            tokio::select! {
                _ = tokio::time::timeout(FIN_DRAIN_TIMEOUT, orderly) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        }
    }
}

/// Sends FIN, then reads and discards input until the peer closes too.
async fn fin_and_drain(stream: &mut TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
