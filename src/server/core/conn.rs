//! One connection's state in a shard, whatever backend carries its bytes,
//! and its outbound queue.
//!
//! An idle connection is the backend's socket handle, a deadline, its phase,
//! a byte of flags and one null pointer: 24 bytes with either backend.
//! Everything else — a partial frame, a message being reassembled, bytes not yet written — lives
//! in [`Busy`], allocated only while needed and freed as soon as it is empty.

use std::collections::VecDeque;

use std::io;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Buf, Bytes};

use super::{Io, QueuedSend};
use crate::protocol::message::Fragments;
use crate::server::deadline::Deadline;
use crate::server::session::Phase;
use crate::server::stats::ShardCounters;

pub struct Conn<S> {
    /// The backend's handle: an fd, plus for io_uring a generation and the
    /// state of its armed operations (see `backend::uring::Socket`).
    pub socket: S,
    /// When the handshake or the close must be over; unset while open.
    pub(super) deadline: Deadline,
    pub(super) phase: Phase,
    pub(super) flags: Flags,
    pub(super) busy: Option<Box<Busy>>,
}

/// A connection's flags, in one byte: four flags, and the deflate window.
#[derive(Clone, Copy, Default)]
pub struct Flags(u8);

impl Flags {
    /// It holds a place in the server's admitted count (`admission`).
    pub const ADMITTED: u8 = 1;
    /// The drain told it to go (`drain`): its close is counted clean or cut.
    pub const TOLD_TO_GO: u8 = 2;
    /// It was silent for --ping-interval and has been pinged since.
    pub const PINGED: u8 = 4;
    /// Our TLS close_notify is queued (TLS servers only).
    pub const CLOSE_NOTIFY_SENT: u8 = 8;

    /// The LZ77 window (bits) the server compresses with, when the
    /// connection agreed on permessage-deflate: kept in the high four bits.
    pub fn deflate_window(self) -> Option<u8> {
        let bits = self.0 >> 4;
        (bits != 0).then_some(bits)
    }

    pub fn set_deflate_window(&mut self, bits: u8) {
        debug_assert!((1..16).contains(&bits));
        self.0 = self.0 & 0x0F | bits << 4;
    }

    pub fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    pub fn set(&mut self, flag: u8, on: bool) {
        match on {
            true => self.0 |= flag,
            false => self.0 &= !flag,
        }
    }
}

/// Per-connection state that exists only while the connection is busy.
#[derive(Default)]
pub struct Busy {
    /// Received bytes not yet a whole request or frame.
    inbuf: Vec<u8>,
    /// A fragmented message in flight.
    fragments: Option<Box<Fragments>>,
    /// Bytes not written yet, in order; only the front may be the tail of a
    /// partly written frame.
    outq: VecDeque<Bytes>,
    queued: usize,
    /// How many buffers at the front of `outq` a completion-based backend is
    /// sending now (they must stay put until their completion), and their bytes.
    in_flight: usize,
    in_flight_bytes: usize,
    /// Reading is paused until `outq` drains (echo backpressure).
    read_paused: bool,
}

impl Busy {
    fn is_empty(&self) -> bool {
        self.inbuf.is_empty()
            && self.fragments.is_none()
            && self.outq.is_empty()
            && !self.read_paused
    }
}

impl<S> Conn<S> {
    pub fn new(socket: S) -> Conn<S> {
        Conn {
            socket,
            deadline: Deadline::NONE,
            phase: Phase::Handshake,
            flags: Flags::default(),
            busy: None,
        }
    }

    fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Box::default)
    }

    /// Free the busy state if nothing is left in it.
    pub(super) fn release_if_idle(&mut self) {
        if self.busy.as_ref().is_some_and(|busy| busy.is_empty()) {
            self.busy = None;
        }
    }

    /// Take out the partial input and the message in flight (both empty
    /// when the connection has no busy state) to run the session over.
    pub(super) fn take_input(&mut self) -> (Vec<u8>, Option<Box<Fragments>>) {
        match self.busy.as_deref_mut() {
            Some(busy) => (std::mem::take(&mut busy.inbuf), busy.fragments.take()),
            None => (Vec::new(), None),
        }
    }

    /// Put back what the session left: kept only if not empty, so a
    /// connection that finished its frame holds no buffer.
    pub(super) fn put_input(&mut self, inbuf: Vec<u8>, fragments: Option<Box<Fragments>>) {
        if inbuf.is_empty() && fragments.is_none() {
            self.release_if_idle();
            return;
        }
        let busy = self.busy();
        busy.inbuf = inbuf;
        busy.fragments = fragments;
    }

    pub fn queued_bytes(&self) -> usize {
        self.busy.as_ref().map_or(0, |busy| busy.queued)
    }

    /// Nothing queued and nothing in flight: new bytes may go straight out.
    pub(super) fn can_write_directly(&self) -> bool {
        self.queued_bytes() == 0
    }

    pub(super) fn read_paused(&self) -> bool {
        self.busy.as_ref().is_some_and(|busy| busy.read_paused)
    }

    pub(super) fn set_read_paused(&mut self, paused: bool) {
        if paused || self.read_paused() {
            self.busy().read_paused = paused;
        }
    }

    pub(super) fn enqueue(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let busy = self.busy();
        busy.queued += bytes.len();
        busy.outq.push_back(bytes);
    }

    /// Hand the queue to the backend if it has bytes and none are in flight.
    pub(super) fn start_queue<I: Io<Socket = S>>(
        &mut self,
        io: &mut I,
        key: usize,
    ) -> io::Result<()> {
        let Some(busy) = self.busy.as_deref_mut() else {
            return Ok(());
        };
        if busy.queued == 0 || busy.in_flight > 0 {
            return Ok(());
        }
        let queue = busy.outq.make_contiguous();
        if let QueuedSend::Submitted { buffers } = io.send_queue(key, &mut self.socket, queue)? {
            busy.in_flight = buffers;
            busy.in_flight_bytes = queue[..buffers].iter().map(Bytes::len).sum();
        }
        Ok(())
    }

    /// Write the queue now (a readiness backend that can write again),
    /// counting the bytes written. Returns whether the queue is now empty.
    pub(super) fn write_queue_now<I: Io<Socket = S>>(
        &mut self,
        io: &mut I,
        counters: &ShardCounters,
    ) -> io::Result<bool> {
        let Some(busy) = self.busy.as_deref_mut() else {
            return Ok(true);
        };
        let written = io.write_now(&self.socket, busy.outq.make_contiguous())?;
        counters.bytes_sent.fetch_add(written as u64, Relaxed);
        Ok(self.consume(written))
    }

    /// The send in flight is over (its completion came).
    pub(super) fn send_finished(&mut self) {
        if let Some(busy) = self.busy.as_deref_mut() {
            busy.in_flight = 0;
            busy.in_flight_bytes = 0;
        }
    }

    /// Bytes waiting behind what is being sent: bytes the socket has not
    /// taken. Under epoll every queued byte; under io_uring the queue less
    /// the send in flight, which is not a backlog but the normal way out.
    pub(super) fn backlog(&self) -> usize {
        self.busy
            .as_ref()
            .map_or(0, |busy| busy.queued - busy.in_flight_bytes)
    }

    /// `written` bytes from the front of the queue are gone. Returns whether
    /// the queue is now empty.
    pub(super) fn consume(&mut self, mut written: usize) -> bool {
        let Some(busy) = self.busy.as_deref_mut() else {
            return true;
        };
        busy.queued -= written.min(busy.queued);
        while written > 0 {
            let Some(front) = busy.outq.front_mut() else {
                break;
            };
            if written < front.len() {
                front.advance(written);
                break;
            }
            written -= front.len();
            busy.outq.pop_front();
        }
        busy.outq.is_empty()
    }

    /// Drop every queued frame except those being written (cutting one would
    /// corrupt the stream). Used before closing a member that fell behind.
    pub(super) fn drop_queue_tail(&mut self) {
        if let Some(busy) = self.busy.as_deref_mut() {
            busy.outq.truncate(busy.in_flight.max(1));
            busy.queued = busy.outq.iter().map(Bytes::len).sum();
        }
    }

    /// The queue, handed to the backend when the connection closes (a
    /// completion-based backend keeps what is in flight until its completion).
    pub(super) fn take_queue(&mut self) -> VecDeque<Bytes> {
        let Some(busy) = self.busy.as_deref_mut() else {
            return VecDeque::new();
        };
        busy.queued = 0;
        std::mem::take(&mut busy.outq)
    }
}

/// How far a sequence of buffers has been written: whole buffers, then bytes
/// into the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub index: usize,
    pub offset: usize,
}

impl Position {
    pub const START: Position = Position {
        index: 0,
        offset: 0,
    };

    pub fn advance<T: AsRef<[u8]>>(mut self, items: &[T], mut written: usize) -> Position {
        while written > 0 {
            let left = items[self.index].as_ref().len() - self.offset;
            if written < left {
                self.offset += written;
                break;
            }
            written -= left;
            self.index += 1;
            self.offset = 0;
        }
        // Skip empty buffers so a finished write ends at `items.len()`.
        while self.index < items.len() && items[self.index].as_ref().len() == self.offset {
            self.index += 1;
            self.offset = 0;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_advances_across_buffers_and_skips_empty_ones() {
        let at = |index, offset| Position { index, offset };
        let items: [&[u8]; 4] = [b"abc", b"", b"defg", b"h"];
        let start = Position::START;
        assert_eq!(start.advance(&items, 2), at(0, 2));
        assert_eq!(start.advance(&items, 3), at(2, 0));
        assert_eq!(start.advance(&items, 4), at(2, 1));
        assert_eq!(start.advance(&items, 8), at(4, 0));
        let empty: [&[u8]; 1] = [b""];
        assert_eq!(start.advance(&empty, 0), at(1, 0));
    }

    #[test]
    fn consuming_the_queue_cuts_the_front_and_keeps_the_order() {
        let mut conn = Conn::new(());
        conn.enqueue(Bytes::from_static(b"abc"));
        conn.enqueue(Bytes::from_static(b"defg"));
        assert!(!conn.consume(4));
        assert_eq!(conn.queued_bytes(), 3);
        assert_eq!(conn.take_queue(), [Bytes::from_static(b"efg")]);
    }

    #[test]
    fn dropping_the_tail_keeps_what_is_in_flight() {
        let mut conn = Conn::new(());
        for part in [&b"a"[..], b"b", b"c", b"d"] {
            conn.enqueue(Bytes::copy_from_slice(part));
        }
        let busy = conn.busy.as_deref_mut().unwrap();
        (busy.in_flight, busy.in_flight_bytes) = (2, 2);
        assert_eq!(conn.backlog(), 2);
        conn.drop_queue_tail();
        assert_eq!(conn.queued_bytes(), 2);
        assert_eq!(conn.backlog(), 0);
        conn.send_finished();
        conn.drop_queue_tail();
        assert_eq!(conn.queued_bytes(), 1);
    }
}
