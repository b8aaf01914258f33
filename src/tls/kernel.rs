//! Kernel TLS (`TCP_ULP "tls"`): whether this kernel offers it. Where it
//! does, the record layer could move into the kernel; where it does not
//! (this machine: `net.ipv4.tcp_available_ulp` lists only mptcp), fanout's
//! own compact record layer runs in the shard, and the server says which.

use std::fs;

const AVAILABLE_ULP: &str = "/proc/sys/net/ipv4/tcp_available_ulp";

/// Where established connections' records are sealed and opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordLayer {
    /// In the shard: this kernel has no TLS ULP (the list it offers).
    UserSpace { kernel_offers: String },
}

impl RecordLayer {
    pub fn describe(&self) -> String {
        match self {
            RecordLayer::UserSpace { kernel_offers } => format!(
                "records sealed in user space (kernel TLS unavailable: tcp_available_ulp is {kernel_offers:?})"
            ),
        }
    }
}

/// Whether `ulps` (the content of tcp_available_ulp) includes "tls".
pub fn offers_tls(ulps: &str) -> bool {
    ulps.split_whitespace().any(|ulp| ulp == "tls")
}

/// Probe this kernel.
pub fn probe() -> RecordLayer {
    let ulps = fs::read_to_string(AVAILABLE_ULP).unwrap_or_default();
    RecordLayer::UserSpace {
        kernel_offers: ulps.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_found_only_as_a_whole_word() {
        assert!(offers_tls("mptcp tls"));
        assert!(!offers_tls("mptcp"));
        assert!(!offers_tls("tlsx"));
    }
}
