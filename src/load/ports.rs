//! Source ports the load generator chooses itself, when the kernel's own
//! choice fails on a machine another tool has just used.
//!
//! connect() picks a port for a socket bound with IP_BIND_ADDRESS_NO_PORT
//! by searching the ephemeral range, and that search skips every port held
//! by an explicitly bound socket, on any address, TIME_WAIT included. A
//! tool that binds its ports (tcpkali does) and closes 24,000 connections
//! leaves 24,000 such ports for a minute: the kernel then finds only the
//! rest, and a second source address does not help. Binding the address
//! and the port ourselves (SO_REUSEADDR, so TIME_WAIT on the same address
//! does not refuse it) works wherever the 4-tuple is free. A shard switches
//! to this the first time the kernel says it has no port; each shard walks
//! its own residue class of the range (port ≡ shard mod shards), so shards
//! never race for a port.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use super::client;
use super::sources;

/// Ports one attempt tries on one address before handing over to the next
/// address.
const TRIES_PER_ATTEMPT: usize = 64;

pub struct ExplicitPorts {
    low: u32,
    shard: u32,
    shards: u32,
    /// Ports of the range in this shard's share.
    share: usize,
    reserved: Vec<(u32, u32)>,
    /// Per source address: the next port (as an index into the share), and
    /// how many tried in a row were taken.
    next: Vec<usize>,
    misses: Vec<usize>,
}

impl ExplicitPorts {
    /// The shard's share of the machine's ephemeral range, minus its
    /// reserved ports, for `sources` addresses.
    pub fn read(shard: usize, shards: usize, sources: usize) -> ExplicitPorts {
        let read = |name: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"));
        let range = sources::port_range(&read("ip_local_port_range").unwrap_or_default());
        let reserved =
            sources::reserved_ranges(&read("ip_local_reserved_ports").unwrap_or_default());
        ExplicitPorts::new(range, reserved, shard, shards, sources)
    }

    fn new(
        (low, high): (u32, u32),
        reserved: Vec<(u32, u32)>,
        shard: usize,
        shards: usize,
        sources: usize,
    ) -> ExplicitPorts {
        let (shard, shards) = (shard as u32, shards.max(1) as u32);
        let ports = high + 1 - low;
        let share = (ports / shards + u32::from(shard < ports % shards)) as usize;
        ExplicitPorts {
            low,
            shard,
            shards,
            share,
            reserved,
            next: vec![0; sources],
            misses: vec![0; sources],
        }
    }

    /// The `k`th port of this shard's share.
    fn port(&self, k: usize) -> u32 {
        self.low + self.shard + k as u32 * self.shards
    }

    /// The next ports of this shard's share to try on source `index`, at
    /// most [`TRIES_PER_ATTEMPT`], none once the whole share was found
    /// taken in a row (until [`ExplicitPorts::forget_misses`]).
    fn candidates(&mut self, index: usize) -> Vec<u16> {
        let mut ports = Vec::new();
        while ports.len() < TRIES_PER_ATTEMPT && self.misses[index] + ports.len() < self.share {
            let port = self.port(self.next[index]);
            self.next[index] = (self.next[index] + 1) % self.share;
            match self.reserved.iter().any(|&(a, b)| (a..=b).contains(&port)) {
                true => self.misses[index] += 1,
                false => ports.push(port as u16),
            }
        }
        ports
    }

    /// Connect from `source` (the `index`th address) on a port of this
    /// shard's share whose 4-tuple toward `server` is free.
    /// EADDRNOTAVAIL when none of the ports tried was.
    pub fn connect(
        &mut self,
        index: usize,
        source: Ipv4Addr,
        server: SocketAddr,
    ) -> io::Result<TcpStream> {
        for port in self.candidates(index) {
            match client::connect_from_port(source, port, server) {
                Ok(socket) => {
                    self.misses[index] = 0;
                    return Ok(socket);
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL)
                    ) =>
                {
                    self.misses[index] += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))
    }

    /// Ports come back as connections close: try every address's whole
    /// share again.
    pub fn forget_misses(&mut self) {
        self.misses.iter_mut().for_each(|m| *m = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_range_without_overlap_and_skip_reserved_ports() {
        let range = (40000, 40009);
        let mut seen = Vec::new();
        for shard in 0..3 {
            let mut ports = ExplicitPorts::new(range, vec![(40004, 40005)], shard, 3, 1);
            seen.extend(ports.candidates(0));
        }
        seen.sort();
        assert_eq!(
            seen,
            [40000, 40001, 40002, 40003, 40006, 40007, 40008, 40009]
        );
    }

    #[test]
    fn a_long_share_is_tried_a_slice_at_a_time_and_again_after_forgetting() {
        let mut ports = ExplicitPorts::new((1024, 1024 + 199), Vec::new(), 0, 1, 2);
        let first = ports.candidates(1);
        assert_eq!(first.len(), TRIES_PER_ATTEMPT);
        assert_eq!(first[0], 1024);
        assert_eq!(
            ports.candidates(0)[0],
            1024,
            "each address has its own cursor"
        );
        ports.misses[1] = 200;
        assert!(ports.candidates(1).is_empty(), "the whole share taken");
        ports.forget_misses();
        assert_eq!(ports.candidates(1)[0], 1024 + TRIES_PER_ATTEMPT as u16);
    }
}
