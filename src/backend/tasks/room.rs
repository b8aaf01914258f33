//! The room of the task-per-connection backends: a registry of members, each
//! with its own unbounded queue (a tokio mpsc channel) and a byte count of
//! what is queued for it.
//!
//! Why per-member queues and not `tokio::sync::broadcast`, the channel
//! tokio's docs suggest for fan-out: the protocol bounds what a slow member
//! may hold in *bytes* (`--max-backlog`) and closes it with 1008 when it
//! passes that, while everyone else keeps receiving. A broadcast channel
//! bounds *messages* for the whole channel, and a receiver blocked writing
//! to its socket only learns it lagged when it next polls the channel. A
//! queue per member with a byte count is the other common pattern (chat
//! servers keep a map of member senders) and gives the limit exactly: the
//! publisher counts the bytes in, the member's task counts them out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use slab::Slab;
use tokio::sync::{mpsc, Notify};

use crate::server::stats::{bump, ShardCounters};

/// What a room carries: a frame (or message) and the bytes it counts for.
pub trait Payload: Clone + Send + 'static {
    /// The bytes it counts for in a member's backlog.
    fn backlog_bytes(&self) -> usize;
}

pub struct Room<T> {
    members: Mutex<Slab<Member<T>>>,
    max_backlog: usize,
}

struct Member<T> {
    queue: mpsc::UnboundedSender<T>,
    /// Bytes queued and not yet written, shared with the member's task.
    backlog: Arc<AtomicUsize>,
    /// Notified once, when the member passed the limit.
    kick: Arc<Notify>,
    kicked: bool,
}

/// A connection's place in the room; leaving is dropping it.
pub struct Membership<T: Payload> {
    room: Arc<Room<T>>,
    key: usize,
    inbox: mpsc::UnboundedReceiver<T>,
    backlog: Arc<AtomicUsize>,
    kick: Arc<Notify>,
}

impl<T: Payload> Room<T> {
    pub fn new(max_backlog: usize) -> Room<T> {
        Room {
            members: Mutex::new(Slab::new()),
            max_backlog,
        }
    }

    /// Join: from now on every published message is queued for this member.
    pub fn join(self: &Arc<Self>) -> Membership<T> {
        let (queue, inbox) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let kick = Arc::new(Notify::new());
        let key = self.members.lock().unwrap().insert(Member {
            queue,
            backlog: backlog.clone(),
            kick: kick.clone(),
            kicked: false,
        });
        Membership {
            room: self.clone(),
            key,
            inbox,
            backlog,
            kick,
        }
    }

    /// Queue `message` for every member, the sender included, in the order
    /// messages are published. A member whose backlog would pass the limit
    /// gets nothing more and is told to close (counted in `backlog_closes`).
    /// Returns how many members it was queued for.
    pub fn publish(&self, message: &T, counters: &ShardCounters) -> u64 {
        let len = message.backlog_bytes();
        let mut delivered = 0;
        let mut members = self.members.lock().unwrap();
        for (_, member) in members.iter_mut() {
            if member.kicked {
                continue;
            }
            let backlog = member.backlog.fetch_add(len, Ordering::AcqRel) + len;
            if backlog > self.max_backlog {
                member.kicked = true;
                member.kick.notify_one();
                bump(&counters.backlog_closes);
            } else if member.queue.send(message.clone()).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}

impl<T: Payload> Membership<T> {
    /// The next message for this member (waits; cancel-safe).
    pub async fn next(&mut self) -> Option<T> {
        self.inbox.recv().await
    }

    /// A message of `len` bytes taken with [`Membership::next`] has been written.
    pub fn written(&self, len: usize) {
        self.backlog.fetch_sub(len, Ordering::AcqRel);
    }

    /// Notified (once) when the member has passed the backlog limit.
    pub fn kick_signal(&self) -> Arc<Notify> {
        self.kick.clone()
    }
}

/// The next message for a member, or never for a connection that is not
/// one (for a `select!` branch).
pub async fn next_delivery<T: Payload>(member: Option<&mut Membership<T>>) -> Option<T> {
    match member {
        Some(member) => member.next().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the member was kicked, or never for a connection that is
/// not a member (for a `select!` branch).
pub async fn kicked(kick: Option<&Notify>) {
    match kick {
        Some(kick) => kick.notified().await,
        None => std::future::pending().await,
    }
}

impl<T: Payload> Drop for Membership<T> {
    fn drop(&mut self) {
        self.room.members.lock().unwrap().remove(self.key);
    }
}

impl Payload for bytes::Bytes {
    fn backlog_bytes(&self) -> usize {
        bytes::Bytes::len(self)
    }
}

impl Payload for tungstenite::Message {
    fn backlog_bytes(&self) -> usize {
        tungstenite::Message::len(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_member_past_the_limit_is_kicked_once_and_the_others_keep_receiving() {
        let counters = ShardCounters::default();
        let room = Arc::new(Room::<Bytes>::new(10));
        let mut slow = room.join();
        let mut fast = room.join();
        let message = Bytes::from_static(b"abcdef"); // 6 bytes
        assert_eq!(room.publish(&message, &counters), 2);
        let got = fast.next().await.unwrap();
        fast.written(got.len());
        // The slow member holds 6; 6 more would be 12 > 10.
        for _ in 0..2 {
            assert_eq!(room.publish(&message, &counters), 1, "only the fast one");
            let got = fast.next().await.unwrap();
            fast.written(got.len());
        }
        assert_eq!(counters.backlog_closes.load(Ordering::Relaxed), 1);
        slow.kick_signal().notified().await; // does not wait: the notice is stored
        assert_eq!(
            slow.next().await.unwrap(),
            message,
            "queued before the kick"
        );
        drop(slow);
        assert_eq!(room.members.lock().unwrap().len(), 1);
    }
}
