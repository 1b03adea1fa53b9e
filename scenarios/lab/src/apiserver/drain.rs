//! Closing a connection without losing its answer.
//!
//! Closing a socket with unread input makes the kernel send a reset, which can destroy the
//! answer before the client reads it: a 400 or 431 sent mid-request, or a 405 to a request
//! with a body nobody read, would be lost. So, once hyper shuts the connection down after an
//! answer, read on, briefly and boundedly, until the client closes its side.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long to read after the answer, at most.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How much to read after the answer, at most.
const MAX_DRAIN: usize = 256 * 1024;

/// A stream whose shutdown closes the writing side (for TLS, with close_notify, so the
/// client sees a clean end of the body), then reads and discards what the client still
/// sends until it closes, for at most [`DRAIN_TIMEOUT`] and [`MAX_DRAIN`] bytes.
#[derive(Debug)]
pub(super) struct Drain<S> {
    inner: S,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Reading and writing as usual.
    Open,
    /// Written and shut down; reading what is left.
    Draining { until: Pin<Box<Sleep>>, drained: usize },
    /// Closed as far as this side goes.
    Done,
}

impl<S> Drain<S> {
    pub(super) fn new(inner: S) -> Self {
        Self { inner, state: State::Open }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Drain<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Drain<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    let until = Box::pin(tokio::time::sleep(DRAIN_TIMEOUT));
                    this.state = State::Draining { until, drained: 0 };
                }
                State::Draining { until, drained } => {
                    if *drained >= MAX_DRAIN || until.as_mut().poll(cx).is_ready() {
                        this.state = State::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => *drained += buf.filled().len(),
                        // The client closed (or reset): nothing left to protect.
                        Ok(()) | Err(_) => this.state = State::Done,
                    }
                }
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}
