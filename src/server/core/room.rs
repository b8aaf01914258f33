//! The room on this shard: hand published frames to the hub, and send every
//! frame (ours and other shards') to this shard's members, closing the ones
//! that fall more than --max-backlog behind.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::{send, ConnOutbox, Core, Io};
use crate::protocol::{close_code, Proto, Route};
use crate::server::session::{self, AfterFlush, Phase};
use crate::server::stats::bump;

impl<S> Core<S> {
    /// Hand this turn's published frames to the other shards, then send
    /// them and the frames other shards sent us to our own members: one pass
    /// over the slab and one send per member, however many frames.
    pub(super) fn deliver_room_frames<I: Io<Socket = S>>(&mut self, io: &mut I) {
        let mut frames = std::mem::take(&mut self.inbox);
        self.hub.exchange(self.id, &mut self.published, &mut frames);
        if !frames.is_empty() {
            self.deliver_to_members(io, &frames);
        }
        frames.clear();
        self.inbox = frames;
    }

    fn deliver_to_members<I: Io<Socket = S>>(&mut self, io: &mut I, frames: &[Bytes]) {
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        let mut delivered = 0;
        for (key, conn) in self.conns.iter_mut() {
            if conn.phase != Phase::Open(Route::Room) {
                continue;
            }
            delivered += frames.len() as u64;
            match send(conn, io, key, frames) {
                Ok(()) if conn.queued_bytes() > self.settings.max_backlog => slow.push(key),
                Ok(()) => {}
                Err(_) => gone.push(key),
            }
        }
        self.counters().delivered.fetch_add(delivered, Relaxed);
        slow.into_iter()
            .for_each(|key| self.close_slow_member(io, key));
        gone.into_iter().for_each(|key| self.cut(io, key));
    }

    /// A member fell more than --max-backlog behind: keep only the frames
    /// being written, queue a 1008 close after them, and close once that is
    /// out (or at the close deadline if the member never reads again).
    fn close_slow_member<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        bump(&self.counters().backlog_closes);
        self.hub.leave_room(self.id);
        let conn = &mut self.conns[key];
        conn.drop_queue_tail();
        conn.phase = Phase::Closing(AfterFlush::Drain);
        if self.settings.proto == Proto::Ws {
            let counters = self.hub.counters(self.id);
            let admission = (&mut self.gate, &self.hub.admitted);
            let mut out = ConnOutbox::new(conn, io, key, &mut self.published, counters, admission);
            session::send_close(
                &mut out,
                close_code::POLICY_VIOLATION,
                "too slow: backlog limit exceeded",
            );
            if out.failed {
                self.cut(io, key);
                return;
            }
        }
        self.start_closing(io, key);
    }
}
