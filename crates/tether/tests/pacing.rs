//! The server's writer under a sustained stream, with the longest `write_linger_ms` it accepts
//! (so that it lingers as much as it ever does): every update arrives once and in order, a
//! request made meanwhile completes, and a connection cut in the middle of the stream resumes
//! with nothing lost.

mod common;

use common::{Env, config, within};
use tether::{CloseReason, SessionState};
use tether_testkit::CutMode;

const UPDATES: u32 = 40_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_writer_loses_nothing_and_a_request_made_meanwhile_completes() {
    let mut cfg = config();
    cfg.write_linger_ms = 100;
    cfg.recovery.max_frames = 2 * UPDATES as usize;
    let env = Env::with(cfg).await;
    let session = env.builder().open().await.expect("open");
    let mut changes = session.state_changes();
    let mut sub = session.subscribe("pace/t").await.expect("subscribe");

    let reader = tokio::spawn(async move {
        let mut next = 0u32;
        while next < UPDATES {
            let update = sub.next().await.expect("the stream goes on");
            if update.snapshot {
                continue;
            }
            let got = u32::from_be_bytes(update.value[..].try_into().expect("4 bytes"));
            assert_eq!(got, next, "every update once, in order");
            next += 1;
        }
    });

    for i in 0..UPDATES {
        env.server
            .publish("pace/t", i.to_be_bytes().to_vec())
            .await
            .expect("publish");
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
        if i == UPDATES / 4 {
            // A request in the middle of the stream: applied and acknowledged while the
            // writer lingers between rounds of updates.
            within(
                "a publish during the stream",
                session.publish("pace/other", "x"),
            )
            .await
            .expect("applied");
        }
        if i == UPDATES / 2 {
            env.proxy.cut(CutMode::Rst);
        }
    }
    within("every update", reader).await.expect("reader");

    // The cut was survived: one recovery, back to active, no gap (a gap report would have
    // come with a snapshot and a hole in the sequence above).
    let mut lost = None;
    loop {
        let change = within("the resume", changes.next())
            .await
            .expect("a change");
        if change.new == SessionState::RecoveringReconnect {
            lost = change.reason;
        }
        if change.new == SessionState::ConnectedActive && lost.is_some() {
            break;
        }
    }
    assert_eq!(lost, Some(CloseReason::TransportError));
    session.close().await;
}
