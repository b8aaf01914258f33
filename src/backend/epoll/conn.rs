//! One connection's state in the epoll backend, and its write path.
//!
//! An idle connection is a socket, a deadline slot, its phase and one null
//! pointer: 24 bytes. Everything else — a partial frame, a message being reassembled,
//! bytes the socket would not take — lives in [`Busy`], allocated only while
//! needed and freed as soon as it is empty.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes};
use std::net::TcpStream;

use crate::protocol::message::Fragments;
use crate::server::deadline::Deadline;
use crate::server::session::Phase;

/// Most queued frames handed to one writev().
const MAX_IOVECS: usize = 64;

/// Bytes one connection takes in the shard's slab: the slab stores `enum
/// Entry { Vacant(usize), Occupied(Conn) }` (a private type of the slab
/// crate, mirrored below), which fits in `Conn`'s own 24 bytes.
pub const SLOT_BYTES: usize = std::mem::size_of::<SlabEntry>();

/// The slab crate's entry type, for its size.
#[allow(dead_code)]
enum SlabEntry {
    Vacant(usize),
    Occupied(Conn),
}

pub struct Conn {
    /// The socket: a 4-byte fd. A std stream, not mio's, whose debug
    /// builds add a registration check that would double this struct; it is
    /// registered through `SourceFd` instead.
    pub socket: TcpStream,
    /// When the handshake or the close must be over; unset while open.
    pub deadline: Deadline,
    pub phase: Phase,
    busy: Option<Box<Busy>>,
}

/// Per-connection state that exists only while the connection is busy.
#[derive(Default)]
pub struct Busy {
    /// Received bytes not yet a whole request or frame.
    pub inbuf: Vec<u8>,
    /// A fragmented message in flight.
    pub fragments: Option<Box<Fragments>>,
    /// Bytes the socket would not take yet, in order; only the front may be
    /// the tail of a partly written frame.
    outq: VecDeque<Bytes>,
    queued: usize,
    /// Reading is paused until `outq` drains (echo backpressure).
    pub read_paused: bool,
}

impl Busy {
    fn is_empty(&self) -> bool {
        self.inbuf.is_empty()
            && self.fragments.is_none()
            && self.outq.is_empty()
            && !self.read_paused
    }
}

impl Conn {
    pub fn new(socket: TcpStream, deadline: Deadline) -> Conn {
        Conn {
            socket,
            deadline,
            phase: Phase::Handshake,
            busy: None,
        }
    }

    /// The busy state, created on first use.
    pub fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Box::default)
    }

    pub fn busy_ref(&self) -> Option<&Busy> {
        self.busy.as_deref()
    }

    /// Free the busy state if nothing is left in it.
    pub fn release_if_idle(&mut self) {
        if self.busy.as_ref().is_some_and(|busy| busy.is_empty()) {
            self.busy = None;
        }
    }

    /// Take out the partial input and the message in flight (both empty
    /// when the connection has no busy state) to run the session over.
    pub fn take_input(&mut self) -> (Vec<u8>, Option<Box<Fragments>>) {
        match self.busy.as_deref_mut() {
            Some(busy) => (std::mem::take(&mut busy.inbuf), busy.fragments.take()),
            None => (Vec::new(), None),
        }
    }

    /// Put back what the session left: kept only if not empty, so a
    /// connection that finished its frame holds no buffer.
    pub fn put_input(&mut self, inbuf: Vec<u8>, fragments: Option<Box<Fragments>>) {
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

    fn has_queue(&self) -> bool {
        self.queued_bytes() > 0
    }

    fn enqueue(&mut self, bytes: Bytes) {
        let busy = self.busy();
        busy.queued += bytes.len();
        busy.outq.push_back(bytes);
    }

    /// Send `parts` in order: straight to the socket when nothing is queued,
    /// the rest (or all, behind a queue) copied into the queue.
    pub fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let sent = if self.has_queue() {
            Position::START
        } else {
            write_vectored(&mut self.socket, parts, Position::START)?
        };
        if sent.index < parts.len() {
            let rest: Vec<u8> = parts[sent.index..]
                .iter()
                .enumerate()
                .flat_map(|(i, part)| &part[if i == 0 { sent.offset } else { 0 }..])
                .copied()
                .collect();
            self.enqueue(Bytes::from(rest));
        }
        Ok(())
    }

    /// Send shared frames in order, with one writev when nothing is queued;
    /// what the socket will not take is queued by reference, not copied.
    pub fn send_shared(&mut self, frames: &[Bytes]) -> io::Result<()> {
        let sent = if self.has_queue() {
            Position::START
        } else {
            write_vectored(&mut self.socket, frames, Position::START)?
        };
        if let Some(first) = frames.get(sent.index) {
            self.enqueue(first.slice(sent.offset..));
            for frame in &frames[sent.index + 1..] {
                self.enqueue(frame.clone());
            }
        }
        Ok(())
    }

    /// Write queued bytes until the socket is full or the queue is empty.
    /// Returns whether the queue is now empty.
    pub fn flush(&mut self) -> io::Result<bool> {
        let Some(busy) = self.busy.as_deref_mut() else {
            return Ok(true);
        };
        let queued = busy.outq.make_contiguous();
        let sent = write_vectored(&mut self.socket, queued, Position::START)?;
        let written: usize =
            queued[..sent.index].iter().map(Bytes::len).sum::<usize>() + sent.offset;
        busy.queued -= written;
        busy.outq.drain(..sent.index);
        if let Some(front) = busy.outq.front_mut() {
            front.advance(sent.offset);
        }
        Ok(busy.outq.is_empty())
    }

    /// Drop every queued frame except the one being written (cutting it would
    /// corrupt the stream). Used before closing a member that fell behind.
    pub fn drop_queue_tail(&mut self) {
        if let Some(busy) = self.busy.as_deref_mut() {
            busy.outq.truncate(1);
            busy.queued = busy.outq.front().map_or(0, Bytes::len);
        }
    }
}

/// How far a sequence of buffers has been written: whole buffers, then bytes
/// into the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    index: usize,
    offset: usize,
}

impl Position {
    const START: Position = Position {
        index: 0,
        offset: 0,
    };

    fn advance<T: AsRef<[u8]>>(mut self, items: &[T], mut written: usize) -> Position {
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

/// Write `items` from `from` on with writev, up to [`MAX_IOVECS`] buffers a
/// call, until all is written or the socket is full. Returns how far it got.
fn write_vectored<T: AsRef<[u8]>>(
    socket: &mut TcpStream,
    items: &[T],
    from: Position,
) -> io::Result<Position> {
    let mut at = from.advance(items, 0);
    while at.index < items.len() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let chunk = items[at.index..].iter().take(MAX_IOVECS);
        for (i, (slot, item)) in slices.iter_mut().zip(chunk).enumerate() {
            let skip = if i == 0 { at.offset } else { 0 };
            *slot = IoSlice::new(&item.as_ref()[skip..]);
        }
        let count = (items.len() - at.index).min(MAX_IOVECS);
        match socket.write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at = at.advance(items, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle footprint is the point of this backend: a socket, a
    /// deadline, a phase and a null pointer. Growing it is a deliberate decision.
    #[test]
    fn idle_connection_state_is_small() {
        assert_eq!(std::mem::size_of::<Conn>(), 24);
        // A slab entry is an enum of `Vacant(usize)` or the value; the
        // phase's spare values hold the tag, so it costs nothing extra.
        assert_eq!(std::mem::size_of::<Option<Conn>>(), 24);
        assert_eq!(SLOT_BYTES, 24);
    }

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

    /// Writes through a socket pair whose reader is slow, so some bytes get
    /// queued; the reader must then see every byte exactly once, in order.
    #[test]
    fn queued_writes_arrive_whole_and_in_order() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut reader = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(socket, Deadline::NONE);
        let big = Bytes::from(vec![1u8; 1 << 20]);
        let mut expected = Vec::new();
        for round in 0u8..8 {
            let small = Bytes::from(vec![round; 100]);
            conn.send_shared(&[big.clone(), small.clone()]).unwrap();
            conn.send_parts(&[b"hdr", &[round; 10]]).unwrap();
            expected.extend_from_slice(&big);
            expected.extend_from_slice(&small);
            expected.extend_from_slice(b"hdr");
            expected.extend_from_slice(&[round; 10]);
        }
        assert!(conn.queued_bytes() > 0, "the test must exercise the queue");
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        while received.len() < expected.len() {
            conn.flush().unwrap();
            let n = reader.read(&mut chunk).unwrap();
            received.extend_from_slice(&chunk[..n]);
        }
        assert!(conn.flush().unwrap());
        assert_eq!(conn.queued_bytes(), 0);
        assert!(received == expected, "byte stream differs");
    }
}
