//! The ping period a client asks for: granted within the server's bounds, kept across
//! resumes, and what decides how soon a silent network is noticed.

mod common;

use std::time::Duration;

use common::{Env, config, within};
use tether::{Error, SessionState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_grants_the_ping_period_asked_for_within_its_bounds() {
    let env = Env::start().await;
    let cases = [
        (None, Duration::from_secs(10)),
        (Some(Duration::from_secs(2)), Duration::from_secs(2)),
        (Some(Duration::from_millis(100)), Duration::from_secs(1)),
        (Some(Duration::from_secs(600)), Duration::from_secs(60)),
    ];
    for (asked, granted) in cases {
        let mut builder = env.builder();
        if let Some(asked) = asked {
            builder = builder.ping_period(asked);
        }
        let session = builder.open().await.expect("open");
        assert_eq!(session.ping_period(), Some(granted), "asked for {asked:?}");
        session.close().await;
        assert_eq!(session.ping_period(), None, "no connection, no period");
    }
    let zero = env
        .builder()
        .ping_period(Duration::ZERO)
        .open()
        .await
        .expect_err("a zero period is refused");
    assert!(matches!(zero, Error::InvalidArgument(_)), "{zero:?}");
}

/// The server would wait 90 s before calling a silent connection dead; the client asked for
/// 1 s, so both notice a stalled network within seconds and the session resumes, with the
/// same period, once it heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ping_period_notices_a_stalled_network() {
    let mut cfg = config();
    cfg.ping_period_ms = 60_000;
    let env = Env::with(cfg).await;
    let session = env
        .builder()
        .ping_period(Duration::from_secs(1))
        .open()
        .await
        .expect("open");
    assert_eq!(session.ping_period(), Some(Duration::from_secs(1)));
    let mut states = session.state_changes();
    let mut sub = session.subscribe("t/**").await.expect("subscribe");
    env.proxy.stall();
    let stalled = std::time::Instant::now();
    within("the stall to be noticed", async {
        while let Some(change) = states.next().await {
            if change.new == SessionState::RecoveringReconnect {
                break;
            }
        }
    })
    .await;
    // Reported, not asserted: how long a 1 s period took to notice (the rule: 1.5 periods
    // after the last frame heard, which was at most half a period before the stall).
    eprintln!("stall noticed after {:?}", stalled.elapsed());
    env.proxy.heal();
    within("the resume", async {
        while let Some(change) = states.next().await {
            if change.new == SessionState::ConnectedActive {
                break;
            }
        }
    })
    .await;
    assert_eq!(session.ping_period(), Some(Duration::from_secs(1)));
    session.publish("t/x", "after").await.expect("publish");
    assert_eq!(
        within("update", sub.next()).await.expect("update").value,
        "after".as_bytes()
    );
    session.close().await;
}
