//! Byte-stream adapters that Tether's client and server both put under their WebSocket.
//!
//! [`BulkReader`]: large reads for busy connections, without a large buffer for idle ones.
//! tungstenite reads at most its read buffer's size per system call, and zero-fills that
//! buffer, so both ends keep it small: the server's (1 KiB) because every idle session pays
//! for it, the client's (16 KiB) because a process may hold many sessions. A peer that streams,
//! though, sends WebSocket messages of up to 64 KiB (a batch of frames), which took 64 reads
//! each on the server and four on the client, each a system call and, over loopback, a TCP
//! acknowledgement processed on the spot. [`BulkReader`] sits between tungstenite and the
//! socket: while the socket keeps filling every read, it reads 64 KiB at a time and hands
//! tungstenite the bytes from memory; as soon as a read would wait (the peer paused), it gives
//! the buffer back. Idle connections never hold it.
//!
//! tokio's `BufReader` would keep its buffer for the connection's life; nothing in the
//! ecosystem releases it on idle, hence this small adapter.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The size of one bulk read.
pub const BULK: usize = 64 * 1024;

/// A stream whose reads grow to [`BULK`] bytes while data keeps coming; writes go straight
/// through.
#[derive(Debug)]
pub struct BulkReader<S> {
    inner: S,
    /// Empty while idle; [`BULK`] bytes long while busy, `start..end` not handed out yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<S> BulkReader<S> {
    /// Wraps `inner`; reads go straight through until one fills the caller's buffer.
    pub fn new(inner: S) -> Self {
        BulkReader {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Whether the bulk buffer is held (the connection is busy).
    #[cfg(test)]
    fn is_bulk(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Copies what is buffered into `out`.
    fn hand_out(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.end - self.start);
        out.put_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BulkReader<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.end {
            this.hand_out(out);
            return Poll::Ready(Ok(()));
        }
        if this.buf.is_empty() {
            // Idle: read straight into the caller's buffer. A read that fills it says more is
            // probably waiting: the next reads are bulk ones.
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            if out.remaining() == 0 && out.filled().len() > before {
                this.buf = vec![0; BULK];
            }
            return Poll::Ready(Ok(()));
        }
        let mut bulk = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.inner).poll_read(cx, &mut bulk) {
            Poll::Pending => {
                // The peer paused: give the memory back until it streams again.
                this.buf = Vec::new();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                this.start = 0;
                this.end = bulk.filled().len();
                // Zero bytes is the end of the stream: `out` stays empty, as it should.
                this.hand_out(out);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BulkReader<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Reads `n` bytes in reads of at most 1 KiB, as tungstenite does on the server.
    async fn read_small(r: &mut BulkReader<tokio::io::DuplexStream>, n: usize) -> Vec<u8> {
        let mut got = Vec::with_capacity(n);
        let mut chunk = [0u8; 1024];
        while got.len() < n {
            let want = chunk.len().min(n - got.len());
            let k = r.read(&mut chunk[..want]).await.expect("read");
            assert!(k > 0, "stream ended after {} of {n} bytes", got.len());
            got.extend_from_slice(&chunk[..k]);
        }
        got
    }

    #[tokio::test]
    async fn streams_in_bulk_keeps_every_byte_in_order_and_lets_go_when_idle() {
        let (mut peer, ours) = tokio::io::duplex(256 * 1024);
        let mut reader = BulkReader::new(ours);
        // A small message: read directly, no buffer taken.
        peer.write_all(b"hello").await.expect("write");
        let mut chunk = [0u8; 1024];
        let k = reader.read(&mut chunk).await.expect("read");
        assert_eq!(&chunk[..k], b"hello");
        assert!(
            !reader.is_bulk(),
            "a read that did not fill its buffer stays direct"
        );

        // A stream: the first full read switches to bulk reads.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&data).await.expect("write");
        let first = read_small(&mut reader, 1024).await;
        assert!(reader.is_bulk(), "a full read switches to bulk reads");
        let rest = read_small(&mut reader, data.len() - 1024).await;
        assert_eq!([first, rest].concat(), data);

        // Nothing more to read: the read would wait, and the buffer goes back.
        let waiting = reader.read(&mut chunk).now_or_never();
        assert!(waiting.is_none(), "no data: the read waits");
        assert!(!reader.is_bulk(), "an idle connection holds no buffer");

        // Writes pass through, and the end of the stream reads as 0 bytes.
        reader.write_all(b"answer").await.expect("write");
        let mut answer = [0u8; 6];
        peer.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"answer");
        peer.write_all(&data[..3000]).await.expect("write");
        drop(peer);
        assert_eq!(read_small(&mut reader, 3000).await, data[..3000]);
        assert_eq!(reader.read(&mut chunk).await.expect("read"), 0);
    }
}
