//! What the orchestrating thread and the client shards share: the phase
//! flags and per-shard progress counters (relaxed atomics, each shard writes
//! only its own; the progress display and the orchestrator only read).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Default, Debug)]
#[repr(align(64))]
pub struct Progress {
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    /// Connections open right now.
    pub alive: AtomicU64,
    pub delivered: AtomicU64,
    pub echoed: AtomicU64,
    pub churned: AtomicU64,
}

#[derive(Debug)]
pub struct Control {
    /// The ramp is over: start the scenario's work.
    pub work: AtomicBool,
    /// Stop everything, close all sockets, report.
    pub stop: AtomicBool,
    /// Broadcast: messages the publisher has sent so far.
    pub published: AtomicU64,
    /// Broadcast: the publisher has sent everything it will send.
    pub publisher_done: AtomicBool,
    pub shards: Vec<Progress>,
}

impl Control {
    pub fn new(shards: usize) -> Control {
        Control {
            work: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            published: AtomicU64::new(0),
            publisher_done: AtomicBool::new(false),
            shards: (0..shards).map(|_| Progress::default()).collect(),
        }
    }

    pub fn sum(&self, field: impl Fn(&Progress) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|p| field(p).load(Relaxed)).sum()
    }
}
