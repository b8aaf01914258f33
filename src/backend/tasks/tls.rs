//! TLS for the task backends, as their users would add it. tokio and
//! tokio-tpc's WebSocket connections go through tokio-rustls (the stack
//! everybody uses: `TlsAcceptor` in front of tokio-tungstenite); the
//! session task (raw TCP, and everything on tokio-uring, whose sockets are
//! not `AsyncRead`) gets [`TlsTransport`], rustls's own buffered connection
//! over the session's [`Transport`]. Both keep rustls's whole state per
//! connection: the reference the compact state is measured against.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rustls::{HandshakeKind, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use super::transport::Transport;
use super::Shard;
use crate::server::stats::{bump, count_tls_failure, ShardCounters};
use crate::tls::conn::not_tls;
use crate::tls::{Failure, TlsSetup};

/// Where one handshake stopped, other than completing.
enum Stopped {
    Failed(Failure),
    Stalled,
    Vanished,
}

fn count(stopped: Stopped, counters: &ShardCounters) {
    match stopped {
        Stopped::Failed(failure) => count_tls_failure(counters, failure),
        Stopped::Stalled => {
            bump(&counters.handshake_timeouts);
            bump(&counters.tls_handshake_stalls);
        }
        Stopped::Vanished => bump(&counters.tls_handshakes_vanished),
    }
}

fn count_completed(kind: Option<HandshakeKind>, counters: &ShardCounters) {
    bump(&counters.tls_handshakes);
    if kind == Some(HandshakeKind::Resumed) {
        bump(&counters.tls_resumed);
    }
}

/// tokio-rustls's handshake over `stream`, within the handshake deadline.
/// A client that is not speaking TLS is answered (400 or an alert) first.
pub async fn accept_with_tokio_rustls<S>(
    stream: S,
    first_bytes: &[u8],
    setup: &TlsSetup,
    shard: &Shard,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let counters = shard.counters();
    let deadline = Instant::now() + shard.settings.handshake_timeout;
    let mut stream = stream;
    let mut wire = Vec::new();
    if let Some(failure) = not_tls(first_bytes, &mut wire) {
        let patience = shard.settings.close_timeout;
        let _ = tokio::time::timeout(patience, stream.write_all(&wire)).await;
        count(Stopped::Failed(failure), counters);
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(setup.config.clone());
    let stopped = match timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            count_completed(stream.get_ref().1.handshake_kind(), counters);
            return Some(stream);
        }
        Err(_) => Stopped::Stalled,
        Ok(Err(error)) => stopped_by(&error),
    };
    count(stopped, counters);
    None
}

/// Why an io::Error from a handshake ended it.
fn stopped_by(error: &io::Error) -> Stopped {
    match tls_failure_in(error) {
        Some(failure) => Stopped::Failed(failure),
        None => Stopped::Vanished,
    }
}

/// The TLS failure an io::Error from tokio-rustls carries, if any.
pub fn tls_failure_in(error: &io::Error) -> Option<Failure> {
    let rustls_error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(Failure::of(rustls_error))
}

/// rustls's buffered server connection over a session [`Transport`].
pub struct TlsTransport<'a, T> {
    inner: T,
    counters: &'a ShardCounters,
    /// --close-timeout: how long a failure's alert may take to write.
    patience: Duration,
    conn: Mutex<ServerConnection>,
    /// Held from taking records out of `conn` until they are written, so
    /// records leave in sequence-number order.
    writing: tokio::sync::Mutex<()>,
}

impl<'a, T: Transport> TlsTransport<'a, T> {
    /// Run the handshake over `inner` within the handshake deadline; None
    /// when it failed (counted, the alert sent).
    pub async fn accept(
        inner: T,
        setup: &TlsSetup,
        shard: &'a Shard,
    ) -> Option<TlsTransport<'a, T>> {
        let counters = shard.counters();
        let conn = ServerConnection::new(setup.config.clone()).expect("a config rustls built");
        let transport = TlsTransport {
            inner,
            counters,
            patience: shard.settings.close_timeout,
            conn: Mutex::new(conn),
            writing: tokio::sync::Mutex::new(()),
        };
        let deadline = Instant::now() + shard.settings.handshake_timeout;
        match transport
            .handshake(deadline, shard.settings.close_timeout)
            .await
        {
            Ok(()) => {
                count_completed(transport.conn.lock().unwrap().handshake_kind(), counters);
                Some(transport)
            }
            Err(stopped) => {
                count(stopped, counters);
                // A read cut by the deadline may still be pending.
                transport.inner.shutdown(Shutdown::Both);
                None
            }
        }
    }

    async fn handshake(&self, deadline: Instant, patience: Duration) -> Result<(), Stopped> {
        let mut first = true;
        loop {
            self.flush().await.map_err(|_| Stopped::Vanished)?;
            if !self.conn.lock().unwrap().is_handshaking() {
                return Ok(());
            }
            let (result, raw) = match timeout_at(deadline, self.inner.read(Vec::new())).await {
                Ok(read) => read,
                Err(_) => return Err(Stopped::Stalled),
            };
            if !matches!(result, Ok(n) if n > 0) {
                return Err(Stopped::Vanished);
            }
            if std::mem::take(&mut first) {
                let mut wire = Vec::new();
                if let Some(failure) = not_tls(&raw, &mut wire) {
                    let _ = tokio::time::timeout(patience, self.inner.write_all(wire.into())).await;
                    return Err(Stopped::Failed(failure));
                }
            }
            if let Err(failure) = self.take(&raw, None) {
                let _ = tokio::time::timeout(patience, self.flush()).await;
                return Err(Stopped::Failed(failure));
            }
        }
    }

    /// Hand received ciphertext to rustls, moving what it decrypts to
    /// `plain` as it goes (rustls holds only so much plaintext). During the
    /// handshake (`None`) the plaintext behind the client's Finished (the
    /// upgrade request) stays in rustls for the session's first read.
    fn take(&self, mut raw: &[u8], mut plain: Option<&mut Vec<u8>>) -> Result<(), Failure> {
        let mut conn = self.conn.lock().unwrap();
        while !raw.is_empty() {
            conn.read_tls(&mut raw).map_err(|_| Failure::BadRecord)?;
            conn.process_new_packets()
                .map_err(|error| Failure::of(&error))?;
            if let Some(plain) = plain.as_deref_mut() {
                let _ = read_plaintext(&mut conn, plain);
            }
        }
        Ok(())
    }

    /// Write every record rustls has for the peer.
    async fn flush(&self) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        let records = self.pending_records();
        match records.is_empty() {
            true => Ok(()),
            false => self.inner.write_all(records.into()).await,
        }
    }

    fn pending_records(&self) -> Vec<u8> {
        let mut conn = self.conn.lock().unwrap();
        let mut records = Vec::new();
        while conn.wants_write() {
            if conn.write_tls(&mut records).is_err() {
                break;
            }
        }
        records
    }
}

impl<T: Transport> TlsTransport<'_, T> {
    /// The alert rustls queued after a failure, bounded by --close-timeout.
    /// Written without the writer's lock: the session task may hold it in
    /// its select loop while this read is pending, and once rustls has
    /// failed it seals nothing more for the writer to interleave with.
    async fn send_alert(&self) {
        let records = self.pending_records();
        if !records.is_empty() {
            let _ = tokio::time::timeout(self.patience, self.inner.write_all(records.into())).await;
        }
    }
}

impl<T: Transport> Transport for TlsTransport<'_, T> {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let start = buf.len();
        loop {
            match read_plaintext(&mut self.conn.lock().unwrap(), &mut buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Ok(0) if buf.len() > start => return (Ok(buf.len() - start), buf),
                Ok(_) => return (Ok(buf.len() - start), buf),
                Err(error) => return (Err(error), buf),
            }
            if buf.len() > start {
                return (Ok(buf.len() - start), buf);
            }
            let (result, raw) = self.inner.read(Vec::new()).await;
            match result {
                Ok(0) => return (Ok(0), buf),
                Err(error) => return (Err(error), buf),
                Ok(_) => {}
            }
            if let Err(failure) = self.take(&raw, Some(&mut buf)) {
                count_tls_failure(self.counters, failure);
                self.send_alert().await;
                return (Err(io::Error::other(format!("{failure:?}"))), buf);
            }
            // A KeyUpdate's answer waits in rustls for the next write: the
            // session task writes from its select loop while this read is
            // pending, so a read that waited on the writer could deadlock it.
        }
    }

    async fn write_all(&self, bytes: Bytes) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        // rustls buffers only so much (64 KiB): seal and write in turns.
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let taken = self.conn.lock().unwrap().writer().write(rest)?;
            rest = &rest[taken..];
            self.inner.write_all(self.pending_records().into()).await?;
        }
        Ok(())
    }

    fn shutdown(&self, how: Shutdown) {
        if how != Shutdown::Read {
            self.conn.lock().unwrap().send_close_notify();
            // Written on a best-effort basis: the session's close path has
            // already flushed its last frame.
            let records = self.pending_records();
            if !records.is_empty() {
                let _ = futures_util::FutureExt::now_or_never(self.inner.write_all(records.into()));
            }
        }
        self.inner.shutdown(how)
    }
}

/// Decrypted bytes rustls holds, appended to `buf`: Ok(0) after the
/// peer's close_notify, WouldBlock when there are none yet.
fn read_plaintext(conn: &mut ServerConnection, buf: &mut Vec<u8>) -> io::Result<usize> {
    let start = buf.len();
    let mut total = 0;
    loop {
        buf.resize(start + total + 16 * 1024, 0);
        let result = conn.reader().read(&mut buf[start + total..]);
        let read = *result.as_ref().unwrap_or(&0);
        buf.truncate(start + total + read);
        total += read;
        match result {
            Ok(0) => return Ok(total),
            Ok(_) => {}
            Err(error) if total > 0 && error.kind() == io::ErrorKind::WouldBlock => {
                return Ok(total)
            }
            Err(error) => return Err(error),
        }
    }
}
