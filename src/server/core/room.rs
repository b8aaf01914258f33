//! The room on this shard: hand published frames to the hub, and send every
//! frame (ours and other shards') to this shard's members, closing the ones
//! that fall more than --max-backlog behind, and the furthest behind when
//! all of them together pass the shard's share of --max-backlog-total.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::{send, tls, ConnOutbox, Core, Io, ShardParts};
use crate::protocol::{close_code, Proto, Route};
use crate::server::overload;
use crate::server::session::{self, AfterFlush, Phase};
use crate::server::stats::bump;

impl<S> Core<S> {
    /// Hand this turn's published frames to the other shards, then send
    /// them and the frames other shards sent us to our own members: one pass
    /// over the slab and one send per member, however many frames.
    pub(super) fn deliver_room_frames<I: Io<Socket = S>>(&mut self, io: &mut I) {
        let mut frames = std::mem::take(&mut self.inbox);
        let since = self.hub.exchange(self.id, &mut self.published, &mut frames);
        if let (false, Some(since)) = (frames.is_empty(), since) {
            self.deflate.new_turn();
            let delivered = self.deliver_to_members(io, &frames);
            self.deflate.new_turn(); // free the compressed frames
            if delivered > 0 {
                let histograms = self.hub.histograms(self.id);
                histograms.broadcast.observe(since.elapsed());
            }
        }
        frames.clear();
        self.inbox = frames;
    }

    /// Returns how many frames were handed to members.
    fn deliver_to_members<I: Io<Socket = S>>(&mut self, io: &mut I, frames: &[Bytes]) -> u64 {
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        let mut delivered = 0;
        let mut backlog = 0;
        let counters = self.hub.counters(self.id);
        for (key, conn) in self.conns.iter_mut() {
            if conn.phase != Phase::Open(Route::Room) {
                continue;
            }
            delivered += frames.len() as u64;
            let frames = match conn.flags.deflate_window() {
                None => Cow::Borrowed(frames),
                Some(window) => self.deflate.room_frames(key, window, frames, counters),
            };
            let sealer = tls::sealer_for(&mut self.tls, key);
            match send(conn, sealer, io, key, &frames, counters) {
                Ok(()) if conn.queued_bytes() > self.settings.max_backlog => slow.push(key),
                Ok(()) => backlog += conn.queued_bytes(),
                Err(_) => gone.push(key),
            }
        }
        self.counters().delivered.fetch_add(delivered, Relaxed);
        for key in slow {
            let reason = "too slow: backlog limit exceeded";
            bump(&self.counters().backlog_closes);
            self.shed_member(io, key, close_code::POLICY_VIOLATION, reason);
        }
        gone.into_iter().for_each(|key| self.cut(io, key));
        let backlog = self.keep_room_in_budget(io, backlog);
        self.counters()
            .room_backlog_bytes
            .store(backlog as u64, Relaxed);
        delivered
    }

    /// Past this shard's share of --max-backlog-total, close the members
    /// furthest behind with 1013 until the rest fit (`server::overload`).
    /// Returns the bytes left queued for members.
    fn keep_room_in_budget<I: Io<Socket = S>>(&mut self, io: &mut I, backlog: usize) -> usize {
        let Some(total) = self.settings.max_backlog_total else {
            return backlog;
        };
        let share = total / self.hub.shards();
        if backlog <= share {
            return backlog;
        }
        let behind: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.phase == Phase::Open(Route::Room) && conn.queued_bytes() > 0)
            .map(|(key, conn)| (conn.queued_bytes(), key))
            .collect();
        let mut left = backlog;
        for key in overload::members_to_shed(behind, backlog, share) {
            left -= self.conns[key].queued_bytes();
            bump(&self.counters().overload_closes);
            self.shed_member(io, key, close_code::TRY_AGAIN_LATER, overload::SHED_REASON);
        }
        left
    }

    /// Take a member out of the room: keep only the frame being written,
    /// queue a close with `code` after it (WebSocket), and close once that
    /// is out (or at the close deadline if the member never reads again).
    fn shed_member<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize, code: u16, reason: &str) {
        self.hub.leave_room(self.id);
        let conn = &mut self.conns[key];
        if self.tls.is_none() {
            // Sealed records carry sequence numbers: a TLS member's queue
            // stays whole, and the close waits behind it (or its deadline).
            conn.drop_queue_tail();
        }
        conn.phase = Phase::Closing(AfterFlush::Drain);
        if self.settings.proto == Proto::Ws {
            let counters = self.hub.counters(self.id);
            let sealer = tls::sealer_for(&mut self.tls, key);
            let mut out = ConnOutbox::new(
                conn,
                sealer,
                io,
                key,
                counters,
                ShardParts {
                    published: &mut self.published,
                    gate: &mut self.gate,
                    hub: &self.hub,
                    deflate: &mut self.deflate,
                },
            );
            session::send_close(&mut out, code, reason);
            if out.failed {
                self.cut(io, key);
                return;
            }
        }
        self.start_closing(io, key);
    }
}
