//! Kernel TLS (`TCP_ULP "tls"`): whether this kernel offers it. Where it
//! does, the record layer could move into the kernel; where it does not
//! (this machine: the `tls` module is neither loaded nor loadable, and
//! `net.ipv4.tcp_available_ulp` lists only mptcp), fanout's own compact
//! record layer runs in the shard. The server asks the kernel itself — it
//! sets the ULP on a loopback connection of its own, which would load the
//! module on demand — and says what it found on its `tls` line and in its
//! stats (`tls_kernel`).

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};

const AVAILABLE_ULP: &str = "/proc/sys/net/ipv4/tcp_available_ulp";

/// What the kernel said, as the stats report it. fanout seals records in
/// user space either way: it does not hand keys to the kernel yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KernelTls {
    /// The kernel refused the `tls` ULP: records are sealed in the shard.
    Unavailable,
    /// The kernel took the `tls` ULP; fanout still seals in the shard.
    OfferedUnused,
}

/// The probe's verdict and its evidence, in words.
pub struct Probe {
    pub kernel: KernelTls,
    pub evidence: String,
}

impl Probe {
    /// Where established connections' records are sealed, in the words of
    /// the server's `tls` line.
    pub fn describe(&self) -> String {
        match self.kernel {
            KernelTls::Unavailable => format!(
                "records sealed in user space (kernel TLS unavailable: {})",
                self.evidence
            ),
            KernelTls::OfferedUnused => format!(
                "records sealed in user space (this kernel offers kernel TLS: {}; fanout does not use it yet)",
                self.evidence
            ),
        }
    }
}

/// Ask this kernel for the `tls` ULP on a loopback connection of our own.
pub fn probe() -> Probe {
    let ulps = fs::read_to_string(AVAILABLE_ULP).unwrap_or_default();
    verdict(try_tls_ulp(), ulps.trim())
}

/// The verdict from the setsockopt's result and tcp_available_ulp.
fn verdict(attempt: io::Result<()>, ulps: &str) -> Probe {
    match attempt {
        Ok(()) => Probe {
            kernel: KernelTls::OfferedUnused,
            evidence: format!("TCP_ULP \"tls\" accepted, tcp_available_ulp {ulps:?}"),
        },
        Err(error) => Probe {
            kernel: KernelTls::Unavailable,
            evidence: format!("TCP_ULP \"tls\" refused ({error}), tcp_available_ulp {ulps:?}"),
        },
    }
}

/// setsockopt(TCP_ULP, "tls") on one end of a fresh loopback connection
/// (the ULP needs an established socket). Both ends close on return.
fn try_tls_ulp() -> io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?;
    let name = b"tls";
    // SAFETY: the fd is open for the whole call (`client` lives until the
    // end of the function) and the option value is `name`'s 3 bytes, whose
    // length is passed with it.
    let result = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    match result {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_ulp_means_user_space_and_says_why() {
        let refused = io::Error::from_raw_os_error(libc::ENOENT);
        let probe = verdict(Err(refused), "mptcp");
        assert_eq!(probe.kernel, KernelTls::Unavailable);
        let line = probe.describe();
        assert!(
            line.contains("kernel TLS unavailable")
                && line.contains("No such file or directory")
                && line.contains("\"mptcp\""),
            "{line}"
        );
        let probe = verdict(Ok(()), "mptcp tls");
        assert_eq!(probe.kernel, KernelTls::OfferedUnused);
        assert!(probe.describe().contains("does not use it yet"));
    }

    /// The probe asks the kernel, and agrees with what the kernel lists:
    /// where `tls` is not among the ULPs and cannot be loaded (here), it is
    /// refused and the server falls back to sealing in user space.
    #[test]
    fn the_probe_agrees_with_the_kernel() {
        let probe = probe();
        let listed = fs::read_to_string(AVAILABLE_ULP).unwrap_or_default();
        let listed = listed.split_whitespace().any(|ulp| ulp == "tls");
        if listed {
            assert_eq!(probe.kernel, KernelTls::OfferedUnused, "{}", probe.evidence);
        }
        if probe.kernel == KernelTls::Unavailable {
            assert!(!listed);
            assert!(probe.evidence.contains("refused"), "{}", probe.evidence);
        }
    }
}
