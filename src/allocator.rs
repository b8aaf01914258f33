//! The allocator's own figures, for memory per connection: jemalloc's
//! allocated and resident bytes, and the thread-cache flush that makes
//! "allocated" mean what it says. jemalloc counts objects parked in a
//! thread's cache as allocated, so before reading, every thread that
//! allocates for the connections (a server's shards, the load generator's
//! shards) flushes its cache on its next turn. One mechanism serves both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Flush requests from one reader to a fixed set of event-loop threads.
#[derive(Debug)]
pub struct CacheFlush {
    requests: AtomicU64,
    /// The last request each thread has carried out.
    done: Vec<AtomicU64>,
}

impl CacheFlush {
    pub fn new(threads: usize) -> CacheFlush {
        CacheFlush {
            requests: AtomicU64::new(0),
            done: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Ask every thread to flush its cache (`wake` nudges them), flush the
    /// calling thread's, and wait up to `patience` until all have.
    /// Returns whether every thread answered.
    pub fn flush_all(&self, patience: Duration, wake: impl Fn()) -> bool {
        let request = self.requests.fetch_add(1, Ordering::AcqRel) + 1;
        wake();
        flush_this_threads_cache();
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if self
                .done
                .iter()
                .all(|d| d.load(Ordering::Acquire) >= request)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Called by thread `thread` every turn: carry out a pending request.
    pub fn serve(&self, thread: usize) {
        let request = self.requests.load(Ordering::Acquire);
        let done = &self.done[thread];
        if done.load(Ordering::Relaxed) < request {
            flush_this_threads_cache();
            done.store(request, Ordering::Release);
        }
    }
}

/// Return the calling thread's cached objects to jemalloc's arenas (turning
/// its thread cache off flushes it; it is turned straight back on).
pub fn flush_this_threads_cache() {
    let name = b"thread.tcache.enabled\0";
    // SAFETY: `thread.tcache.enabled` is a bool mallctl, written with a bool.
    unsafe {
        let _ = tikv_jemalloc_ctl::raw::write(name, false);
        let _ = tikv_jemalloc_ctl::raw::write(name, true);
    }
}

/// Turn the calling thread's cache off for good: what it allocates and
/// frees goes straight to the arenas. For the live page's threads, so that
/// objects cached for them never count in a reading of allocated bytes
/// (the load generator's memory slope flushes only its own threads).
pub fn disable_this_threads_cache() {
    // SAFETY: `thread.tcache.enabled` is a bool mallctl, written with a bool.
    unsafe {
        let _ = tikv_jemalloc_ctl::raw::write(b"thread.tcache.enabled\0", false);
    }
}

/// Return every arena's unused dirty pages to the kernel now, instead of
/// by decay over the next second: then the process's RSS counts what is
/// allocated, not what was freed a moment ago.
pub fn purge_all_arenas() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge", MALLCTL_ARENAS_ALL being 4096.
    let name = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated name of a mallctl that reads and writes
    // nothing, called with null pointers and zero lengths as it requires.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// jemalloc's allocated and resident bytes, refreshed first (its statistics
/// are cached until the epoch advances); zeros when jemalloc does not answer.
pub fn heap_bytes() -> (u64, u64) {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return (0, 0);
    }
    let allocated = stats::allocated::read().unwrap_or(0) as u64;
    let resident = stats::resident::read().unwrap_or(0) as u64;
    (allocated, resident)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_flush_waits_for_every_thread_to_serve_it() {
        let flush = Arc::new(CacheFlush::new(2));
        assert!(!flush.flush_all(Duration::from_millis(20), || {}));
        let servers: Vec<_> = (0..2)
            .map(|i| {
                let flush = flush.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        flush.serve(i);
                        std::thread::sleep(Duration::from_micros(500));
                    }
                })
            })
            .collect();
        assert!(flush.flush_all(Duration::from_secs(10), || {}));
        for s in servers {
            s.join().unwrap();
        }
    }
}
