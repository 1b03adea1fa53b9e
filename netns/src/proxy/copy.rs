//! Both directions of a proxied connection, copied with buffers that grow only for bulk.
//!
//! tokio's `copy_bidirectional_with_sizes` allocates and zeroes both buffers up front. At
//! 64 KiB each (the size bulk transfers need, see [`BULK`]) that was the largest user-space
//! cost per connection under `cplb lab bench --only conn_rate` (`memset`, 5.5 % of the
//! proxy's samples), and every held connection, such as a kubelet's watch, kept 128 KiB.
//! Here each direction starts with [`FIRST`] bytes and moves to [`BULK`] only once a read
//! fills the buffer it has: API requests and answers stay small, a transfer soon runs at
//! full size.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Each direction's first buffer.
pub(super) const FIRST: usize = 4 * 1024;
/// The buffer of a direction that filled its first one: 64 KiB matches the loopback and
/// veth segment sizes (tokio's default 8 KiB halved bulk throughput next to HAProxy).
pub(super) const BULK: usize = 64 * 1024;

/// Copies `a` to `b` and `b` to `a` until both have ended; an end of one direction is
/// passed on as a shutdown of the other side's write half. Resolves to the bytes copied
/// each way, or the first error.
pub(super) fn bidirectional<'a, A, B>(a: &'a mut A, b: &'a mut B) -> Bidirectional<'a, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    Bidirectional { a, b, a_to_b: Direction::new(), b_to_a: Direction::new() }
}

/// The future of [`bidirectional`].
pub(super) struct Bidirectional<'a, A, B> {
    a: &'a mut A,
    b: &'a mut B,
    a_to_b: Direction,
    b_to_a: Direction,
}

impl<A, B> Future for Bidirectional<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<(u64, u64)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let forward = this.a_to_b.poll_copy(cx, &mut *this.a, &mut *this.b)?;
        let backward = this.b_to_a.poll_copy(cx, &mut *this.b, &mut *this.a)?;
        match (forward, backward) {
            (Poll::Ready(f), Poll::Ready(b)) => Poll::Ready(Ok((f, b))),
            _ => Poll::Pending,
        }
    }
}

/// One direction: what was read and not yet written, and how far it has got.
struct Direction {
    buf: Box<[u8]>,
    /// `buf[pos..cap]` is still to be written.
    pos: usize,
    cap: usize,
    /// The last read filled the buffer: the next one is [`BULK`] bytes.
    grow: bool,
    read_done: bool,
    need_flush: bool,
    /// The writer is shut down: this direction is over.
    done: bool,
    copied: u64,
}

impl Direction {
    fn new() -> Self {
        Self {
            buf: vec![0; FIRST].into_boxed_slice(),
            pos: 0,
            cap: 0,
            grow: false,
            read_done: false,
            need_flush: false,
            done: false,
            copied: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(self.copied));
            }
            if self.pos == self.cap && !self.read_done {
                if self.grow {
                    self.buf = vec![0; BULK].into_boxed_slice();
                    self.grow = false;
                }
                let mut read = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *r).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.grow = n == self.buf.len() && self.buf.len() < BULK;
                            (self.pos, self.cap) = (0, n);
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing to read for now: what was written goes out first.
                        if self.need_flush {
                            ready!(Pin::new(&mut *w).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.copied += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                self.done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn both_ways_byte_for_byte_small_and_bulk_with_the_ends_passed_on() {
        let (mut client, mut a) = tokio::io::duplex(1 << 20);
        let (mut b, mut server) = tokio::io::duplex(1 << 20);
        let relay = tokio::spawn(async move { bidirectional(&mut a, &mut b).await });
        // A small request, then a bulk answer that makes the buffer grow.
        client.write_all(b"GET /").await.unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET /");
        let bulk: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let sent = bulk.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&sent).await.unwrap();
            // The server's end: passed on to the client as end of stream.
            server.shutdown().await.unwrap();
            server
        });
        let mut answer = vec![0u8; bulk.len()];
        client.read_exact(&mut answer).await.unwrap();
        assert!(answer == bulk, "the bulk answer arrived intact");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the end of the answer is passed on");
        // The client's half-close ends the other direction, and then the relay.
        client.shutdown().await.unwrap();
        let mut server = writer.await.unwrap();
        let mut tail = Vec::new();
        server.read_to_end(&mut tail).await.unwrap();
        assert!(tail.is_empty());
        let (forward, backward) = relay.await.unwrap().unwrap();
        assert_eq!((forward, backward), (5, 700_000));
    }

    #[tokio::test]
    async fn a_direction_that_never_fills_its_buffer_keeps_the_small_one() {
        let mut d = Direction::new();
        let (mut r, mut feed) = tokio::io::duplex(4096);
        let (mut w, _out) = tokio::io::duplex(1 << 16);
        feed.write_all(&[7u8; 100]).await.unwrap();
        drop(feed);
        let copied = std::future::poll_fn(|cx| d.poll_copy(cx, &mut r, &mut w)).await.unwrap();
        assert_eq!(copied, 100);
        assert_eq!(d.buf.len(), FIRST);
    }
}
