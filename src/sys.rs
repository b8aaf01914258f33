//! The few raw Linux calls fanout needs that no crate wraps: file-descriptor
//! limits, private fd tables and a socket's TCP_INFO. Every libc call goes through [`syscall!`],
//! which turns `-1` into `io::Error::last_os_error()`.

use std::io;

/// Call a libc function, mapping a `-1` return to the thread's `errno`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each caller passes arguments that are valid for `$fn` as
        // documented in its man page; see the call sites.
        let result = unsafe { libc::$fn($($arg),*) };
        if result == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(result)
        }
    }};
}

/// The soft RLIMIT_NOFILE: how many fds one fd table may hold.
pub fn nofile_limit() -> io::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY (via syscall!): `limit` is a valid, writable rlimit.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut limit))?;
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// Give the calling thread a private copy of the fd table, with room for
/// another RLIMIT_NOFILE descriptors. Fds opened before the call stay valid in
/// both tables (same open files); fds opened after exist only in this one.
pub fn unshare_fd_table() -> io::Result<()> {
    // SAFETY (via syscall!): CLONE_FILES only affects this thread's fd table.
    syscall!(unshare(libc::CLONE_FILES))?;
    Ok(())
}

/// How many fds the calling thread's table holds now. `/proc/self/fd` would
/// show the main thread's table, which differs once a thread has unshared.
pub fn open_fds_in_this_table() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/thread-self/fd")?.count())
}

/// Is this the error of a full fd table (or a kernel out of file structures)?
pub fn is_fd_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// How many segments the kernel has sent again on this TCP socket
/// (TCP_INFO's `tcpi_total_retrans`): a SYN or request it had to resend
/// shows here.
pub fn total_retransmits(socket: &impl std::os::fd::AsRawFd) -> io::Result<u32> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY (via syscall!): `info` is writable for `len` bytes and `len`
    // says so; the kernel writes at most that much.
    syscall!(getsockopt(
        socket.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        (&mut info as *mut libc::tcp_info).cast(),
        &mut len,
    ))?;
    Ok(info.tcpi_total_retrans)
}

/// This process's resident set size in bytes (VmRSS).
pub fn resident_bytes() -> io::Result<u64> {
    resident_bytes_of("self")
}

/// The resident set size of process `pid` (a number, or `self`), in bytes.
pub fn resident_bytes_of(pid: &str) -> io::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let kib = proc_kib(&path, "VmRSS")?
        .ok_or_else(|| io::Error::other(format!("no VmRSS line in {path}")))?;
    Ok(kib * 1024)
}

/// A `Name:   1234 kB` field of a /proc file (status, meminfo), in KiB.
pub fn proc_kib(path: &str, field: &str) -> io::Result<Option<u64>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok()))
}

/// A CLOCK_MONOTONIC timerfd: a wake-up at an exact nanosecond, which an
/// event loop can wait on like a socket (epoll_wait's own timeout is whole
/// milliseconds, too coarse to pace sends).
pub struct TimerFd {
    fd: std::os::fd::OwnedFd,
}

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY (via syscall!): plain flags; the result is a new fd we own.
        let fd = syscall!(timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC
        ))?;
        // SAFETY: `fd` was just returned by timerfd_create and nothing else owns it.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(TimerFd { fd })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    /// Fire once at `at_ns` on CLOCK_MONOTONIC (at once if that has passed).
    pub fn arm_at(&self, at_ns: u64) -> io::Result<()> {
        let at_ns = at_ns.max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY (via syscall!): valid fd and itimerspec; the old value is not wanted.
        syscall!(timerfd_settime(
            self.raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut()
        ))?;
        Ok(())
    }

    /// Clear a fired timer so the next arming can fire again.
    pub fn clear(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY (via syscall!): reading 8 bytes into an 8-byte buffer; EAGAIN is fine.
        let _ = syscall!(read(
            self.raw_fd(),
            expirations.as_mut_ptr() as *mut libc::c_void,
            8
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Does any fd of the calling thread's table point at `path`?
    fn table_holds(path: &std::path::Path) -> bool {
        std::fs::read_dir("/proc/thread-self/fd")
            .unwrap()
            .flatten()
            .any(|entry| std::fs::read_link(entry.path()).is_ok_and(|target| target == path))
    }

    #[test]
    fn unshared_thread_has_its_own_table() {
        assert!(nofile_limit().unwrap() > 0);
        let path = std::env::temp_dir().join(format!("fanout-unshare-{}", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        let path = path.canonicalize().unwrap();
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let (checked_tx, checked_rx) = std::sync::mpsc::channel::<()>();
        let thread_path = path.clone();
        let thread = std::thread::spawn(move || {
            unshare_fd_table().unwrap();
            let file = std::fs::File::open(&thread_path).unwrap();
            opened_tx.send(table_holds(&thread_path)).unwrap();
            // Keep the file open until the main thread has looked.
            checked_rx.recv().unwrap();
            drop(file);
        });
        let seen_by_opener = opened_rx.recv().unwrap();
        let seen_by_main = table_holds(&path);
        checked_tx.send(()).unwrap();
        thread.join().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(seen_by_opener, "the opening thread's table holds its file");
        assert!(
            !seen_by_main,
            "the main table must not hold the thread's file"
        );
    }

    #[test]
    fn resident_bytes_is_plausible() {
        let rss = resident_bytes().unwrap();
        assert!(rss > 1 << 20, "rss {rss}");
    }
}
