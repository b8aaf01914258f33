//! `--backend tokio` and `tokio-tpc`: the shard's runtime (one multi-thread
//! runtime for the server, or a current-thread runtime per shard), its
//! accept loop, and tokio's socket as a session [`Transport`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Runtime};

use super::accept::accept_loop;
use super::session;
use super::transport::{self, Transport};
use super::{claim_listener, serve_until_shutdown, ws, Flavor, Prepared, Shard};
use crate::protocol::Proto;
use crate::server::stats::bump;
use crate::server::{ShardSetup, ShardStart};

pub fn run(prepared: Prepared, start: ShardStart, setup: ShardSetup) -> io::Result<()> {
    let runtime = runtime(&prepared, &setup)?;
    let listener = claim_listener(start)?;
    let (stop, shard) = Shard::new(&prepared, &setup);
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        let accepting = tokio::spawn(accept(listener, shard.clone(), setup.conn_limit));
        serve_until_shutdown(&prepared, &shard, stop, accepting).await;
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
    // tungstenite (0.26, and 0.30, the newest) has no permessage-deflate:
    // with --deflate on (or --ws-stack fanout), fanout's own session serves
    // WebSocket here too.
    let tungstenite = shard.settings.proto == Proto::Ws && shard.settings.tungstenite;
    accept_loop(
        &shard,
        conn_limit,
        || async { listener.accept().await.map(|(stream, _)| stream) },
        |stream, live| {
            let shard = shard.clone();
            match tungstenite {
                true => tokio::spawn(ws::serve(stream, shard, live)),
                false => tokio::spawn(session::serve(TokioSocket(stream), shard, live)),
            };
        },
    )
    .await
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
            transport::room_to_read(&mut buf);
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
