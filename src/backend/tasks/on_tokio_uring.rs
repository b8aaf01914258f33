//! `--backend tokio-uring`: a tokio-uring runtime per shard (thread per
//! core), its accept loop, and tokio-uring's owned-buffer socket as a
//! session [`Transport`]. Every read owns its buffer until it completes, so
//! an idle connection keeps a 4 KiB buffer pinned in its pending read; that
//! is the price of this API without provided-buffer rings.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

use super::accept::accept_loop;
use super::session;
use super::transport::{self, Transport};
use super::{claim_listener, serve_until_shutdown, Prepared, Shard};
use crate::server::hub::Hub;
use crate::server::stats::bump;
use crate::server::{ShardSetup, ShardStart};

pub fn run(prepared: Prepared, start: ShardStart, setup: ShardSetup) -> io::Result<()> {
    let runtime = tokio_uring::Runtime::new(&tokio_uring::builder())?;
    let listener = claim_listener(start)?;
    let (stop, shard) = Shard::new(&prepared, &setup);
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener);
        let accepting = tokio_uring::spawn(counted(
            &shard,
            accept(listener, shard.clone(), setup.conn_limit),
        ));
        serve_until_shutdown(&prepared, &shard, stop, accepting).await;
    });
    Ok(())
}

async fn accept(listener: TcpListener, shard: Arc<Shard>, conn_limit: usize) {
    accept_loop(
        &shard,
        conn_limit,
        || async { listener.accept().await.map(|(stream, _)| stream) },
        |stream, live| {
            let task = session::serve(UringSocket(stream), shard.clone(), live);
            tokio_uring::spawn(counted(&shard, task));
        },
    )
    .await
}

/// tokio-uring's runtime has no unpark hook, so its `wakeups` counter is
/// the polls of its tasks (a spinning task shows there just the same).
fn counted<F: Future>(shard: &Shard, task: F) -> Counted<F> {
    Counted {
        task: Box::pin(task),
        hub: shard.hub.clone(),
        shard: shard.id,
    }
}

struct Counted<F> {
    task: Pin<Box<F>>,
    hub: Arc<Hub>,
    shard: usize,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        bump(&self.hub.counters(self.shard).wakeups);
        self.task.as_mut().poll(cx)
    }
}

struct UringSocket(TcpStream);

impl Transport for UringSocket {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        transport::room_to_read(&mut buf);
        // A read fills a buffer from its start: read into the spare room.
        let len = buf.len();
        let (result, spare) = self.0.read(buf.slice(len..)).await;
        (result, spare.into_inner())
    }

    async fn write_all(&self, bytes: Bytes) -> io::Result<()> {
        self.0.write_all(bytes).await.0
    }

    fn shutdown(&self, how: std::net::Shutdown) {
        let _ = self.0.shutdown(how);
    }
}
