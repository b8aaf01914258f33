//! What the core asks of the io_uring backend, as submission entries: every
//! send, shutdown, cancel and close is queued on the ring and submitted with
//! the rest of the turn's work in one `io_uring_enter`. Sends complete later,
//! so this backend never writes borrowed bytes (`write_now` takes nothing):
//! the core queues them as owned buffers, and those stay alive until the
//! send's completion — in the connection's queue, or, if the connection
//! closed meanwhile, parked here under the send's tag.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;

use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring};

use super::ops::{Op, Tag};
use crate::server::core::{Io, QueuedSend};

/// Entries queued before they are submitted even mid-turn. One enter runs
/// every entry it submits before returning, and loopback delivers inside
/// each send, so a whole broadcast in one enter would hold the core for its
/// entire length (no preemption point in the kernel), and the clients could
/// read nothing until it ended: batches keep the first delivery early at
/// one enter per this many sends.
const SUBMIT_EVERY: usize = 64;
/// Most buffers in one sendmsg.
const MAX_IOVECS: usize = 16;
/// Sendmsg headers (with their iovecs) that can wait for one submit; the
/// kernel copies them at submission (IORING_FEAT_SUBMIT_STABLE).
const MSG_SLOTS: usize = 256;

/// A connection as the ring knows it: its fd, the generation its tags carry,
/// how it receives, and which of its operations are in flight. 8 bytes.
///
/// An idle connection is *watched*: a multishot poll, whose only kernel cost
/// is its request (io_kiocb, 256 B), and a one-shot recv when it fires. A
/// connection that keeps talking (input after its first) *streams*: a
/// multishot recv, one completion per read, which also holds an async
/// message header and a poll entry in the kernel (about 600 B more) while
/// it lives. So idle members cost what epoll's cost, and busy ones read with
/// half the operations.
#[derive(Debug)]
pub struct Socket {
    pub fd: RawFd,
    pub generation: u16,
    pub state: State,
}

/// Which of a connection's operations are in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State(u16);

impl State {
    /// A multishot poll for input is armed (until its last completion).
    pub const WATCHING: u16 = 1;
    /// ... and its cancel was asked.
    pub const WATCH_CANCELLING: u16 = 2;
    pub const SENDING: u16 = 4;
    /// A one-shot recv is in flight.
    pub const READING: u16 = 8;
    /// Input was announced while a recv was in flight: read again after it.
    pub const READ_AGAIN: u16 = 16;
    /// The peer hung up (or the socket failed): read on to the end, since
    /// no further wake-up will say so.
    pub const TO_EOF: u16 = 32;
    /// A multishot recv is armed (until its last completion).
    pub const STREAMING: u16 = 64;
    /// ... and its cancel was asked.
    pub const STREAM_CANCELLING: u16 = 128;
    /// Input has been read once (the handshake).
    pub const SPOKE: u16 = 256;
    /// Input came again: this connection streams from now on.
    pub const TALKER: u16 = 512;

    pub fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }

    pub fn set(&mut self, flag: u16, on: bool) {
        if on {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
    }
}

impl Socket {
    fn tag(&self, op: Op, key: usize) -> u64 {
        Tag::conn(op, key, self.generation).encode()
    }
}

/// A sendmsg header and its iovecs, kept until the next submit.
#[repr(C)]
struct Message {
    header: libc::msghdr,
    iovecs: [libc::iovec; MAX_IOVECS],
}

impl Message {
    fn empty() -> Message {
        // SAFETY: msghdr and iovec are plain C structs; all zeroes is valid
        // (null pointers, zero lengths).
        unsafe { std::mem::zeroed() }
    }
}

pub struct UringIo {
    /// Declared first: dropped before anything whose memory it may use.
    pub ring: IoUring,
    listener: RawFd,
    /// Operations submitted and not yet finished (multishot ones count once).
    pub in_flight: usize,
    messages: Box<[Message]>,
    messages_used: usize,
    /// Queues of closed connections whose send is still in flight, by tag.
    parked: HashMap<u64, VecDeque<Bytes>>,
    pub accept_armed: bool,
    accept_wanted: bool,
    /// The next connection's generation.
    next_generation: u16,
}

impl UringIo {
    pub fn new(ring: IoUring, listener: RawFd) -> UringIo {
        let messages = (0..MSG_SLOTS).map(|_| Message::empty()).collect();
        UringIo {
            ring,
            listener,
            in_flight: 0,
            messages,
            messages_used: 0,
            parked: HashMap::new(),
            accept_armed: false,
            accept_wanted: true,
            next_generation: 0,
        }
    }

    pub fn new_socket(&mut self, fd: RawFd) -> Socket {
        self.next_generation = self.next_generation.wrapping_add(1);
        Socket {
            fd,
            generation: self.next_generation,
            state: State::default(),
        }
    }

    /// Queue one entry; submit first if the submission queue is full.
    pub fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry's buffers outlive its completion: recv
            // buffers belong to the buffer ring, send buffers to a queue or
            // `parked`, sendmsg headers to `messages` until the submit.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.in_flight += 1;
                if self.ring.submission().len() >= SUBMIT_EVERY {
                    self.submit();
                }
                return;
            }
            self.submit();
        }
    }

    /// Submit what is queued without waiting.
    pub fn submit(&mut self) {
        if let Err(error) = self.ring.submit() {
            // EBUSY: completions must be reaped first; the loop does so next.
            if error.raw_os_error() != Some(libc::EBUSY) {
                eprintln!("io_uring submit failed: {error}");
            }
        }
        self.submitted();
    }

    /// The kernel has copied every queued sendmsg header.
    pub fn submitted(&mut self) {
        if self.ring.submission().is_empty() {
            self.messages_used = 0;
        }
    }

    pub fn arm_accept(&mut self) {
        let accept = opcode::AcceptMulti::new(types::Fd(self.listener))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Tag::ACCEPT.encode());
        self.push(accept);
        self.accept_armed = true;
    }

    /// The multishot accept ended: arm it again unless accepting is paused.
    pub fn accept_ended(&mut self) {
        self.accept_armed = false;
        if self.accept_wanted {
            self.arm_accept();
        }
    }

    /// Take input the connection's way: stream a talker, watch the rest.
    pub fn listen(&mut self, key: usize, socket: &mut Socket) {
        if socket.state.has(State::TALKER) {
            if !socket.state.has(State::STREAMING) {
                self.stream(key, socket);
            }
        } else if !socket.state.has(State::WATCHING) {
            self.watch(key, socket);
        }
    }

    /// The connection spoke again: stream its input from now on. The poll
    /// is cancelled; until its last completion comes, it is ignored.
    pub fn promote(&mut self, key: usize, socket: &mut Socket) {
        socket.state.set(State::TALKER, true);
        if socket.state.has(State::WATCHING) && !socket.state.has(State::WATCH_CANCELLING) {
            self.cancel(socket.tag(Op::Poll, key));
            socket.state.set(State::WATCH_CANCELLING, true);
        }
        self.stream(key, socket);
    }

    /// A multishot recv: every read of the connection completes on its own.
    pub fn stream(&mut self, key: usize, socket: &mut Socket) {
        let recv = opcode::RecvMulti::new(types::Fd(socket.fd), super::buffers::GROUP)
            .build()
            .user_data(socket.tag(Op::Stream, key));
        self.push(recv);
        socket.state.set(State::STREAMING, true);
    }

    /// Watch the connection for input: a multishot poll, which costs the
    /// kernel one request per idle connection and nothing else.
    pub fn watch(&mut self, key: usize, socket: &mut Socket) {
        let events = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let poll = opcode::PollAdd::new(types::Fd(socket.fd), events)
            .multi(true)
            .build()
            .user_data(socket.tag(Op::Poll, key));
        self.push(poll);
        socket.state.set(State::WATCHING, true);
    }

    /// Read what is waiting, into a buffer the kernel picks from the ring.
    /// MSG_DONTWAIT: a recv that finds nothing ends with EAGAIN instead of
    /// waiting (and holding kernel memory) until data comes.
    pub fn read(&mut self, key: usize, socket: &mut Socket) {
        if socket.state.has(State::READING) {
            socket.state.set(State::READ_AGAIN, true);
            return;
        }
        let recv = opcode::Recv::new(types::Fd(socket.fd), std::ptr::null_mut(), 0)
            .buf_group(super::buffers::GROUP)
            .flags(libc::MSG_DONTWAIT)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(socket.tag(Op::Recv, key));
        self.push(recv);
        socket.state.set(State::READING, true);
    }

    /// A connection accepted while the shard stops: close it unseen.
    pub fn close_unadmitted(&mut self, socket: Socket) {
        let close = opcode::Close::new(types::Fd(socket.fd))
            .build()
            .user_data(Tag::HOUSEKEEPING.encode());
        self.push(close);
    }

    pub fn cancel(&mut self, user_data: u64) {
        let cancel = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(Tag::HOUSEKEEPING.encode());
        self.push(cancel);
    }

    /// The send tagged `user_data` finished for a connection that is gone:
    /// its buffers may go now.
    pub fn release_parked(&mut self, user_data: u64) {
        self.parked.remove(&user_data);
    }

    fn send_one(&mut self, socket: &Socket, key: usize, buffer: &Bytes) -> squeue::Entry {
        let len = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
        opcode::Send::new(types::Fd(socket.fd), buffer.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(socket.tag(Op::Send, key))
    }

    /// A free sendmsg header, submitting what waits first if all are taken;
    /// none if that submit could not go through.
    fn message_slot(&mut self) -> Option<usize> {
        if self.messages_used == self.messages.len() {
            self.submit();
        }
        let slot = self.messages_used;
        (slot < self.messages.len()).then(|| {
            self.messages_used += 1;
            slot
        })
    }

    fn send_many(
        &mut self,
        slot: usize,
        socket: &Socket,
        key: usize,
        buffers: &[Bytes],
    ) -> squeue::Entry {
        let message = &mut self.messages[slot];
        for (iovec, buffer) in message.iovecs.iter_mut().zip(buffers) {
            iovec.iov_base = buffer.as_ptr() as *mut libc::c_void;
            iovec.iov_len = buffer.len();
        }
        message.header.msg_iov = message.iovecs.as_mut_ptr();
        message.header.msg_iovlen = buffers.len();
        opcode::SendMsg::new(types::Fd(socket.fd), &message.header)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(socket.tag(Op::Send, key))
    }
}

impl Io for UringIo {
    type Socket = Socket;

    fn write_now<T: AsRef<[u8]>>(&mut self, _: &Socket, _: &[T]) -> io::Result<usize> {
        Ok(0)
    }

    fn send_queue(
        &mut self,
        key: usize,
        socket: &mut Socket,
        queue: &[Bytes],
    ) -> io::Result<QueuedSend> {
        // Room first: a submit between filling a sendmsg header and pushing
        // its entry would free the header for reuse while the entry waits.
        if self.ring.submission().is_full() {
            self.submit();
        }
        let many = queue.len().min(MAX_IOVECS);
        let slot = if many > 1 { self.message_slot() } else { None };
        let (entry, buffers) = match slot {
            Some(slot) => (self.send_many(slot, socket, key, &queue[..many]), many),
            // One buffer, or no header free: send the front buffer alone.
            None => (self.send_one(socket, key, &queue[0]), 1),
        };
        self.push(entry);
        socket.state.set(State::SENDING, true);
        Ok(QueuedSend::Submitted { buffers })
    }

    /// Shut the write side now, with a plain system call. Not as a ring
    /// operation: IORING_OP_SHUTDOWN always runs on an io-wq worker, which
    /// looks the fd number up only when it runs — if the peer hung up and
    /// the close (which runs inline) freed the number first, the next
    /// accepted connection had it, and the shutdown cut *that* connection's
    /// write side: its client saw EOF before its response (found here by
    /// admission tests: about 1 refused client in 300 when each hung up as
    /// soon as it had read the response).
    fn shutdown_write(&mut self, socket: &Socket) {
        // SAFETY (via syscall!): shutdown on an fd this connection owns;
        // an error (the peer already gone) needs no handling.
        let _ = syscall!(shutdown(socket.fd, libc::SHUT_WR));
    }

    fn close(&mut self, key: usize, socket: Socket, unsent: VecDeque<Bytes>) {
        // In order on the ring: stop watching, stop a send stuck on a full
        // socket (one that can go out goes out when it is issued, before
        // this), then close the fd; the socket is freed once no operation
        // holds it. A one-shot recv never waits, so it needs no cancel.
        if socket.state.has(State::WATCHING) {
            self.cancel(socket.tag(Op::Poll, key));
        }
        if socket.state.has(State::STREAMING) {
            self.cancel(socket.tag(Op::Stream, key));
        }
        if socket.state.has(State::SENDING) {
            let tag = socket.tag(Op::Send, key);
            self.parked.insert(tag, unsent);
            self.cancel(tag);
        }
        self.close_unadmitted(socket);
    }

    fn pause_reading(&mut self, key: usize, socket: &mut Socket) {
        if socket.state.has(State::WATCHING) && !socket.state.has(State::WATCH_CANCELLING) {
            self.cancel(socket.tag(Op::Poll, key));
            socket.state.set(State::WATCH_CANCELLING, true);
        }
        if socket.state.has(State::STREAMING) && !socket.state.has(State::STREAM_CANCELLING) {
            self.cancel(socket.tag(Op::Stream, key));
            socket.state.set(State::STREAM_CANCELLING, true);
        }
    }

    fn resume_reading(&mut self, key: usize, socket: &mut Socket) {
        // A poll or recv being cancelled is armed again when its last
        // completion arrives (the loop asks the core whether input is
        // wanted). A new one reports input already waiting at once.
        self.listen(key, socket);
    }

    fn pause_accepting(&mut self) {
        self.accept_wanted = false;
        if self.accept_armed {
            self.cancel(Tag::ACCEPT.encode());
        }
    }

    fn resume_accepting(&mut self) {
        self.accept_wanted = true;
        if !self.accept_armed {
            self.arm_accept();
        }
    }
}
