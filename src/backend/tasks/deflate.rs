//! permessage-deflate for the task backends. The tasks on one runtime
//! thread share its scratch codec and the room frames it compressed last,
//! as a shard core's connections share the core's: a room message is
//! compressed once per thread and window size for its `shared` members.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use crate::protocol::deflate::conn::compress_room_frame;
use crate::protocol::deflate::{ConnDeflate, Scratch};
use crate::protocol::frame::OpCode;
use crate::protocol::message::Violation;
use crate::server::stats::ShardCounters;

/// Room frames remembered compressed, per thread: enough for a burst of
/// messages to reach every member before the first is forgotten.
const RECENT: usize = 16;

#[derive(Default)]
struct ThreadDeflate {
    scratch: Scratch,
    /// (the room's frame, the window, that frame compressed), newest first.
    /// Holding the frame keeps its bytes alive, so a pointer match is the
    /// same frame, never a new one at a reused address.
    recent: VecDeque<(Bytes, u8, Bytes)>,
}

thread_local! {
    static THREAD: RefCell<ThreadDeflate> = RefCell::default();
}

/// Make this thread's scratch codec for `window` now (when its first
/// connection agrees), a fixed cost of the thread rather than of the
/// connection whose message would otherwise make it.
pub fn warm(window: u8) {
    THREAD.with_borrow_mut(|thread| {
        thread.scratch.deflater(window);
        thread.scratch.inflater();
    });
}

pub fn compressed_frame(conn: &mut ConnDeflate, opcode: OpCode, payload: &[u8]) -> Bytes {
    THREAD.with_borrow_mut(|thread| conn.compressed_frame(&mut thread.scratch, opcode, payload))
}

pub fn inflate(
    conn: &mut ConnDeflate,
    opcode: OpCode,
    payload: &[u8],
    max: usize,
) -> Result<Vec<u8>, Violation> {
    THREAD.with_borrow_mut(|thread| conn.inflate(&mut thread.scratch, opcode, payload, max))
}

/// A room frame as a member that agreed on deflate gets it.
pub fn room_frame(conn: &mut ConnDeflate, frame: Bytes, counters: &ShardCounters) -> Bytes {
    THREAD.with_borrow_mut(|thread| {
        let window = match conn {
            ConnDeflate::Own(_) => None,
            ConnDeflate::Shared { window_bits } => Some(*window_bits),
        };
        let same = |(plain, bits, _): &&(Bytes, u8, Bytes)| {
            Some(*bits) == window && plain.as_ptr() == frame.as_ptr() && plain.len() == frame.len()
        };
        if let Some((_, _, compressed)) = thread.recent.iter().find(same) {
            return compressed.clone();
        }
        let deflater = conn.deflater(&mut thread.scratch);
        let Some(compressed) = compress_room_frame(deflater, &frame) else {
            return frame;
        };
        counters.deflate_compressed.fetch_add(1, Relaxed);
        if let Some(window) = window {
            thread
                .recent
                .push_front((frame, window, compressed.clone()));
            thread.recent.truncate(RECENT);
        }
        compressed
    })
}
