//! The shard's provided buffer ring (IORING_REGISTER_PBUF_RING): the kernel
//! picks a buffer for each multishot recv completion, so no connection owns
//! a receive buffer. A buffer goes back to the ring as soon as the core has
//! run the session over its bytes (the core copies what it must keep).

use std::alloc::{self, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id of the shard's one ring.
pub const GROUP: u16 = 0;

pub struct BufferRing {
    /// The ring of entries the kernel reads (page-aligned).
    entries: *mut BufRingEntry,
    /// The buffers themselves, `count * size` bytes.
    memory: *mut u8,
    count: u16,
    size: usize,
    /// Our tail: entries handed to the kernel so far (wrapping).
    tail: u16,
}

impl BufferRing {
    /// Allocate `count` buffers (a power of two) of `size` bytes and register them.
    pub fn register(ring: &IoUring, count: u16, size: usize) -> io::Result<BufferRing> {
        assert!(count.is_power_of_two());
        let entries_layout = Self::entries_layout(count);
        let memory_layout = Self::memory_layout(count, size);
        // SAFETY: both layouts have a non-zero size.
        let (entries, memory) = unsafe {
            (
                alloc::alloc_zeroed(entries_layout) as *mut BufRingEntry,
                alloc::alloc(memory_layout),
            )
        };
        if entries.is_null() || memory.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut buffers = BufferRing {
            entries,
            memory,
            count,
            size,
            tail: 0,
        };
        // SAFETY: the entries stay allocated, at this address, until `drop`,
        // which runs after the ring is gone (the shard drops its ring first).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, GROUP, 0)?;
        }
        for id in 0..count {
            buffers.push(id);
        }
        buffers.publish();
        Ok(buffers)
    }

    fn entries_layout(count: u16) -> Layout {
        Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), 4096).unwrap()
    }

    fn memory_layout(count: u16, size: usize) -> Layout {
        Layout::from_size_align(count as usize * size, 4096).unwrap()
    }

    /// The bytes the kernel put in buffer `id`.
    ///
    /// # Safety
    /// `id` came from a completion and has not been given back since, so the
    /// kernel is not writing into it.
    pub unsafe fn get(&mut self, id: u16, len: usize) -> &mut [u8] {
        assert!(id < self.count && len <= self.size);
        // SAFETY: in bounds (checked above); the caller owns the buffer now.
        unsafe { std::slice::from_raw_parts_mut(self.memory.add(id as usize * self.size), len) }
    }

    /// Give buffer `id` back to the kernel (visible at the next [`publish`]).
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
            alloc::dealloc(self.memory, Self::memory_layout(self.count, self.size));
        }
    }
}
