//! `tether-conformance-fixture`: the conformance scenarios' environment (a real server behind
//! the fault proxy) driven over HTTP by the runners of every language (see
//! `tether_conformance::http`).
//!
//! Prints one line, `control=127.0.0.1:PORT`, once it listens; exits when its standard input
//! closes (so a runner that dies takes it along), or on SIGTERM / SIGINT.

use std::io::{Read, Write};
use std::sync::Arc;

use tether_conformance::fixture::Fixture;
use tokio::net::TcpListener;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tether-conformance-fixture: cannot listen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tether-conformance-fixture: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let fixture = Arc::new(Fixture::default());
    let server = tokio::spawn(tether_conformance::http::serve(listener, fixture.clone()));
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "control={addr}");
        let _ = out.flush();
    }
    // Standard input is read on a thread of its own (blocking reads), which says when it ends.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let stdin_closed = async {
        let _ = closed_rx.await;
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        () = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    server.abort();
    fixture.end().await;
    std::process::ExitCode::SUCCESS
}
