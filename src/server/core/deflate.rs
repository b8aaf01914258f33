//! permessage-deflate in the shard core. A connection that agreed on it is
//! marked by its window in its flags (its slot stays 24 bytes); in
//! `per-connection` mode its codec lives in a side table beside the slab.
//! `shared` connections use the shard's scratch codec, and the room's
//! frames are compressed once per delivery turn and window size for all of
//! them (`protocol::deflate::conn`).

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use crate::protocol::deflate::conn::ConnCodecs;
use crate::protocol::deflate::conn::{compress_room_frame, estimated_codec_bytes};
use crate::protocol::deflate::negotiate::SMALLEST_SERVER_WINDOW;
use crate::protocol::deflate::{Agreed, ConnDeflate, DeflateMode};
use crate::protocol::frame::OpCode;
use crate::protocol::message::Violation;
use crate::server::deflate::{self, DeflateSettings};
use crate::server::stats::ShardCounters;

/// A shard's permessage-deflate state.
pub(super) struct DeflateConns {
    mode: DeflateMode,
    /// This shard's share of --deflate-memory.
    budget: Option<u64>,
    /// Per-connection codecs (each with the bytes it was budgeted), and
    /// the scratch for `shared` connections.
    codecs: ConnCodecs<u64>,
    /// The room's frames of the current delivery, compressed for `shared`
    /// members, by window size (made when the first such member needs them).
    turn: [Option<Vec<Bytes>>; 16 - SMALLEST_SERVER_WINDOW as usize],
}

impl DeflateConns {
    pub fn new(settings: DeflateSettings, shards: usize) -> DeflateConns {
        let mut codecs = ConnCodecs::default();
        if settings.mode != DeflateMode::Off {
            // Made now, a fixed cost of the shard, rather than at the first
            // message, where it would look like a cost of the connections.
            codecs
                .scratch
                .deflater(settings.limits.server_max_window_bits);
            codecs.scratch.inflater();
        }
        DeflateConns {
            mode: settings.mode,
            budget: settings.memory.map(|bytes| bytes / shards as u64),
            codecs,
            turn: Default::default(),
        }
    }

    /// Connection `key` agreed on `agreed`: give it a codec if its mode
    /// keeps one and the budget has room. Returns whether it may deflate.
    pub fn agree(&mut self, key: usize, agreed: &Agreed, counters: &ShardCounters) -> bool {
        if self.mode != DeflateMode::PerConnection {
            return true;
        }
        let bytes = estimated_codec_bytes(agreed);
        if !deflate::reserve(&counters.deflate_codec_bytes, self.budget, bytes) {
            return false;
        }
        self.codecs
            .keep(key, ConnDeflate::new(self.mode, agreed), bytes);
        true
    }

    /// Connection `key` is gone: free its codec, if it had one.
    pub fn end(&mut self, key: usize, counters: &ShardCounters) {
        if let Some(bytes) = self.codecs.end(key) {
            deflate::release(&counters.deflate_codec_bytes, bytes);
        }
    }

    pub fn compressed_frame(
        &mut self,
        key: usize,
        window: u8,
        opcode: OpCode,
        payload: &[u8],
    ) -> Bytes {
        self.codecs.with(key, window, |conn, scratch| {
            conn.compressed_frame(scratch, opcode, payload)
        })
    }

    pub fn inflate(
        &mut self,
        key: usize,
        window: u8,
        (opcode, payload, max): (OpCode, &[u8], usize),
    ) -> Result<Vec<u8>, Violation> {
        self.codecs.inflate(key, window, (opcode, payload, max))
    }

    /// A new delivery: forget the last one's compressed frames.
    pub fn new_turn(&mut self) {
        self.turn = Default::default();
    }

    /// The room's `frames` as member `key` (agreed with `window`) gets
    /// them: its own codec compresses each, or the frames compressed once
    /// this turn for every `shared` member with that window.
    pub fn room_frames<'a>(
        &'a mut self,
        key: usize,
        window: u8,
        frames: &[Bytes],
        counters: &ShardCounters,
    ) -> Cow<'a, [Bytes]> {
        if let Some((own, scratch)) = self.codecs.own(key) {
            return Cow::Owned(compress_all(own.deflater(scratch), frames, counters));
        }
        let slot = (window - SMALLEST_SERVER_WINDOW) as usize;
        let scratch = &mut self.codecs.scratch;
        let compressed = self.turn[slot]
            .get_or_insert_with(|| compress_all(scratch.deflater(window), frames, counters));
        Cow::Borrowed(&compressed[..])
    }
}

/// Every data frame compressed (others as they are), counted.
fn compress_all(
    deflater: &mut crate::protocol::deflate::Deflater,
    frames: &[Bytes],
    counters: &ShardCounters,
) -> Vec<Bytes> {
    let compressed: Vec<Bytes> = frames
        .iter()
        .map(|frame| compress_room_frame(deflater, frame).unwrap_or_else(|| frame.clone()))
        .collect();
    counters
        .deflate_compressed
        .fetch_add(frames.len() as u64, Relaxed);
    compressed
}
