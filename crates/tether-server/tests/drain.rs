//! Rolling restarts lose nothing: SIGTERM drains a server while a session publishes both ways.
//! Every request the server applied is reported applied (none applied twice); the session
//! resumes on another node (shared store) or on the restarted node (state directory) with the
//! same id and every message once, in order.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tether::CloseReason;
use tether_testkit::FaultProxy;
use tether_testkit::processes::{Node, Redis};

use support::{BIN, both_ways_through, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_sessions_to_another_node_with_nothing_lost() {
    let redis = Redis::start().expect("redis");
    let a = Arc::new(Mutex::new(node(&redis, &[])));
    let b = node(&redis, &[]);
    let a_addr = a.lock().expect("node").addr();
    let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), a_addr)
        .await
        .expect("proxy");
    let (proxy_handle, b_addr) = (proxy.clone(), b.addr());
    let draining = a.clone();
    let (client, reasons) = both_ways_through(&proxy, &b.url(), 300, move || {
        // The deploy: the load balancer moves to B, A gets SIGTERM and drains.
        proxy_handle.set_upstream(b_addr);
        let status = draining.lock().expect("node").terminate().expect("SIGTERM");
        assert!(status.success(), "A drained and exited cleanly: {status:?}");
    })
    .await;
    assert_eq!(
        reasons,
        vec![CloseReason::ServerDraining],
        "the only disconnection was the drain"
    );
    client.close().await;
}

fn state_node(dir: &Path, listen: SocketAddr) -> Node {
    let dir = dir.display().to_string();
    Node::start_at(Path::new(BIN), &["--dev", "--state-dir", &dir], &[], listen)
        .expect("the node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_restarted_with_a_state_dir_keeps_every_session() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tether-drain-state-{}", std::process::id()));
    let first = state_node(&dir, "127.0.0.1:0".parse().expect("addr"));
    let addr = first.addr();
    let node = Arc::new(Mutex::new(Some(first)));
    let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), addr)
        .await
        .expect("proxy");
    let restarting = node.clone();
    let restart_dir = dir.clone();
    // `systemctl restart`: SIGTERM, the process exits, the same binary starts again on the
    // same address with the same state directory. The observer and the producer ride the
    // restart too.
    let (client, reasons) = both_ways_through(&proxy, &format!("ws://{addr}"), 300, move || {
        let mut slot = restarting.lock().expect("node");
        if let Some(mut old) = slot.take() {
            let status = old.terminate().expect("SIGTERM");
            assert!(status.success(), "drained and exited cleanly: {status:?}");
        }
        assert!(
            restart_dir.join("tether-state.bin").is_file(),
            "the drain saved the sessions"
        );
        *slot = Some(state_node(&restart_dir, addr));
    })
    .await;
    assert_eq!(reasons, vec![CloseReason::ServerDraining]);
    assert!(
        !dir.join("tether-state.bin").exists(),
        "a loaded state is used once"
    );
    client.close().await;
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_file_is_refused_whole_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("tether-bad-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("tether-state.bin"), b"TETHERST not really").expect("write");
    let out = support::within(
        "the server to refuse",
        tokio::process::Command::new(BIN)
            .args(["--dev", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run tether-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not start: {stderr}");
    assert!(
        stderr.contains("tether-state.bin") && stderr.contains("nothing was loaded"),
        "the error names the file and says nothing was loaded: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
