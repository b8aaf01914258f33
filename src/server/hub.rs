//! Where shards meet: the room's cross-shard mailboxes, the member counts and
//! the shutdown flag. A frame published on one shard is encoded once and its
//! `Bytes` handle is passed to every other shard that has members; each shard
//! then writes it to its own members.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::stats::ShardCounters;

/// Wakes one shard's event loop from another thread.
pub trait Wake: Send + Sync {
    fn wake(&self) -> std::io::Result<()>;
}

/// One shard's side of the hub.
pub struct Mailbox {
    inbox: Mutex<Vec<Bytes>>,
    waker: Box<dyn Wake>,
    members: AtomicUsize,
    /// The last cache-flush request this shard has carried out.
    flushed: AtomicU64,
    pub counters: ShardCounters,
}

pub struct Hub {
    mailboxes: Vec<Mailbox>,
    shutdown: AtomicBool,
    /// Cache-flush requests so far (see [`Hub::flush_allocator_caches`]).
    flush_requests: AtomicU64,
}

impl Hub {
    pub fn new(wakers: Vec<Box<dyn Wake>>) -> Hub {
        let mailboxes = wakers
            .into_iter()
            .map(|waker| Mailbox {
                inbox: Mutex::new(Vec::new()),
                waker,
                members: AtomicUsize::new(0),
                flushed: AtomicU64::new(0),
                counters: ShardCounters::default(),
            })
            .collect();
        Hub {
            mailboxes,
            shutdown: AtomicBool::new(false),
            flush_requests: AtomicU64::new(0),
        }
    }

    /// Make every shard flush its thread's allocator cache, and wait (up to
    /// `patience`) until all have. jemalloc counts objects parked in thread
    /// caches as allocated; flushing first makes the allocated-bytes figure
    /// mean what it says. Returns whether every shard answered.
    pub fn flush_allocator_caches(&self, patience: Duration) -> bool {
        let request = self.flush_requests.fetch_add(1, Ordering::AcqRel) + 1;
        for mailbox in &self.mailboxes {
            let _ = mailbox.waker.wake();
        }
        flush_this_threads_allocator_cache();
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let done = self
                .mailboxes
                .iter()
                .all(|m| m.flushed.load(Ordering::Acquire) >= request);
            if done {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Called by shard `shard` every turn: carry out a pending flush request.
    pub fn serve_flush_request(&self, shard: usize) {
        let request = self.flush_requests.load(Ordering::Acquire);
        let mailbox = &self.mailboxes[shard];
        if mailbox.flushed.load(Ordering::Relaxed) < request {
            flush_this_threads_allocator_cache();
            mailbox.flushed.store(request, Ordering::Release);
        }
    }

    pub fn counters(&self, shard: usize) -> &ShardCounters {
        &self.mailboxes[shard].counters
    }

    pub fn all_counters(&self) -> impl Iterator<Item = &ShardCounters> {
        self.mailboxes.iter().map(|mailbox| &mailbox.counters)
    }

    /// Hand `frames` to every other shard that has room members. A shard is
    /// woken only when its inbox goes from empty to not empty: a non-empty
    /// inbox already has a wake-up on its way.
    pub fn publish(&self, from: usize, frames: &[Bytes]) {
        for (shard, mailbox) in self.mailboxes.iter().enumerate() {
            if shard == from || mailbox.members.load(Ordering::Acquire) == 0 {
                continue;
            }
            let was_empty = {
                let mut inbox = mailbox.inbox.lock().unwrap();
                let was_empty = inbox.is_empty();
                inbox.extend(frames.iter().cloned());
                was_empty
            };
            if was_empty {
                // A failed wake leaves the frames queued for the next turn.
                let _ = mailbox.waker.wake();
            }
        }
    }

    /// Move everything waiting for `shard` into `frames` (which is emptied first).
    pub fn take_inbox(&self, shard: usize, frames: &mut Vec<Bytes>) {
        frames.clear();
        std::mem::swap(&mut *self.mailboxes[shard].inbox.lock().unwrap(), frames);
    }

    pub fn join_room(&self, shard: usize) {
        self.mailboxes[shard]
            .members
            .fetch_add(1, Ordering::Release);
    }

    pub fn leave_room(&self, shard: usize) {
        self.mailboxes[shard]
            .members
            .fetch_sub(1, Ordering::Release);
    }

    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        for mailbox in &self.mailboxes {
            let _ = mailbox.waker.wake();
        }
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

/// Return the calling thread's cached objects to jemalloc's arenas (turning
/// its thread cache off flushes it; it is turned straight back on).
fn flush_this_threads_allocator_cache() {
    let name = b"thread.tcache.enabled\0";
    // SAFETY: `thread.tcache.enabled` is a bool mallctl, written with a bool.
    unsafe {
        let _ = tikv_jemalloc_ctl::raw::write(name, false);
        let _ = tikv_jemalloc_ctl::raw::write(name, true);
    }
}
