//! Where shards meet: the room's cross-shard mailboxes, the member counts and
//! the shutdown flag. A frame published on one shard is encoded once and its
//! `Bytes` handle is passed to every other shard that has members; each shard
//! then writes it to its own members.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::histogram::ShardHistograms;
use super::stats::{ShardCounters, Snapshot};
use crate::allocator::CacheFlush;
use crate::tls::kernel::KernelTls;

/// Where room frames go to other instances of this server (the Redis
/// backplane implements it; the hub names no transport). Frames from the
/// other instances come back through [`Hub::deliver_from_elsewhere`].
pub trait OtherInstances: Send + Sync {
    /// A frame published on this instance: to the others. Never waits.
    fn publish(&self, frame: &Bytes);
}

/// Wakes one shard's event loop from another thread.
pub trait Wake: Send + Sync {
    fn wake(&self) -> std::io::Result<()>;
}

/// One shard's side of the hub.
pub struct Mailbox {
    inbox: Mutex<Inbox>,
    waker: Box<dyn Wake>,
    members: AtomicUsize,
    pub counters: ShardCounters,
    pub histograms: ShardHistograms,
}

/// Frames other shards sent one shard, and when the oldest of them was
/// handed to the room (where a broadcast's duration starts).
#[derive(Default)]
struct Inbox {
    frames: Vec<Bytes>,
    since: Option<Instant>,
}

/// The server's stages, in order (see [`Hub::request_drain`]).
const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPING: u8 = 2;

pub struct Hub {
    mailboxes: Vec<Mailbox>,
    /// Connections admitted across shards, against --max-conns.
    pub admitted: super::admission::Admitted,
    /// Running, draining (the first SIGINT/SIGTERM) or stopping.
    stage: AtomicU8,
    /// When the drain began, the same instant for every shard.
    drain_began: OnceLock<Instant>,
    /// Allocator cache flushes, one participant a shard (see
    /// [`Hub::flush_allocator_caches`]).
    cache_flush: CacheFlush,
    /// Where room frames go to other instances (`--backplane`), if anywhere.
    others: OnceLock<Arc<dyn OtherInstances>>,
    /// Where frames from other instances go, if not to the shards' inboxes.
    elsewhere: OnceLock<Box<dyn Fn(Bytes) + Send + Sync>>,
    /// With TLS: what the kernel said when asked for kernel TLS.
    tls_kernel: OnceLock<KernelTls>,
}

impl Hub {
    pub fn new(wakers: Vec<Box<dyn Wake>>) -> Hub {
        let shards = wakers.len();
        let mailboxes = wakers
            .into_iter()
            .map(|waker| Mailbox {
                inbox: Mutex::new(Inbox::default()),
                waker,
                members: AtomicUsize::new(0),
                counters: ShardCounters::default(),
                histograms: ShardHistograms::default(),
            })
            .collect();
        Hub {
            mailboxes,
            admitted: Default::default(),
            stage: AtomicU8::new(RUNNING),
            drain_began: OnceLock::new(),
            cache_flush: CacheFlush::new(shards),
            others: OnceLock::new(),
            elsewhere: OnceLock::new(),
            tls_kernel: OnceLock::new(),
        }
    }

    /// Record what the kernel said about kernel TLS, for the stats.
    pub fn set_tls_kernel(&self, kernel: KernelTls) {
        let _ = self.tls_kernel.set(kernel);
    }

    /// The counters of every shard, the process's memory and the TLS path,
    /// as the `stats` line and the metrics report them.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::take(self.all_counters());
        snapshot.tls_kernel = self.tls_kernel.get().copied();
        snapshot
    }

    /// Make every shard flush its thread's allocator cache, and wait (up to
    /// `patience`) until all have. jemalloc counts objects parked in thread
    /// caches as allocated; flushing first makes the allocated-bytes figure
    /// mean what it says. Returns whether every shard answered.
    pub fn flush_allocator_caches(&self, patience: Duration) -> bool {
        self.cache_flush.flush_all(patience, || {
            for mailbox in &self.mailboxes {
                let _ = mailbox.waker.wake();
            }
        })
    }

    /// Called by shard `shard` every turn: carry out a pending flush request.
    pub fn serve_flush_request(&self, shard: usize) {
        self.cache_flush.serve(shard);
    }

    pub fn shards(&self) -> usize {
        self.mailboxes.len()
    }

    pub fn counters(&self, shard: usize) -> &ShardCounters {
        &self.mailboxes[shard].counters
    }

    pub fn all_counters(&self) -> impl Iterator<Item = &ShardCounters> {
        self.mailboxes.iter().map(|mailbox| &mailbox.counters)
    }

    pub fn histograms(&self, shard: usize) -> &ShardHistograms {
        &self.mailboxes[shard].histograms
    }

    pub fn all_histograms(&self) -> impl Iterator<Item = &ShardHistograms> {
        self.mailboxes.iter().map(|mailbox| &mailbox.histograms)
    }

    /// From now on, room frames published here also go to `others`.
    pub fn attach_other_instances(&self, others: Arc<dyn OtherInstances>) {
        let _ = self.others.set(others);
    }

    pub fn other_instances(&self) -> Option<&dyn OtherInstances> {
        self.others.get().map(|others| &**others)
    }

    /// Where frames from other instances go when the shards have no
    /// inboxes (the task backends' rooms); set once.
    pub fn route_from_elsewhere(&self, sink: Box<dyn Fn(Bytes) + Send + Sync>) {
        let _ = self.elsewhere.set(sink);
    }

    /// Hand `frames` to every other shard that has room members, and to the
    /// other instances. A shard is woken only when its inbox goes from empty to
    /// not empty: a non-empty inbox already has a wake-up on its way.
    fn publish(&self, from: usize, frames: &[Bytes], at: Instant) {
        if let Some(others) = self.others.get() {
            frames.iter().for_each(|frame| others.publish(frame));
        }
        self.hand_to_shards(Some(from), frames, at);
    }

    /// A frame another instance published: to every shard with members
    /// here, never back to the other instances.
    pub fn deliver_from_elsewhere(&self, frame: Bytes) {
        match self.elsewhere.get() {
            Some(sink) => sink(frame),
            None => self.hand_to_shards(None, std::slice::from_ref(&frame), Instant::now()),
        }
    }

    fn hand_to_shards(&self, from: Option<usize>, frames: &[Bytes], at: Instant) {
        for (shard, mailbox) in self.mailboxes.iter().enumerate() {
            if Some(shard) == from || mailbox.members.load(Ordering::Acquire) == 0 {
                continue;
            }
            let was_empty = {
                let mut inbox = mailbox.inbox.lock().unwrap();
                let was_empty = inbox.frames.is_empty();
                inbox.frames.extend(frames.iter().cloned());
                inbox.since.get_or_insert(at);
                was_empty
            };
            if was_empty {
                // A failed wake leaves the frames queued for the next turn.
                let _ = mailbox.waker.wake();
            }
        }
    }

    /// One turn's room hand-off for `shard`: give the frames its members
    /// published (`published`, emptied) to the other shards, and collect in
    /// `frames` (emptied first) everything this shard must write to its own
    /// members: what other shards sent, then its own. Returns when the
    /// oldest of `frames` was handed to the room (None: no frames).
    pub fn exchange(
        &self,
        shard: usize,
        published: &mut Vec<Bytes>,
        frames: &mut Vec<Bytes>,
    ) -> Option<Instant> {
        let mut since = None;
        if !published.is_empty() {
            let now = Instant::now();
            self.publish(shard, published, now);
            since = Some(now);
        }
        let theirs = self.take_inbox(shard, frames);
        frames.append(published);
        theirs.or(since)
    }

    /// Move everything waiting for `shard` into `frames` (which is emptied
    /// first); when the oldest of it was handed to the room.
    fn take_inbox(&self, shard: usize, frames: &mut Vec<Bytes>) -> Option<Instant> {
        frames.clear();
        let mut inbox = self.mailboxes[shard].inbox.lock().unwrap();
        std::mem::swap(&mut inbox.frames, frames);
        inbox.since.take()
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

    /// The first SIGINT or SIGTERM: stop accepting and tell every client
    /// to go, spread over `--drain-time` (see `core::drain`). A later stage
    /// is never undone.
    pub fn request_drain(&self) {
        self.drain_began.get_or_init(Instant::now);
        self.advance_to(DRAINING);
    }

    /// Stop now: a second signal, or the end of the process.
    pub fn request_shutdown(&self) {
        self.advance_to(STOPPING);
    }

    fn advance_to(&self, stage: u8) {
        self.stage.fetch_max(stage, Ordering::AcqRel);
        for mailbox in &self.mailboxes {
            let _ = mailbox.waker.wake();
        }
    }

    /// When the drain began, if it has.
    pub fn drain_began(&self) -> Option<Instant> {
        (self.stage.load(Ordering::Acquire) >= DRAINING)
            .then(|| self.drain_began.get().copied())
            .flatten()
    }

    /// Whether shards must stop now, whatever is still open.
    pub fn shutting_down(&self) -> bool {
        self.stage.load(Ordering::Acquire) >= STOPPING
    }

    /// Draining or stopping: no new work.
    pub fn leaving(&self) -> bool {
        self.stage.load(Ordering::Acquire) >= DRAINING
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>);

    impl Wake for Counted {
        fn wake(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn a_published_frame_reaches_its_own_shard_and_every_shard_with_members_once() {
        let wakes: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
        let hub = Hub::new(
            wakes
                .iter()
                .map(|w| Box::new(Counted(w.clone())) as Box<dyn Wake>)
                .collect(),
        );
        hub.join_room(1); // shard 2 has no members
        let (mut published, mut frames) = (vec![Bytes::from_static(b"a")], Vec::new());
        hub.exchange(0, &mut published, &mut frames);
        assert!(published.is_empty());
        assert_eq!(
            frames,
            vec![Bytes::from_static(b"a")],
            "our own members get it"
        );
        let mut published = vec![Bytes::from_static(b"b")];
        hub.exchange(0, &mut published, &mut frames);
        // Shard 1 was woken once (its inbox was empty only the first time)
        // and gets both, in order, before its own.
        let mut own = vec![Bytes::from_static(b"c")];
        let mut frames = Vec::new();
        hub.exchange(1, &mut own, &mut frames);
        assert_eq!(
            frames,
            [&b"a"[..], b"b", b"c"].map(Bytes::from_static).to_vec()
        );
        assert_eq!(wakes[1].load(Ordering::Relaxed), 1);
        assert_eq!(wakes[2].load(Ordering::Relaxed), 0);
        // Shard 2 has no members: nothing was handed to it.
        let mut none = Vec::new();
        hub.exchange(2, &mut Vec::new(), &mut none);
        assert!(none.is_empty());
    }
}
