//! The live page's plumbing: the measuring threads hand JSON events to a
//! [`Live`] handle that never blocks them, and one thread of its own
//! serves them over HTTP on loopback as server-sent events (`/events`,
//! one JSON object per event) beside the page (`/`, `page.html`, inside
//! the binary). `fanout load`, `fanout bench` and `fanout ceiling` take
//! `--ui ADDR`; what the events say is [`feed`] (docs/live-page.md).
//!
//! Why a browser can never slow a measurement: `Live::publish` is a
//! `try_send` into a bounded channel (a full channel drops the sample and
//! counts it); only the page's thread touches sockets, all non-blocking;
//! a client that does not read has its bytes queued up to
//! [`MAX_QUEUED`] and is then dropped.

pub mod feed;
mod serve;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

/// Samples waiting for the page's thread; past it, new ones are dropped.
const CHANNEL: usize = 4096;
/// Bytes queued for one page client before it is dropped.
pub const MAX_QUEUED: usize = 1 << 20;
/// Frequent samples (`kind` `load` or `server`) a client connecting late
/// is sent first, the newest; with every other event (the plan, phases,
/// results) up to [`REPLAY_EVENTS`], so a page opened late still shows
/// the run so far.
const REPLAY: usize = 512;
const REPLAY_EVENTS: usize = 4096;

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

/// One event on its way to the page's thread.
pub struct Event {
    json: String,
    /// A frequent sample, of which only the newest are replayed.
    frequent: bool,
}

/// The measuring side's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Live {
    tx: SyncSender<Event>,
    counters: Arc<UiCounters>,
    /// When the page started: every event's `at`, in seconds.
    epoch: std::time::Instant,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Live {
    /// Hand one event (a JSON object) to the page, with `at`, the seconds
    /// since the page started, added.
    pub fn publish(&self, event: &impl serde::Serialize) {
        let Ok(mut value) = serde_json::to_value(event) else {
            return;
        };
        let mut frequent = false;
        if let Some(object) = value.as_object_mut() {
            let at = (self.epoch.elapsed().as_secs_f64() * 1e3).round() / 1e3;
            object.insert("at".into(), at.into());
            frequent = matches!(
                object.get("kind").and_then(|k| k.as_str()),
                Some("load" | "server")
            );
        }
        let json = value.to_string();
        match self.tx.try_send(Event { json, frequent }) {
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
        .spawn(move || {
            crate::allocator::disable_this_threads_cache();
            page.run()
        })?;
    let epoch = std::time::Instant::now();
    Ok((
        Live {
            tx,
            counters,
            epoch,
        },
        bound,
    ))
}

/// `--ui` and `--ui-linger`, the same on every command that has a page.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct UiArgs {
    /// Serve a live page of the run at http://ADDR/ (e.g. 127.0.0.1:8080;
    /// port 0 picks one, printed at start as `ui http://…/`): charts that
    /// move as the run does, then the final result. Its events are
    /// server-sent at /events, one JSON object each, for scripts too
    /// (docs/live-page.md). A slow or absent browser never slows the run.
    /// Loopback is meant: another address is served with a warning.
    #[arg(long, value_name = "ADDR")]
    pub ui: Option<SocketAddr>,

    /// How long the page stays up after the run, showing its final state,
    /// before fanout exits (Ctrl-C ends it sooner).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::units::parse_duration)]
    pub ui_linger: std::time::Duration,
}

impl UiArgs {
    /// Start the page if asked, saying its address on stderr and warning
    /// when it is not on loopback.
    pub fn open(&self, command: &str) -> anyhow::Result<Option<Live>> {
        let Some(addr) = self.ui else {
            return Ok(None);
        };
        if !addr.ip().is_loopback() {
            eprintln!("fanout {command}: warning: the live page is served on {addr}, not loopback: whoever reaches it sees the run");
        }
        let (live, bound) = start(addr)
            .map_err(|e| crate::usage::UsageError(format!("--ui {addr}: cannot listen: {e}")))?;
        eprintln!("ui http://{bound}/");
        Ok(Some(live))
    }

    /// The run is over: send the page what it printed last (`text` of
    /// its result) or its error as the final event, then keep the page up
    /// for --ui-linger. Nothing without a page.
    pub fn finish<T>(
        &self,
        live: Option<&Live>,
        outcome: &anyhow::Result<T>,
        text: impl Fn(&T) -> String,
        command: &str,
    ) {
        let Some(live) = live else {
            return;
        };
        let text = match outcome {
            Ok(value) => text(value),
            Err(error) => format!("fanout {command}: {error:#}"),
        };
        live.publish(&feed::done(&text));
        live.settle(std::time::Duration::from_secs(2));
        let c = live.counters();
        eprintln!(
            "fanout {command}: live page: {} events published, {} dropped because the page's thread was behind; {} event-stream clients, {} dropped for not reading",
            c.published.load(Relaxed),
            c.dropped_samples.load(Relaxed),
            c.clients.load(Relaxed),
            c.dropped_clients.load(Relaxed)
        );
        if self.ui_linger.is_zero() {
            return;
        }
        eprintln!(
            "fanout {command}: the live page shows the final result for {:.0} s more (--ui-linger); Ctrl-C ends it sooner",
            self.ui_linger.as_secs_f64()
        );
        std::thread::sleep(self.ui_linger);
    }
}
