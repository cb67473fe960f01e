//! Byte forwarding between the two sockets of a proxied connection.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Size of the read buffer of each direction.
const BUF_SIZE: usize = 64 * 1024;

/// Chunks that may be queued per direction while a delay is applied.
const DELAY_QUEUE_CHUNKS: usize = 256;

/// Forwards bytes in both directions until both sides have sent end-of-file
/// (`Ok`) or an I/O error occurs on either side (`Err`).
///
/// End-of-file on one side is propagated as a write shutdown to the other, so
/// half-closed connections behave as they would without the proxy.
pub(crate) async fn forward(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    delay: watch::Receiver<Duration>,
) -> io::Result<()> {
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    tokio::try_join!(
        pipe(&mut client_read, &mut upstream_write, delay.clone()),
        pipe(&mut upstream_read, &mut client_write, delay),
    )?;
    Ok(())
}

/// One direction of a connection.
///
/// Without delay this is a plain read/write loop (no timers, no copies beyond
/// the one buffer). As soon as a chunk is read while a delay is set, the
/// direction switches to a pipelined mode for the rest of its life: every chunk
/// is stamped with `read time + delay` and written, in order, once that time
/// has come, while reading continues. A delay set back to zero then costs only
/// a queue hop per chunk.
async fn pipe<R, W>(
    reader: &mut R,
    writer: &mut W,
    delay: watch::Receiver<Duration>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return writer.shutdown().await;
        }
        // Read the delay after the read completed, so that data arriving on an
        // idle connection after `set_delay` is delayed too.
        let current = *delay.borrow();
        if current.is_zero() {
            writer.write_all(&buf[..n]).await?;
        } else {
            let first = Chunk {
                due: due_time(current),
                data: buf[..n].to_vec(),
            };
            return pipe_delayed(reader, writer, delay, buf, first).await;
        }
    }
}

/// A chunk of bytes waiting to be written at `due`.
struct Chunk {
    due: Instant,
    data: Vec<u8>,
}

/// `now + delay`, saturating to a far-away instant instead of overflowing.
fn due_time(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

async fn pipe_delayed<R, W>(
    reader: &mut R,
    writer: &mut W,
    delay: watch::Receiver<Duration>,
    mut buf: Vec<u8>,
    first: Chunk,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Chunk>(DELAY_QUEUE_CHUNKS);
    let read_side = async move {
        if tx.send(first).await.is_err() {
            return Ok(());
        }
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                // Dropping `tx` lets the write side drain the queue and then
                // propagate end-of-file.
                return Ok::<(), io::Error>(());
            }
            let chunk = Chunk {
                due: due_time(*delay.borrow()),
                data: buf[..n].to_vec(),
            };
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
    };
    let write_side = async {
        while let Some(chunk) = rx.recv().await {
            if chunk.due > Instant::now() {
                tokio::time::sleep_until(chunk.due).await;
            }
            writer.write_all(&chunk.data).await?;
        }
        writer.shutdown().await
    };
    tokio::try_join!(read_side, write_side)?;
    Ok(())
}
