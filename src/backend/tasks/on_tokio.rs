//! `--backend tokio` and `tokio-tpc`: the shard's runtime (one multi-thread
//! runtime for the server, or a current-thread runtime per shard), its
//! accept loop, and tokio's socket as a session [`Transport`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::watch;

use super::accept::accept_loop;
use super::session::{self, Transport, READ_CHUNK};
use super::{claim_listener, housekeeping, ws, Flavor, Prepared, Shard};
use crate::protocol::Proto;
use crate::server::stats::bump;
use crate::server::{ShardSetup, ShardStart};

/// How long the shard waits at shutdown for its connections to say goodbye.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(1);

pub fn run(prepared: Prepared, start: ShardStart, setup: ShardSetup) -> io::Result<()> {
    let runtime = runtime(&prepared, &setup)?;
    let listener = claim_listener(start)?;
    let (stop, shutdown) = watch::channel(false);
    let shard = Arc::new(Shard {
        id: setup.id,
        settings: setup.settings.clone(),
        hub: setup.hub.clone(),
        rooms: prepared.rooms.clone(),
        shutdown,
    });
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        let accepting = tokio::spawn(accept(listener, shard.clone(), setup.conn_limit));
        housekeeping(&prepared.signal, &setup.hub, setup.id).await;
        accepting.abort();
        let _ = stop.send(true);
        wait_for_connections_to_end(&shard).await;
        io::Result::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// The runtime a competent user builds: tokio's defaults, one worker per
/// core for the multi-thread flavor. Its wake-ups are the `wakeups` counter.
fn runtime(prepared: &Prepared, setup: &ShardSetup) -> io::Result<Runtime> {
    let mut builder = match prepared.flavor {
        Flavor::Tokio => {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(prepared.workers);
            builder
        }
        _ => Builder::new_current_thread(),
    };
    let (hub, id) = (setup.hub.clone(), setup.id);
    builder
        .enable_all()
        .thread_name(format!("shard-{id}-tokio"))
        .on_thread_unpark(move || bump(&hub.counters(id).wakeups))
        .build()
}

async fn accept(listener: TcpListener, shard: Arc<Shard>, conn_limit: usize) {
    let proto = shard.settings.proto;
    accept_loop(
        &shard,
        conn_limit,
        || async { listener.accept().await.map(|(stream, _)| stream) },
        |stream, live| {
            let shard = shard.clone();
            match proto {
                Proto::Ws => tokio::spawn(ws::serve(stream, shard, live)),
                Proto::Tcp => tokio::spawn(session::serve(TokioSocket(stream), shard, live)),
            };
        },
    )
    .await
}

/// After the goodbye: wait (bounded) until this shard's connections are closed.
pub async fn wait_for_connections_to_end(shard: &Shard) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_PATIENCE;
    let counters = shard.counters();
    while tokio::time::Instant::now() < deadline {
        let accepted = counters.accepted.load(std::sync::atomic::Ordering::Relaxed);
        let closed = counters.closed.load(std::sync::atomic::Ordering::Relaxed);
        if closed >= accepted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// tokio's socket for the session task: readiness, then a non-blocking read
/// into the buffer's spare room (allocated only once bytes are there).
struct TokioSocket(TcpStream);

impl Transport for TokioSocket {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            if let Err(error) = self.0.readable().await {
                return (Err(error), buf);
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            match self.0.try_read_buf(&mut buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return (result, buf),
            }
        }
    }

    async fn write_all(&self, bytes: Bytes) -> io::Result<()> {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            self.0.writable().await?;
            match self.0.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn shutdown(&self, how: std::net::Shutdown) {
        let _ = socket2::SockRef::from(&self.0).shutdown(how);
    }
}
