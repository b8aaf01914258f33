//! The live page's plumbing (issue 26, started): the measuring threads
//! hand JSON samples to a [`Live`] handle that never blocks them, and one
//! thread of its own serves them over HTTP on loopback as server-sent
//! events (`/events`, one JSON sample per event, the recent ones replayed
//! to a newcomer) beside the page (`/`, `page.html`, inside the binary).
//! `fanout load --ui` uses it; the bench and ceiling do not yet.
//!
//! Why a browser can never slow a measurement: `Live::publish` is a
//! `try_send` into a bounded channel (a full channel drops the sample and
//! counts it); only the page's thread touches sockets, all non-blocking;
//! a client that does not read has its bytes queued up to
//! [`MAX_QUEUED`] and is then dropped.

mod serve;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

/// Samples waiting for the page's thread; past it, new ones are dropped.
const CHANNEL: usize = 4096;
/// Bytes queued for one page client before it is dropped.
pub const MAX_QUEUED: usize = 1 << 20;
/// Samples a client connecting late is sent first.
const REPLAY: usize = 512;

/// What the page's thread has done, for tests and the final report.
#[derive(Default, Debug)]
pub struct UiCounters {
    pub published: AtomicU64,
    /// Samples dropped because the page's thread was behind.
    pub dropped_samples: AtomicU64,
    /// Event-stream clients dropped for not reading.
    pub dropped_clients: AtomicU64,
    pub clients: AtomicU64,
    /// Samples the page's thread has taken from the channel.
    pub taken: AtomicU64,
    /// Bytes queued for its event streams after its last pass (a gauge).
    pub queued_bytes: AtomicU64,
}

/// The measuring side's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Live {
    tx: SyncSender<String>,
    counters: Arc<UiCounters>,
}

impl Live {
    /// Hand one sample (a JSON value) to the page.
    pub fn publish(&self, sample: &impl serde::Serialize) {
        let Ok(json) = serde_json::to_string(sample) else {
            return;
        };
        match self.tx.try_send(json) {
            Ok(()) => self.counters.published.fetch_add(1, Relaxed),
            Err(TrySendError::Full(_)) => self.counters.dropped_samples.fetch_add(1, Relaxed),
            Err(TrySendError::Disconnected(_)) => 0,
        };
    }

    pub fn counters(&self) -> &UiCounters {
        &self.counters
    }

    /// Wait (at most `patience`) until every sample published so far has
    /// been written to every page client: before a command exits, so that
    /// an open page shows the end of the run.
    pub fn settle(&self, patience: std::time::Duration) {
        let until = std::time::Instant::now() + patience;
        while std::time::Instant::now() < until {
            let c = &self.counters;
            if c.taken.load(Relaxed) >= c.published.load(Relaxed)
                && c.queued_bytes.load(Relaxed) == 0
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Listen on `addr` and serve the page from a thread of its own, for as
/// long as the process lives. Returns the handle and the address bound.
pub fn start(addr: SocketAddr) -> std::io::Result<(Live, SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let (tx, rx) = sync_channel(CHANNEL);
    let counters = Arc::new(UiCounters::default());
    let page = serve::Page::new(listener, rx, counters.clone());
    std::thread::Builder::new()
        .name("ui".into())
        .spawn(move || page.run())?;
    Ok((Live { tx, counters }, bound))
}
