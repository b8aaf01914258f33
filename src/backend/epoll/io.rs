//! What the core asks of the epoll backend: writev now, close by dropping
//! the socket (which also leaves the epoll set), and the two things that need
//! the loop (reading a resumed connection, accepting again), noted here for
//! the loop to do at once.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, TcpStream};

use bytes::Bytes;

use crate::server::core::{Io, Position, QueuedSend};

/// Most buffers handed to one writev().
const MAX_IOVECS: usize = 64;

#[derive(Default)]
pub struct EpollIo {
    /// Connections whose reading resumed: the edge that announced their
    /// input has passed, so the loop reads them now.
    pub resumed_reading: Vec<usize>,
    /// Accepting resumed: the loop accepts now.
    pub accept_resumed: bool,
}

impl Io for EpollIo {
    type Socket = TcpStream;

    fn write_now<T: AsRef<[u8]>>(&mut self, socket: &TcpStream, parts: &[T]) -> io::Result<usize> {
        write_vectored(socket, parts)
    }

    fn send_queue(&mut self, _: usize, _: &mut TcpStream, _: &[Bytes]) -> io::Result<QueuedSend> {
        // Queued bytes are left because the socket was full: the next
        // writable event (edge-triggered, registered at accept) writes them.
        Ok(QueuedSend::AwaitWritable)
    }

    fn shutdown_write(&mut self, socket: &TcpStream) {
        let _ = socket.shutdown(Shutdown::Write);
    }

    fn close(&mut self, _: usize, socket: TcpStream, unsent: VecDeque<Bytes>) {
        // Writes are synchronous: nothing of `unsent` is in use.
        drop(unsent);
        drop(socket);
    }

    fn pause_reading(&mut self, _: usize, _: &mut TcpStream) {
        // The loop asks the core before every read.
    }

    fn resume_reading(&mut self, key: usize, _: &mut TcpStream) {
        self.resumed_reading.push(key);
    }

    fn pause_accepting(&mut self) {
        // The loop asks the core before every accept.
    }

    fn resume_accepting(&mut self) {
        self.accept_resumed = true;
    }
}

/// Write `items` with writev, up to [`MAX_IOVECS`] buffers a call, until all
/// is written or the socket is full. Returns the bytes written.
pub fn write_vectored<T: AsRef<[u8]>>(mut socket: &TcpStream, items: &[T]) -> io::Result<usize> {
    let mut at = Position::START.advance(items, 0);
    let mut written = 0;
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
            Ok(n) => {
                at = at.advance(items, n);
                written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
