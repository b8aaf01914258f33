//! Where shards meet: the room's cross-shard mailboxes, the member counts and
//! the shutdown flag. A frame published on one shard is encoded once and its
//! `Bytes` handle is passed to every other shard that has members; each shard
//! then writes it to its own members.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

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
    pub counters: ShardCounters,
}

pub struct Hub {
    mailboxes: Vec<Mailbox>,
    shutdown: AtomicBool,
}

impl Hub {
    pub fn new(wakers: Vec<Box<dyn Wake>>) -> Hub {
        let mailboxes = wakers
            .into_iter()
            .map(|waker| Mailbox {
                inbox: Mutex::new(Vec::new()),
                waker,
                members: AtomicUsize::new(0),
                counters: ShardCounters::default(),
            })
            .collect();
        Hub {
            mailboxes,
            shutdown: AtomicBool::new(false),
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
