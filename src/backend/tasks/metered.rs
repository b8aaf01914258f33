//! Counts the bytes a task connection reads and writes in its shard's
//! `bytes_received` and `bytes_sent`. The socket is wrapped once, where the
//! task starts, so no path (handshake, frames, pings, closes, refusals) can
//! write around the count: tungstenite's connections through
//! `AsyncRead`/`AsyncWrite`, the session task's through [`Transport`].

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::transport::Transport;
use crate::server::stats::ShardCounters;

/// A socket whose traffic is counted.
pub struct Metered<'a, S> {
    inner: S,
    counters: &'a ShardCounters,
}

impl<'a, S> Metered<'a, S> {
    pub fn new(inner: S, counters: &'a ShardCounters) -> Self {
        Metered { inner, counters }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn received(&self, bytes: usize) {
        self.counters
            .bytes_received
            .fetch_add(bytes as u64, Relaxed);
    }

    fn sent(&self, bytes: usize) {
        self.counters.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            self.received(buf.filled().len() - before);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result {
            self.sent(written);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = result {
            self.sent(written);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Transport> Transport for Metered<'_, T> {
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let (result, buf) = self.inner.read(buf).await;
        if let Ok(read) = result {
            self.received(read);
        }
        (result, buf)
    }

    async fn write_all(&self, bytes: Bytes) -> io::Result<()> {
        let len = bytes.len();
        self.inner.write_all(bytes).await?;
        self.sent(len);
        Ok(())
    }

    fn shutdown(&self, how: Shutdown) {
        self.inner.shutdown(how)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn every_byte_read_and_written_is_counted() {
        let counters = ShardCounters::default();
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut metered = Metered::new(ours, &counters);
        metered.write_all(b"hello").await.unwrap();
        theirs.write_all(b"four").await.unwrap();
        let mut got = [0u8; 4];
        metered.read_exact(&mut got).await.unwrap();
        let mut echo = [0u8; 5];
        theirs.read_exact(&mut echo).await.unwrap();
        assert_eq!((&got, &echo), (b"four", b"hello"));
        assert_eq!(counters.bytes_sent.load(Relaxed), 5);
        assert_eq!(counters.bytes_received.load(Relaxed), 4);
    }
}
