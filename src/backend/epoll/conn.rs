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
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let mut written = 0;
        if !self.has_queue() {
            while written < total {
                let slices = skip_prefix(parts, written);
                match self.socket.write_vectored(&slices) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if written < total {
            let rest: Vec<u8> = skip_prefix(parts, written)
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            self.enqueue(Bytes::from(rest));
        }
        Ok(())
    }

    /// Send a shared frame: written directly when nothing is queued; otherwise
    /// (or for the part the socket would not take) a reference is queued.
    pub fn send_shared(&mut self, frame: &Bytes) -> io::Result<()> {
        if self.has_queue() {
            self.enqueue(frame.clone());
            return Ok(());
        }
        let mut written = 0;
        while written < frame.len() {
            match self.socket.write(&frame[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if written < frame.len() {
            self.enqueue(frame.slice(written..));
        }
        Ok(())
    }

    /// Write queued bytes until the socket is full or the queue is empty.
    /// Returns whether the queue is now empty.
    pub fn flush(&mut self) -> io::Result<bool> {
        let Some(busy) = self.busy.as_deref_mut() else {
            return Ok(true);
        };
        while !busy.outq.is_empty() {
            let slices: Vec<IoSlice> = busy
                .outq
                .iter()
                .take(MAX_IOVECS)
                .map(|bytes| IoSlice::new(bytes))
                .collect();
            let mut written = match self.socket.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            busy.queued -= written;
            while written > 0 {
                let front = busy
                    .outq
                    .front_mut()
                    .expect("written bytes came from the queue");
                if written < front.len() {
                    front.advance(written);
                    break;
                }
                written -= front.len();
                busy.outq.pop_front();
            }
        }
        Ok(true)
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

/// `parts` without their first `skip` bytes, as I/O slices.
fn skip_prefix<'a>(parts: &[&'a [u8]], mut skip: usize) -> Vec<IoSlice<'a>> {
    let mut slices = Vec::with_capacity(parts.len());
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        slices.push(IoSlice::new(&part[skip..]));
        skip = 0;
    }
    slices
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
    }

    #[test]
    fn skip_prefix_cuts_across_parts() {
        let parts: [&[u8]; 2] = [b"abc", b"defg"];
        let join = |skip| -> Vec<u8> {
            skip_prefix(&parts, skip)
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect()
        };
        assert_eq!(join(0), b"abcdefg");
        assert_eq!(join(2), b"cdefg");
        assert_eq!(join(3), b"defg");
        assert_eq!(join(6), b"g");
        assert_eq!(join(7), b"");
    }
}
