//! What the orchestrating thread and the client shards share: the phase
//! flags and per-shard progress counters (relaxed atomics, each shard writes
//! only its own; the progress display and the orchestrator only read).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

#[derive(Default, Debug)]
#[repr(align(64))]
pub struct Progress {
    /// Connection attempts started.
    pub started: AtomicU64,
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    /// Connections open right now.
    pub alive: AtomicU64,
    pub delivered: AtomicU64,
    /// Broadcast: the newest published count every open member of this
    /// shard has reached (received, or skipped past as missing).
    pub caught_up: AtomicU64,
    pub echoed: AtomicU64,
    pub churned: AtomicU64,
    /// Burst: attempts that opened or failed.
    pub burst_settled: AtomicU64,
}

#[derive(Debug)]
pub struct Control {
    /// The ramp stops at half of each shard's connections until cleared
    /// (`fanout bench` samples memory there).
    pub hold_at_half: AtomicBool,
    /// `--until-failure`: the first failed attempt sets `stop_opening`.
    pub until_failure: AtomicBool,
    /// Start no more connection attempts.
    pub stop_opening: AtomicBool,
    /// The ramp is over: start the scenario's work.
    pub work: AtomicBool,
    /// Stop everything, close all sockets, report.
    pub stop: AtomicBool,
    /// Broadcast: messages the publisher has sent so far.
    pub published: AtomicU64,
    /// Broadcast: how many messages the publisher may have sent by now
    /// (raised by the orchestrator as each broadcast completes).
    pub release: AtomicU64,
    /// Broadcast: when the first message was published (ns; 0 before).
    pub first_publish_ns: AtomicU64,
    /// Broadcast: the publisher has sent everything it will send.
    pub publisher_done: AtomicBool,
    /// Shards that have started the work (and counted their members): the
    /// first message waits for all of them, so that a member the server
    /// closes after it is always counted, as a member and as closed.
    pub working_shards: AtomicUsize,
    /// Storm: when the first connection was lost (ns; 0 before), and how
    /// many shards have started the storm (reset theirs, if the client does).
    pub storm_began_ns: AtomicU64,
    pub storm_shards: AtomicU64,
    /// Allocator cache flushes before the client's memory is read.
    pub cache_flush: crate::allocator::CacheFlush,
    pub shards: Vec<Progress>,
}

impl Control {
    pub fn new(shards: usize) -> Control {
        Control {
            hold_at_half: AtomicBool::new(false),
            until_failure: AtomicBool::new(false),
            stop_opening: AtomicBool::new(false),
            work: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            published: AtomicU64::new(0),
            release: AtomicU64::new(0),
            first_publish_ns: AtomicU64::new(0),
            publisher_done: AtomicBool::new(false),
            working_shards: AtomicUsize::new(0),
            storm_began_ns: AtomicU64::new(0),
            storm_shards: AtomicU64::new(0),
            cache_flush: crate::allocator::CacheFlush::new(shards),
            shards: (0..shards).map(|_| Progress::default()).collect(),
        }
    }

    pub fn sum(&self, field: impl Fn(&Progress) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|p| field(p).load(Relaxed)).sum()
    }

    /// Has every shard's every open member reached `published` messages?
    pub fn all_caught_up(&self, published: u64) -> bool {
        self.shards
            .iter()
            .all(|p| p.caught_up.load(Relaxed) >= published)
    }
}
