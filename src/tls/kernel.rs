//! Kernel TLS (`TCP_ULP "tls"`): whether this kernel offers it. Where it
//! does, the record layer could move into the kernel; where it does not
//! (this machine: `net.ipv4.tcp_available_ulp` lists only mptcp), fanout's
//! own compact record layer runs in the shard, and the server says which.

use std::fs;

const AVAILABLE_ULP: &str = "/proc/sys/net/ipv4/tcp_available_ulp";

/// Where established connections' records are sealed, in the words of the
/// server's `tls` line, given the content of tcp_available_ulp. fanout
/// seals them in user space either way: it does not hand keys to the
/// kernel yet, and says so where the kernel could take them.
pub fn describe(ulps: &str) -> String {
    let ulps = ulps.trim();
    match offers_tls(ulps) {
        true => format!(
            "records sealed in user space (this kernel offers kernel TLS, tcp_available_ulp {ulps:?}; fanout does not use it yet)"
        ),
        false => format!(
            "records sealed in user space (kernel TLS unavailable: tcp_available_ulp is {ulps:?})"
        ),
    }
}

/// Whether `ulps` (the content of tcp_available_ulp) includes "tls".
pub fn offers_tls(ulps: &str) -> bool {
    ulps.split_whitespace().any(|ulp| ulp == "tls")
}

/// Probe this kernel: [`describe`] of its tcp_available_ulp.
pub fn probe() -> String {
    describe(&fs::read_to_string(AVAILABLE_ULP).unwrap_or_default())
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

    #[test]
    fn the_line_says_whether_the_kernel_could_take_the_records() {
        assert!(describe("mptcp\n").contains("unavailable: tcp_available_ulp is \"mptcp\""));
        let offered = describe("mptcp tls");
        assert!(
            offered.contains("offers kernel TLS") && !offered.contains("unavailable"),
            "{offered}"
        );
    }
}
