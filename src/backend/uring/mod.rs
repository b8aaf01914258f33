//! The io_uring backend: one ring per shard, no runtime. A multishot accept
//! on the shard's listener; per connection a multishot poll and a recv of
//! what is waiting when it fires, or, once the connection keeps talking, a
//! multishot recv (see `io::Socket`); reads land in buffers of one provided
//! buffer ring (no connection owns a receive buffer); sends are queued as
//! entries and submitted in batches. The
//! ring is made by the shard thread itself, after it took its private fd
//! table, so its accepted fds land in that table, as epoll's do; only the
//! waker (an eventfd) is made before, for every shard to reach.
//!
//! It turns completions into core events and core actions into entries;
//! the shard core decides everything else (see the contract in
//! `backend/mod.rs`).

mod buffers;
mod io;
mod ops;

use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, opcode, types, IoUring};

use crate::chunked_slab::ChunkedSlab;
use crate::server::core::{Conn, Core};
use crate::server::hub::Wake;
use crate::server::stats::bump;
use crate::server::{FdUse, ShardSetup};
use buffers::BufferRing;
use io::UringIo;
pub use io::{Socket, State};
use ops::{Op, Tag};

/// Submission queue entries. The queue is submitted every
/// `io::SUBMIT_EVERY` (64) entries, so it never holds many more. The rings
/// are mapped into the process in full, resident from the start, and a
/// shard's fixed cost multiplies with the shards (52 of them at 1M here):
/// 4,096 SQEs and 16,384 CQEs were 530 KiB a shard, 128 and 1,024 are 28 KiB.
const SQ_ENTRIES: u32 = 128;
/// Completions copied out of the ring and handled at a time (the copy's
/// buffer stays at this size: 4 KiB, not the whole queue's 16).
const COMPLETION_BATCH: usize = 256;
/// Completion queue entries: more completions than this between two reaps
/// wait in the kernel's overflow list (IORING_FEAT_NODROP), none is lost.
const CQ_ENTRIES: u32 = 8 * SQ_ENTRIES;
/// Receive buffers per shard at most, those given to the kernel at first,
/// and their size: 16 KiB per shard while the traffic needs no more, up to
/// 1 MiB (see `buffers`). Running out ends a recv with ENOBUFS; it is
/// issued again, the data still in the socket, and the shard gives more.
const BUFFERS: u16 = 256;
const FIRST_BUFFERS: u16 = 4;
const BUFFER_SIZE: usize = 4096;
/// How long a stopping shard waits for its operations to finish.
const DRAIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// The waker (an eventfd) is made in the main thread before shards unshare;
/// the ring and the listener, by the shard.
pub const FD_USE: FdUse = FdUse {
    in_every_table: 1,
    own: 2,
};

/// Bytes one connection takes in the core's slab: a slot holds a `Conn`
/// or, when free, the next free slot's index.
pub const SLOT_BYTES: usize = ChunkedSlab::<Conn<Socket>>::slot_bytes();

/// Made in the main thread: the shard's waker.
pub struct Prepared {
    waker: Arc<OwnedFd>,
}

struct EventFd(Arc<OwnedFd>);

impl Wake for EventFd {
    fn wake(&self) -> std::io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY (via syscall!): writing 8 bytes from an 8-byte buffer to an eventfd.
        syscall!(write(self.0.as_raw_fd(), one.as_ptr().cast(), 8)).map(drop)
    }
}

pub fn prepare() -> std::io::Result<(Prepared, Box<dyn Wake>)> {
    // SAFETY (via syscall!): plain flags; the result is a new fd we own.
    let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
    // SAFETY: `fd` was just created and is owned by nothing else.
    let waker = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok((
        Prepared {
            waker: waker.clone(),
        },
        Box::new(EventFd(waker)),
    ))
}

/// A ring with the setup every shard uses.
fn new_ring() -> std::io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_submit_all()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)
}

/// Whether this kernel has everything the backend uses; the error names
/// what is missing.
pub fn probe() -> Result<(), String> {
    let ring = new_ring().map_err(|error| {
        format!("io_uring_setup with SINGLE_ISSUER and DEFER_TASKRUN failed ({error}): io_uring is missing, disabled (sysctl kernel.io_uring_disabled), or the kernel is older than 6.1")
    })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|error| format!("IORING_REGISTER_PROBE failed: {error}"))?;
    let opcodes = [
        (opcode::AcceptMulti::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::Close::CODE, "CLOSE"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
    ];
    let missing: Vec<&str> = opcodes
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing opcodes: {}", missing.join(", ")));
    }
    let params = ring.params();
    if !params.is_feature_submit_stable() || !params.is_feature_nodrop() {
        return Err("missing features: IORING_FEAT_SUBMIT_STABLE and IORING_FEAT_NODROP".into());
    }
    BufferRing::register(&ring, 2, 2, 64).map_err(|error| {
        format!("provided buffer rings (IORING_REGISTER_PBUF_RING) failed: {error}")
    })?;
    Ok(())
}

pub fn run(prepared: Prepared, listener: TcpListener, setup: ShardSetup) -> std::io::Result<()> {
    let ring = new_ring()?;
    let buffers = BufferRing::register(&ring, BUFFERS, FIRST_BUFFERS, BUFFER_SIZE)?;
    let mut shard = Shard {
        io: UringIo::new(ring, listener.as_raw_fd()),
        buffers,
        core: Core::new(setup.id, setup.conn_limit, setup.settings, setup.hub),
        waker: prepared.waker,
        completions: Vec::new(),
        _listener: listener,
    };
    let bytes = shard.buffers.provided_bytes();
    shard
        .core
        .counters()
        .recv_buffer_bytes
        .store(bytes, Relaxed);
    shard.io.arm_accept();
    shard.arm_waker();
    shard.run()
}

/// Fields drop in order: the ring goes before the memory it may use.
struct Shard {
    io: UringIo,
    buffers: BufferRing,
    core: Core<Socket>,
    waker: Arc<OwnedFd>,
    /// One batch of completions, copied out of the ring.
    completions: Vec<(u64, i32, u32)>,
    _listener: TcpListener,
}

impl Shard {
    fn run(&mut self) -> std::io::Result<()> {
        while !self.core.finished() {
            self.wait()?;
            bump(&self.core.counters().wakeups);
            self.reap();
            // Here, and only here, every received byte has been handled:
            // reap ends with nothing left to submit and no completion
            // waiting, and the core has not queued new reads yet.
            self.buffers.release_if_due(Instant::now());
            self.core.end_turn(&mut self.io);
        }
        self.core.close_all(&mut self.io);
        self.drain();
        Ok(())
    }

    /// Submit the turn's entries and wait for a completion or the core's
    /// next deadline.
    fn wait(&mut self) -> std::io::Result<()> {
        let submitter = self.io.ring.submitter();
        let wake = [self.core.next_wake(), self.buffers.release_due()]
            .into_iter()
            .flatten()
            .min();
        let result = match wake {
            Some(at) => {
                let timeout = types::Timespec::from(at.saturating_duration_since(Instant::now()));
                let args = types::SubmitArgs::new().timespec(&timeout);
                submitter.submit_with_args(1, &args)
            }
            None => submitter.submit_and_wait(1),
        };
        self.io.submitted();
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Handle every completion there is, batch by batch. What a batch
    /// queued (recvs of input its polls announced, replies) is submitted
    /// before the next: a recv of waiting input completes inside the submit,
    /// so its bytes are handled in this same turn.
    fn reap(&mut self) {
        loop {
            if !self.io.ring.submission().is_empty() {
                self.io.submit();
            }
            self.completions.clear();
            self.completions.extend(
                self.io
                    .ring
                    .completion()
                    .take(COMPLETION_BATCH)
                    .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
            );
            if self.completions.is_empty() {
                return;
            }
            let batch = std::mem::take(&mut self.completions);
            for &(user_data, result, flags) in &batch {
                self.complete(user_data, result, flags);
            }
            self.completions = batch;
            self.buffers.publish();
        }
    }

    fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        let Some(tag) = Tag::decode(user_data) else {
            return;
        };
        let more = cqueue::more(flags);
        if !more {
            self.io.in_flight -= 1;
        }
        match tag.op {
            Op::Accept => self.accepted(result, more),
            Op::Wake => self.woken(more),
            Op::Poll => self.readable(tag, result, more),
            Op::Recv => self.received(tag, result, flags),
            Op::Stream => self.streamed(tag, result, flags, more),
            Op::Send => self.sent(tag, user_data, result),
            Op::Housekeeping => {}
        }
    }

    fn accepted(&mut self, result: i32, more: bool) {
        if result >= 0 {
            let socket = self.io.new_socket(result);
            if self.core.leaving() {
                self.io.close_unadmitted(socket);
            } else {
                let key = self.core.admit(socket);
                let socket = self.core.socket_mut(key).expect("just admitted");
                self.io.listen(key, socket);
                self.core.accepting(&mut self.io);
            }
        } else {
            let error = std::io::Error::from_raw_os_error(-result);
            self.core.accept_failed(&mut self.io, &error);
        }
        if !more {
            self.io.accept_ended();
        }
    }

    /// The poll says input is waiting (or it ended): read it, if wanted.
    fn readable(&mut self, tag: Tag, result: i32, more: bool) {
        let key = tag.key();
        let wanted = self.core.wants_input(key);
        let Some(socket) = current(&mut self.core, tag) else {
            return;
        };
        if !more {
            socket.state.set(State::WATCHING, false);
            socket.state.set(State::WATCH_CANCELLING, false);
        }
        if socket.state.has(State::TALKER) {
            return; // its stream reads; this poll is on its way out
        }
        if result < 0 && result != -libc::ECANCELED {
            return self.core.failed(&mut self.io, key);
        }
        let hung_up = (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as i32;
        if result > 0 && result & hung_up != 0 {
            socket.state.set(State::TO_EOF, true);
        }
        if wanted && result > 0 {
            self.io.read(key, socket);
        }
        if !more && wanted {
            self.io.watch(key, socket);
        }
    }

    /// Hand a recv's bytes (if it has any) to the core and give its buffer
    /// back; end the connection on EOF or on an error other than the
    /// `harmless` ones. Returns whether the recv's connection is still there
    /// and its input goes on.
    fn deliver(&mut self, tag: Tag, result: i32, flags: u32, harmless: [i32; 2]) -> bool {
        if result == -libc::ENOBUFS {
            bump(&self.core.counters().recv_buffer_shortages);
            if self.buffers.grow() {
                let bytes = self.buffers.provided_bytes();
                self.core.counters().recv_buffer_bytes.store(bytes, Relaxed);
            }
        }
        let is_current = current(&mut self.core, tag).is_some();
        if let Some(id) = cqueue::buffer_select(flags) {
            if is_current && result > 0 {
                // SAFETY: the kernel handed us buffer `id` with this
                // completion; it goes back to the ring just below.
                let data = unsafe { self.buffers.get(id, result as usize) };
                self.core.received(&mut self.io, tag.key(), data);
            }
            self.buffers.push(id);
        }
        if !is_current {
            return false;
        }
        let failed = result < 0 && !harmless.contains(&-result);
        if result == 0 || failed {
            if current(&mut self.core, tag).is_some() {
                match failed {
                    true => self.core.failed(&mut self.io, tag.key()),
                    false => self.core.hung_up(&mut self.io, tag.key()), // EOF
                }
            }
            return false;
        }
        true
    }

    /// A recv finished: run the core over its bytes, then read again if
    /// more may be waiting.
    fn received(&mut self, tag: Tag, result: i32, flags: u32) {
        let key = tag.key();
        if !self.deliver(tag, result, flags, [libc::EAGAIN, libc::ENOBUFS]) {
            return;
        }
        let wanted = self.core.wants_input(key);
        let Some(socket) = current(&mut self.core, tag) else {
            return; // closed by what it sent
        };
        socket.state.set(State::READING, false);
        if result > 0 && socket.state.has(State::SPOKE) {
            // Input again after the first: stream from now on (the stream
            // reads whatever is waiting, so no read again here).
            if wanted {
                self.io.promote(key, socket);
            } else {
                socket.state.set(State::TALKER, true);
            }
            return;
        }
        if result > 0 {
            socket.state.set(State::SPOKE, true);
        }
        // A full buffer may have left more behind; input announced meanwhile
        // is still waiting; ENOBUFS left it all in the socket; a peer that
        // hung up sends no further wake-up, so read on to its EOF.
        let again = socket.state.has(State::READ_AGAIN)
            || (socket.state.has(State::TO_EOF) && result != -libc::EAGAIN)
            || result as usize == BUFFER_SIZE
            || result == -libc::ENOBUFS;
        socket.state.set(State::READ_AGAIN, false);
        if again && wanted {
            self.io.read(key, socket);
        }
    }

    /// A talker's multishot recv delivered, or ended.
    fn streamed(&mut self, tag: Tag, result: i32, flags: u32, more: bool) {
        let key = tag.key();
        if !self.deliver(tag, result, flags, [libc::ENOBUFS, libc::ECANCELED]) {
            return;
        }
        if more {
            return;
        }
        let wanted = self.core.wants_input(key);
        let Some(socket) = current(&mut self.core, tag) else {
            return;
        };
        socket.state.set(State::STREAMING, false);
        socket.state.set(State::STREAM_CANCELLING, false);
        if wanted {
            self.io.stream(key, socket);
        }
    }

    fn sent(&mut self, tag: Tag, user_data: u64, result: i32) {
        let Some(socket) = current(&mut self.core, tag) else {
            self.io.release_parked(user_data);
            return;
        };
        socket.state.set(State::SENDING, false);
        let result = if result >= 0 {
            Ok(result as usize)
        } else {
            Err(std::io::Error::from_raw_os_error(-result))
        };
        self.core.sent(&mut self.io, tag.key(), result);
    }

    fn arm_waker(&mut self) {
        let poll = opcode::PollAdd::new(types::Fd(self.waker.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(Tag::WAKE.encode());
        self.io.push(poll);
    }

    /// Another thread woke us: empty the eventfd (the core reads the hub
    /// every turn).
    fn woken(&mut self, more: bool) {
        drain_eventfd(self.waker.as_raw_fd());
        if !more && !self.core.finished() {
            self.arm_waker();
        }
    }

    /// Stopping: cancel the accept and the waker, then wait (a bounded
    /// time) until no operation can still touch our buffers.
    fn drain(&mut self) {
        crate::server::core::Io::pause_accepting(&mut self.io);
        self.io.cancel(Tag::WAKE.encode());
        let deadline = Instant::now() + DRAIN_PATIENCE;
        while self.io.in_flight > 0 {
            if Instant::now() > deadline {
                eprintln!(
                    "shard stopping with {} io_uring operations unfinished after {:?}",
                    self.io.in_flight, DRAIN_PATIENCE
                );
                return;
            }
            let timeout = types::Timespec::from(std::time::Duration::from_millis(50));
            let args = types::SubmitArgs::new().timespec(&timeout);
            let _ = self.io.ring.submitter().submit_with_args(1, &args);
            self.io.submitted();
            self.reap();
        }
    }
}

/// The socket `tag` is about, if it is still the connection it was for.
/// (A function of the core alone, so that `io` can be borrowed beside it.)
fn current(core: &mut Core<Socket>, tag: Tag) -> Option<&mut Socket> {
    core.socket_mut(tag.key())
        .filter(|socket| socket.generation == tag.generation)
}

fn drain_eventfd(fd: RawFd) {
    let mut count = [0u8; 8];
    // SAFETY (via syscall!): reading 8 bytes into an 8-byte buffer; EAGAIN is fine.
    let _ = syscall!(read(fd, count.as_mut_ptr().cast(), 8));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection costs what it costs under epoll: the socket handle
    /// (fd, generation, operation flags) fits where epoll's fd and padding are.
    #[test]
    fn idle_connection_state_is_small() {
        assert_eq!(std::mem::size_of::<Socket>(), 8);
        assert_eq!(std::mem::size_of::<Conn<Socket>>(), 24);
        assert_eq!(SLOT_BYTES, 24);
    }
}
