//! The shard's provided buffer ring (IORING_REGISTER_PBUF_RING): the kernel
//! picks a buffer for each multishot recv completion, so no connection owns
//! a receive buffer. A buffer goes back to the ring as soon as the core has
//! run the session over its bytes (the core copies what it must keep).
//!
//! The ring costs what the traffic needs, not its capacity. The kernel
//! cycles through every buffer it is given, so each one it was ever given
//! ends up resident: a ring handed 256 buffers of 4 KiB held a whole MiB
//! per shard, idle or not, where epoll reads into one scratch buffer. So the
//! buffers' memory is reserved whole (an anonymous mapping, which costs
//! nothing until written) and only a few are given to the kernel at first;
//! a recv that finds none (ENOBUFS: the bytes wait in the socket and the
//! recv is issued again) makes the shard give it as many again, up to the
//! capacity. And a ring that was given many once (a ramp's handshakes
//! arrive hundreds a batch) does not keep them resident: a second after a
//! buffer was first written into, the shard hands every buffer's pages back
//! to the kernel (MADV_DONTNEED) and the next write faults in a fresh page.
//! That is safe because with DEFER_TASKRUN the kernel copies received bytes
//! only inside this shard's own io_uring_enter calls, and the shard
//! releases right after reaping, when nothing is left to submit and every
//! completion (so every buffer written) has been handled. So an idle shard
//! holds no receive buffer at all, and a busy one what the last second used.

use std::alloc::{self, Layout};
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id of the shard's one ring.
pub const GROUP: u16 = 0;
/// How long written buffers stay resident before their pages go back.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

pub struct BufferRing {
    /// The ring of entries the kernel reads (page-aligned).
    entries: *mut BufRingEntry,
    /// The buffers themselves, `count * size` bytes, mapped but untouched
    /// until the kernel writes into one.
    memory: *mut u8,
    /// Buffers the ring can hold, and those given to the kernel so far
    /// (ids `0..provided`).
    count: u16,
    provided: u16,
    size: usize,
    /// Our tail: entries handed to the kernel so far (wrapping).
    tail: u16,
    /// When a buffer was first written into since the pages last went back.
    written_since: Option<Instant>,
}

impl BufferRing {
    /// Reserve `count` buffers (a power of two) of `size` bytes, register
    /// the ring and give the kernel the first `first` of them.
    pub fn register(ring: &IoUring, count: u16, first: u16, size: usize) -> io::Result<BufferRing> {
        assert!(count.is_power_of_two() && first > 0 && first <= count);
        let entries_layout = Self::entries_layout(count);
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { alloc::alloc_zeroed(entries_layout) as *mut BufRingEntry };
        if entries.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let len = count as usize * size;
        let protection = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched. Its failure is MAP_FAILED, checked below.
        let memory = unsafe { libc::mmap(ptr::null_mut(), len, protection, flags, -1, 0) };
        if memory == libc::MAP_FAILED {
            let error = io::Error::last_os_error();
            // SAFETY: allocated just above with this layout.
            unsafe { alloc::dealloc(entries as *mut u8, entries_layout) };
            return Err(error);
        }
        let memory = memory as *mut u8;
        let mut buffers = BufferRing {
            entries,
            memory,
            count,
            provided: 0,
            size,
            tail: 0,
            written_since: None,
        };
        // SAFETY: the entries stay allocated, at this address, until `drop`,
        // which runs after the ring is gone (the shard drops its ring first).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, GROUP, 0)?;
        }
        buffers.provide(first);
        Ok(buffers)
    }

    /// Give the kernel as many buffers again as it has (up to the
    /// capacity), after a recv found none. Returns whether there were more
    /// to give.
    pub fn grow(&mut self) -> bool {
        let more = self.provided.min(self.count - self.provided);
        self.provide(more);
        more > 0
    }

    /// Buffers given to the kernel so far, and their bytes.
    pub fn provided_bytes(&self) -> u64 {
        self.provided as u64 * self.size as u64
    }

    /// When the written buffers' pages are due to go back, if any was written.
    pub fn release_due(&self) -> Option<Instant> {
        self.written_since.map(|at| at + RELEASE_AFTER)
    }

    /// Hand every buffer's pages back to the kernel if they are due. Call
    /// only with nothing left to submit and every completion handled.
    pub fn release_if_due(&mut self, now: Instant) {
        if self.release_due().is_none_or(|due| due > now) {
            return;
        }
        self.written_since = None;
        // SAFETY: our own mapping; no buffer holds bytes not yet handled
        // and the kernel writes none until our next enter (see the
        // module's note); its next write into one faults in a zeroed page.
        unsafe {
            libc::madvise(
                self.memory.cast(),
                self.provided as usize * self.size,
                libc::MADV_DONTNEED,
            );
        }
    }

    fn provide(&mut self, more: u16) {
        for id in self.provided..self.provided + more {
            self.push(id);
        }
        self.provided += more;
        self.publish();
    }

    fn entries_layout(count: u16) -> Layout {
        Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), 4096).unwrap()
    }

    /// The bytes the kernel put in buffer `id`.
    ///
    /// # Safety
    /// `id` came from a completion and has not been given back since, so the
    /// kernel is not writing into it.
    pub unsafe fn get(&mut self, id: u16, len: usize) -> &mut [u8] {
        assert!(id < self.provided && len <= self.size);
        self.written_since.get_or_insert_with(Instant::now);
        // SAFETY: in bounds (checked above); the caller owns the buffer now.
        unsafe { std::slice::from_raw_parts_mut(self.memory.add(id as usize * self.size), len) }
    }

    /// Give buffer `id` (back) to the kernel (visible at the next [`publish`]).
    pub fn push(&mut self, id: u16) {
        let slot = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `slot` < count; the entry is ours until the tail passes it.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(self.memory as u64 + id as u64 * self.size as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every pushed buffer visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: the tail field lives in the first entry, which is ours; the
        // kernel reads it with acquire ordering.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with these layouts; the ring that
        // used them is gone.
        unsafe {
            alloc::dealloc(self.entries as *mut u8, Self::entries_layout(self.count));
            libc::munmap(self.memory.cast(), self.count as usize * self.size);
        }
    }
}
