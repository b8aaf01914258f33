//! Accepting for the task backends, whatever the runtime: a task per
//! connection, the shard's connection limit as a semaphore, and on a full fd
//! table (EMFILE, ENFILE) a pause and a retry instead of a spinning loop —
//! what hyper and axum do, with the hand-rolled backends' retry interval.

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Shard;
use crate::server::core::ACCEPT_RETRY;
use crate::server::hub::Hub;
use crate::server::stats::bump;

/// Accept until the task is dropped: `accept` takes the next connection,
/// `spawn` starts its task with the permit it holds until it ends.
pub async fn accept_loop<S, A, F>(
    shard: &Shard,
    conn_limit: usize,
    mut accept: impl FnMut() -> A,
    mut spawn: F,
) where
    A: Future<Output = io::Result<S>>,
    F: FnMut(S, Live),
{
    let counters = shard.counters();
    let limit = Arc::new(Semaphore::new(conn_limit.min(Semaphore::MAX_PERMITS)));
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                bump(&counters.accept_pauses_full);
                limit.clone().acquire_owned().await.expect("never closed")
            }
        };
        match accept().await {
            Ok(stream) => {
                bump(&counters.accepted);
                spawn(
                    stream,
                    Live {
                        hub: shard.hub.clone(),
                        shard: shard.id,
                        admitted: false,
                        open: false,
                        _permit: permit,
                    },
                );
            }
            Err(error) if is_fd_limit(&error) => {
                bump(&counters.accept_pauses_fd_limit);
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
            // The peer gave up before we accepted (ECONNABORTED) and the like.
            Err(_) => {}
        }
    }
}

fn is_fd_limit(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Held by a connection's task for its life: counts the connection closed
/// when dropped (also when the runtime drops the task at shutdown) and
/// gives its places back to the shard's limit and the admitted count.
pub struct Live {
    hub: Arc<Hub>,
    shard: usize,
    /// It holds a place in the server's admitted count (`Shard::admit`).
    pub admitted: bool,
    /// Upgraded and not yet settled: if the drain is on when this is
    /// dropped (the runtime went away with it), it was cut.
    pub open: bool,
    _permit: OwnedSemaphorePermit,
}

impl Live {
    /// The drain told this connection to go (1001; TCP: our FIN) and it
    /// closed `cleanly` or not in time: count it and settle it.
    pub fn told_to_go(&mut self, cleanly: bool) {
        let counters = self.hub.counters(self.shard);
        bump(match cleanly {
            true => &counters.drain_clean,
            false => &counters.drain_cut,
        });
        self.open = false;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let counters = self.hub.counters(self.shard);
        if self.open && self.hub.leaving() {
            bump(&counters.drain_cut);
        }
        bump(&counters.closed);
        if self.admitted {
            self.hub.admitted.leave();
        }
    }
}
