//! Prometheus metrics (with the `prometheus-client` crate), served as text on a listener of
//! their own so that scraping never shares the sessions' port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    reason: &'static str,
}

/// Every metric the server keeps.
pub(crate) struct Metrics {
    registry: Registry,
    sessions: Family<StateLabel, Gauge>,
    pub(crate) opens: Counter,
    pub(crate) resumes: Counter,
    refusals: Family<ReasonLabel, Counter>,
    pub(crate) replayed_frames: Counter,
    pub(crate) gap_reports: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) slow_consumers: Counter,
    pub(crate) drains: Counter,
    pub(crate) sent_away: Counter,
    pub(crate) retry_afters: Counter,
    /// Whether the server takes new sessions (`GET /ready`); false while draining.
    ready: AtomicBool,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tether");
        let m = Metrics {
            registry: Registry::default(),
            sessions: Family::default(),
            opens: Counter::default(),
            resumes: Counter::default(),
            refusals: Family::default(),
            replayed_frames: Counter::default(),
            gap_reports: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            slow_consumers: Counter::default(),
            drains: Counter::default(),
            sent_away: Counter::default(),
            retry_afters: Counter::default(),
            ready: AtomicBool::new(true),
        };
        registry.register("sessions", "Sessions kept, by state", m.sessions.clone());
        registry.register("session_opens", "Sessions opened", m.opens.clone());
        registry.register("session_resumes", "Successful resumes", m.resumes.clone());
        registry.register(
            "refusals",
            "Refused opens and resumes, by close reason",
            m.refusals.clone(),
        );
        registry.register(
            "replayed_frames",
            "Frames replayed to clients after a resume",
            m.replayed_frames.clone(),
        );
        registry.register(
            "gap_reports",
            "Resumes that reported lost messages",
            m.gap_reports.clone(),
        );
        registry.register(
            "received_bytes",
            "WebSocket payload bytes received",
            m.bytes_in.clone(),
        );
        registry.register(
            "sent_bytes",
            "WebSocket payload bytes sent",
            m.bytes_out.clone(),
        );
        registry.register(
            "slow_consumers",
            "Connections dropped because their client read too slowly",
            m.slow_consumers.clone(),
        );
        registry.register(
            "drains",
            "Drains started (SIGTERM, Server::drain)",
            m.drains.clone(),
        );
        registry.register(
            "sessions_sent_away",
            "Sessions told to reconnect elsewhere (server_draining)",
            m.sent_away.clone(),
        );
        registry.register(
            "retry_afters",
            "Opens and resumes refused with a retry-after hint (server_draining, server_busy)",
            m.retry_afters.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Whether `GET /ready` answers ready.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn state(&self, state: &'static str) -> Gauge {
        self.sessions.get_or_create(&StateLabel { state }).clone()
    }

    /// A session moved between `connected`, `disconnected` and gone (`None`).
    pub(crate) fn session_state(&self, from: Option<&'static str>, to: Option<&'static str>) {
        if let Some(f) = from {
            self.state(f).dec();
        }
        if let Some(t) = to {
            self.state(t).inc();
        }
    }

    pub(crate) fn refused(&self, reason: tether_protocol::CloseReason) {
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            warn!("metrics could not be encoded");
        }
        out
    }
}

/// Serves `GET /metrics` and `GET /ready` (200 `ready`, or 503 `draining`: take the node out
/// of the load balancer) on `listen` until the returned task is aborted.
pub(crate) async fn serve(
    metrics: Arc<Metrics>,
    listen: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let read =
                    tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                        .await;
                let Ok(Ok(n)) = read else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) =
                    if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                        ("200 OK", metrics.render())
                    } else if head.starts_with("GET /ready ") || head.starts_with("GET /ready?") {
                        if metrics.is_ready() {
                            ("200 OK", "ready\n".to_string())
                        } else {
                            ("503 Service Unavailable", "draining\n".to_string())
                        }
                    } else {
                        (
                            "404 Not Found",
                            "only GET /metrics and GET /ready are served here\n".to_string(),
                        )
                    };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(e) = stream.write_all(response.as_bytes()).await {
                    debug!(error = %e, "metrics client went away");
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok((addr, task))
}
