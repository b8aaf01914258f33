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
//! publisher counts the bytes in, the member's task counts them out. The
//! same counts give the room's total for --max-backlog-total.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use slab::Slab;
use tokio::sync::{mpsc, Notify};

use crate::protocol::close_code;
use crate::protocol::frame::{self, OpCode, Role};
use crate::server::hub::Hub;
use crate::server::overload;
use crate::server::stats::bump;

/// What a room carries: a frame (or message) and the bytes it counts for.
pub trait Payload: Clone + Send + 'static {
    /// The bytes it counts for in a member's backlog.
    fn backlog_bytes(&self) -> usize;
    /// The frame a member gets, as the backplane carries it.
    fn to_frame(&self) -> Bytes;
    /// A frame from the backplane as this room's payload (None: not a
    /// data frame).
    fn from_frame(frame: &Bytes) -> Option<Self>;
}

pub struct Room<T> {
    members: Mutex<Slab<Member<T>>>,
    max_backlog: usize,
    /// --max-backlog-total: the whole room's budget.
    max_backlog_total: Option<usize>,
}

struct Member<T> {
    queue: mpsc::UnboundedSender<T>,
    /// Bytes queued and not yet written, shared with the member's task.
    backlog: Arc<AtomicUsize>,
    /// Set once, when the member must close.
    kick: Arc<Kick>,
    kicked: bool,
    /// The shard whose `room_backlog_bytes` it counts in.
    shard: usize,
}

/// Tells a member's task to close, and with which code (1008: past
/// --max-backlog; 1013: shed for --max-backlog-total).
#[derive(Default)]
pub struct Kick {
    notify: Notify,
    code: AtomicU16,
}

/// A connection's place in the room; leaving is dropping it.
pub struct Membership<T: Payload> {
    room: Arc<Room<T>>,
    key: usize,
    inbox: mpsc::UnboundedReceiver<T>,
    backlog: Arc<AtomicUsize>,
    kick: Arc<Kick>,
}

impl<T: Payload> Room<T> {
    pub fn new(max_backlog: usize, max_backlog_total: Option<usize>) -> Room<T> {
        Room {
            members: Mutex::new(Slab::new()),
            max_backlog,
            max_backlog_total,
        }
    }

    /// Join from `shard`: from now on every published message is queued
    /// for this member.
    pub fn join(self: &Arc<Self>, shard: usize) -> Membership<T> {
        let (queue, inbox) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let kick = Arc::new(Kick::default());
        let key = self.members.lock().unwrap().insert(Member {
            queue,
            backlog: backlog.clone(),
            kick: kick.clone(),
            kicked: false,
            shard,
        });
        Membership {
            room: self.clone(),
            key,
            inbox,
            backlog,
            kick,
        }
    }

    /// Queue `message` (published on shard `from`) for every member, the
    /// sender included, in the order messages are published. A member
    /// whose backlog would pass --max-backlog gets nothing more and is told
    /// to close with 1008 (`backlog_closes`); past --max-backlog-total the
    /// furthest behind are told to close with 1013 (`overload_closes`).
    /// Each shard's `room_backlog_bytes` is brought up to date, and how long
    /// it took is a broadcast observation. Returns how many members it was
    /// queued for.
    pub fn publish(&self, message: &T, hub: &Hub, from: usize) -> u64 {
        if let Some(others) = hub.other_instances() {
            others.publish(&message.to_frame());
        }
        self.queue_for_members(message, hub, from)
    }

    /// A message another instance published (through the backplane): to
    /// the members here only, counted on shard 0.
    pub fn deliver_from_elsewhere(&self, frame: &Bytes, hub: &Hub) {
        if self.members.lock().unwrap().is_empty() {
            return;
        }
        if let Some(message) = T::from_frame(frame) {
            let delivered = self.queue_for_members(&message, hub, 0);
            hub.counters(0)
                .delivered
                .fetch_add(delivered, Ordering::Relaxed);
        }
    }

    fn queue_for_members(&self, message: &T, hub: &Hub, from: usize) -> u64 {
        let started = std::time::Instant::now();
        let counters = hub.counters(from);
        let len = message.backlog_bytes();
        let mut delivered = 0;
        let mut per_shard = vec![0usize; hub.shards()];
        let mut members = self.members.lock().unwrap();
        for (_, member) in members.iter_mut() {
            if member.kicked {
                continue;
            }
            let backlog = member.backlog.fetch_add(len, Ordering::AcqRel) + len;
            if backlog > self.max_backlog {
                member.kick(close_code::POLICY_VIOLATION);
                bump(&counters.backlog_closes);
                continue;
            }
            if member.queue.send(message.clone()).is_ok() {
                delivered += 1;
            }
            per_shard[member.shard] += backlog;
        }
        self.keep_in_budget(&mut members, &mut per_shard, hub, from);
        for (shard, backlog) in per_shard.into_iter().enumerate() {
            hub.counters(shard)
                .room_backlog_bytes
                .store(backlog as u64, Ordering::Relaxed);
        }
        if delivered > 0 {
            hub.histograms(from).broadcast.observe(started.elapsed());
        }
        delivered
    }

    /// Past --max-backlog-total, tell the members furthest behind to close
    /// with 1013 until the rest fit (`server::overload`).
    fn keep_in_budget(
        &self,
        members: &mut Slab<Member<T>>,
        per_shard: &mut [usize],
        hub: &Hub,
        from: usize,
    ) {
        let total: usize = per_shard.iter().sum();
        let Some(budget) = self.max_backlog_total.filter(|&budget| total > budget) else {
            return;
        };
        let behind: Vec<(usize, usize)> = members
            .iter()
            .filter(|(_, member)| !member.kicked)
            .map(|(key, member)| (member.backlog.load(Ordering::Acquire), key))
            .filter(|&(backlog, _)| backlog > 0)
            .collect();
        for key in overload::members_to_shed(behind, total, budget) {
            let member = &mut members[key];
            per_shard[member.shard] -= member
                .backlog
                .load(Ordering::Acquire)
                .min(per_shard[member.shard]);
            member.kick(close_code::TRY_AGAIN_LATER);
            bump(&hub.counters(from).overload_closes);
        }
    }
}

/// The reason sent with a kick's close code.
pub fn kick_reason(code: u16) -> &'static str {
    match code {
        close_code::TRY_AGAIN_LATER => overload::SHED_REASON,
        _ => "room backlog over the limit",
    }
}

impl<T> Member<T> {
    fn kick(&mut self, code: u16) {
        self.kicked = true;
        self.kick.code.store(code, Ordering::Release);
        self.kick.notify.notify_one();
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

    /// Set (once) when the member must close.
    pub fn kick_signal(&self) -> Arc<Kick> {
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

/// Resolves with the close code when the member was kicked, or never for
/// a connection that is not a member (for a `select!` branch).
pub async fn kicked(kick: Option<&Kick>) -> u16 {
    match kick {
        Some(kick) => {
            kick.notify.notified().await;
            kick.code.load(Ordering::Acquire)
        }
        None => std::future::pending().await,
    }
}

impl<T: Payload> Drop for Membership<T> {
    fn drop(&mut self) {
        self.room.members.lock().unwrap().remove(self.key);
    }
}

/// Encoded frames (the session task's room) cross as they are.
impl Payload for Bytes {
    fn backlog_bytes(&self) -> usize {
        Bytes::len(self)
    }
    fn to_frame(&self) -> Bytes {
        self.clone()
    }
    fn from_frame(frame: &Bytes) -> Option<Bytes> {
        Some(frame.clone())
    }
}

/// tungstenite's messages cross as the server frame that carries them.
impl Payload for tungstenite::Message {
    fn backlog_bytes(&self) -> usize {
        tungstenite::Message::len(self)
    }
    fn to_frame(&self) -> Bytes {
        use tungstenite::Message::{Binary, Text};
        match self {
            Text(text) => frame::server_frame(OpCode::Text, text.as_bytes()),
            Binary(data) => frame::server_frame(OpCode::Binary, data),
            _ => Bytes::new(), // only data messages are published
        }
    }
    fn from_frame(bytes: &Bytes) -> Option<tungstenite::Message> {
        let (header, len) = frame::decode_header(bytes, Role::Client, usize::MAX >> 1).ok()??;
        let payload = bytes.slice(len..len.checked_add(header.payload_len)?.min(bytes.len()));
        match header.opcode {
            OpCode::Text => {
                tungstenite::Message::text(String::from_utf8(payload.to_vec()).ok()?).into()
            }
            OpCode::Binary => Some(tungstenite::Message::binary(payload)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn hub(shards: usize) -> Hub {
        struct NoWake;
        impl crate::server::hub::Wake for NoWake {
            fn wake(&self) -> std::io::Result<()> {
                Ok(())
            }
        }
        Hub::new((0..shards).map(|_| Box::new(NoWake) as _).collect())
    }

    #[tokio::test]
    async fn a_member_past_the_limit_is_kicked_once_and_the_others_keep_receiving() {
        let hub = hub(1);
        let counters = hub.counters(0);
        let room = Arc::new(Room::<Bytes>::new(10, None));
        let mut slow = room.join(0);
        let mut fast = room.join(0);
        let message = Bytes::from_static(b"abcdef"); // 6 bytes
        assert_eq!(room.publish(&message, &hub, 0), 2);
        let got = fast.next().await.unwrap();
        fast.written(got.len());
        // The slow member holds 6; 6 more would be 12 > 10.
        for _ in 0..2 {
            assert_eq!(room.publish(&message, &hub, 0), 1, "only the fast one");
            let got = fast.next().await.unwrap();
            fast.written(got.len());
        }
        assert_eq!(counters.backlog_closes.load(Ordering::Relaxed), 1);
        let kick = slow.kick_signal();
        assert_eq!(kicked(Some(&kick)).await, close_code::POLICY_VIOLATION);
        assert_eq!(
            slow.next().await.unwrap(),
            message,
            "queued before the kick"
        );
        drop(slow);
        assert_eq!(room.members.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn past_the_room_budget_the_furthest_behind_are_told_1013_and_gauges_follow() {
        let hub = hub(2);
        let room = Arc::new(Room::<Bytes>::new(1000, Some(20)));
        let furthest = room.join(0);
        let behind = room.join(1);
        let mut reading = room.join(1);
        let message = Bytes::from_static(b"abcdef");
        room.publish(&message, &hub, 0); // 6 + 6 + 6 = 18: fits
                                         // The gauges are as of the publish: 6 on shard 0, 6 + 6 on shard 1.
        assert_eq!(
            hub.counters(0).room_backlog_bytes.load(Ordering::Relaxed),
            6
        );
        assert_eq!(
            hub.counters(1).room_backlog_bytes.load(Ordering::Relaxed),
            12
        );
        let got = reading.next().await.unwrap();
        reading.written(got.len());
        furthest.backlog.fetch_add(1, Ordering::AcqRel); // a step further behind
        room.publish(&message, &hub, 0); // 13 + 12 + 6 = 31 > 20: shed 13
        assert_eq!(hub.counters(0).overload_closes.load(Ordering::Relaxed), 1);
        assert_eq!(
            kicked(Some(&furthest.kick_signal())).await,
            close_code::TRY_AGAIN_LATER
        );
        assert_eq!(
            hub.counters(0).room_backlog_bytes.load(Ordering::Relaxed),
            0
        );
        assert_eq!(
            hub.counters(1).room_backlog_bytes.load(Ordering::Relaxed),
            18
        );
        drop(behind);
    }
}
