//! Helpers shared by the integration tests: an echo server and socket checks.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Upper bound for anything that is expected to happen; only hit when a test fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stalled connection is watched for (absence of) an echo.
pub(crate) const STALL_WATCH: Duration = Duration::from_millis(300);

/// Starts an echo server on loopback. Each connection echoes until EOF, then closes.
pub(crate) async fn spawn_echo() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo server");
    let addr = listener.local_addr().expect("echo addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    (addr, task)
}

/// A loopback address where nothing listens: the returned socket holds the
/// port (bound, never listening) so no other test can take it meanwhile.
pub(crate) fn dead_addr() -> (SocketAddr, TcpSocket) {
    let socket = TcpSocket::new_v4().expect("create socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind placeholder socket");
    let addr = socket.local_addr().expect("placeholder addr");
    (addr, socket)
}

/// Writes `data` and reads the same number of bytes back.
pub(crate) async fn roundtrip(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(data).await?;
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).await?;
    Ok(back)
}

/// Connects to `addr` and checks that an echo comes back intact.
pub(crate) async fn connect_and_echo(addr: SocketAddr) -> TcpStream {
    let mut stream = timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let back = timeout(TIMEOUT, roundtrip(&mut stream, b"ping"))
        .await
        .expect("echo timed out")
        .expect("echo through proxy");
    assert_eq!(back, b"ping");
    stream
}

/// Asserts that the next read on `stream` fails with `ConnectionReset`.
pub(crate) async fn assert_reset(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let result = timeout(TIMEOUT, stream.read(&mut buf))
        .await
        .expect("no reset arrived in time");
    match result {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "unexpected error {e}"),
        Ok(n) => panic!("expected a reset, read returned Ok({n})"),
    }
}

/// Asserts that the next read on `stream` returns end-of-file.
pub(crate) async fn assert_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let n = timeout(TIMEOUT, stream.read(&mut buf))
        .await
        .expect("no EOF arrived in time")
        .expect("read after FIN cut");
    assert_eq!(n, 0, "expected EOF");
}

/// Asserts that nothing arrives on `stream` within [`STALL_WATCH`].
pub(crate) async fn assert_silent(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let result = timeout(STALL_WATCH, stream.read(&mut buf)).await;
    assert!(
        result.is_err(),
        "expected silence, read returned {result:?}"
    );
}

/// Connects to a refusing proxy and checks the connection is reset. The reset
/// may arrive before `connect` has returned, which then fails with it.
pub(crate) async fn assert_refused(addr: SocketAddr) {
    let connected = timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out");
    match connected {
        Ok(mut stream) => assert_reset(&mut stream).await,
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "unexpected error {e}"),
    }
}

/// Retries an echo through `addr` every 20 ms until one succeeds; returns when it did.
pub(crate) async fn poll_until_echo_works(addr: SocketAddr) -> Instant {
    let deadline = Instant::now() + TIMEOUT;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        assert!(Instant::now() < deadline, "echo never started working");
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            continue;
        };
        if let Ok(Ok(back)) = timeout(TIMEOUT, roundtrip(&mut stream, b"poll")).await {
            assert_eq!(back, b"poll", "echo came back corrupted");
            return Instant::now();
        }
    }
}
