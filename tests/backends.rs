//! What happens when a backend cannot run: a kernel without io_uring is
//! simulated exactly, with a seccomp filter that makes io_uring_setup fail
//! with ENOSYS in the child, as on a kernel built without it.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// io_uring_setup's number, the same on every architecture (since 5.1).
const SYS_IO_URING_SETUP: u32 = 425;

/// Run `fanout ARGS` with io_uring_setup failing with ENOSYS.
fn fanout_without_io_uring(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
    command.args(args);
    // SAFETY: only prctl calls between fork and exec, on data that lives
    // in this closure.
    unsafe {
        command.pre_exec(|| {
            let filter = [
                // A = seccomp_data.nr
                libc::sock_filter {
                    code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                libc::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 1,
                    k: SYS_IO_URING_SETUP,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ALLOW,
                },
            ];
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("fanout runs")
}

#[test]
fn serve_on_a_kernel_without_io_uring_is_a_usage_error_naming_what_is_missing() {
    for backend in ["uring", "tokio-uring"] {
        let output =
            fanout_without_io_uring(&["serve", "--backend", backend, "--listen", "127.0.0.1:0"]);
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("the {backend} backend cannot run here"))
                && stderr.contains("io_uring_setup")
                && stderr.contains("Function not implemented"),
            "{stderr}"
        );
    }
    // epoll and the tokio runtimes need none of it.
    for backend in ["epoll", "tokio", "tokio-tpc"] {
        let output =
            fanout_without_io_uring(&["serve", "--backend", backend, "--listen", "nowhere"]);
        assert!(!String::from_utf8_lossy(&output.stderr).contains("uring"));
    }
}

#[test]
fn bench_refuses_a_backend_the_kernel_cannot_run_before_anything_starts() {
    let output = fanout_without_io_uring(&["bench", "--backends", "epoll,uring", "--no-write"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the uring backend cannot run here"),
        "{stderr}"
    );
    assert!(!stderr.contains("[1/"), "no phase ran: {stderr}");
}
