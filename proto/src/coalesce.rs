//! Write coalescing for HTTP/2 connections that carry many concurrent requests: the frames of
//! many requests (client side) or replies (server side) leave in one `sendmsg` instead of one
//! each.
//!
//! h2 flushes its connection every time the connection task runs with frames to send, and a
//! request or reply finishing on another task wakes it each time. Under 128 clients on 8
//! connections that was one `sendmsg` per message: 24 % of the leader's CPU for linearizable
//! gets on loopback, where the sender also pays for the receiver's TCP processing. [`Coalesced`]
//! takes h2's bytes into its own buffer and puts the first flush request off by one turn of the
//! scheduler (the task wakes itself, which tokio treats as a yield): messages that other tasks
//! finish meanwhile join the same write. With nothing else runnable the task is polled again at
//! once.
//!
//! The server wraps every accepted client connection; the client library wraps every
//! connection it opens. Owns only the byte stream; knows nothing of HTTP/2 or gRPC. Reads pass
//! straight through.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Above this many buffered bytes a write goes out before more is taken.
const BUF_MAX: usize = 256 << 10;

/// A stream whose writes are buffered and whose flushes wait one scheduler turn.
pub struct Coalesced<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// The current flush has been put off once.
    deferred: bool,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Self {
        Coalesced {
            inner,
            buf: Vec::new(),
            pos: 0,
            deferred: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        self.buf.clear();
        self.pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= BUF_MAX {
            ready!(this.poll_drain(cx))?;
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.buf.len() && !this.deferred {
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: Connected> Connected for Coalesced<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_arrive_whole_and_in_order_after_flush_and_after_shutdown() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = Coalesced::new(a);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.map(|_| got)
        });
        for chunk in data.chunks(7_001) {
            w.write_all(chunk).await.expect("write");
        }
        w.flush().await.expect("flush");
        w.write_all(b"tail").await.expect("write");
        w.shutdown().await.expect("shutdown");
        let got = reader.await.expect("join").expect("read");
        assert_eq!(got.len(), data.len() + 4);
        assert_eq!(&got[..data.len()], &data[..]);
        assert_eq!(&got[data.len()..], b"tail");
    }

    #[tokio::test]
    async fn a_flush_is_put_off_once_then_writes_everything_buffered() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut w = Coalesced::new(a);
        w.write_all(b"one").await.expect("write");
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(
            Pin::new(&mut w).poll_flush(&mut cx).is_pending(),
            "the first flush request yields"
        );
        w.write_all(b"two").await.expect("write");
        assert!(matches!(
            Pin::new(&mut w).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let mut got = [0u8; 6];
        tokio::time::timeout(std::time::Duration::from_secs(10), b.read_exact(&mut got))
            .await
            .expect("both writes arrived")
            .expect("read");
        assert_eq!(&got, b"onetwo");
    }
}
