//! The bench payload of docs/protocol.md: sequence number and send time (both u64
//! little-endian), then padding, and the host clock that stamps it.

/// Bytes of the payload header: sequence number + send time.
pub const HEADER_LEN: usize = 16;

/// CLOCK_MONOTONIC in nanoseconds: the clock the payload's send time uses.
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time used by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A payload of `size` bytes (at least the header) for message `seq`.
pub fn encode(seq: u64, sent_ns: u64, size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size.max(HEADER_LEN)];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    payload[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    payload
}

/// The sequence number and send time of a payload, if it has a header.
pub fn decode(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_minimum_size() {
        let payload = encode(7, 123_456_789, 32);
        assert_eq!(payload.len(), 32);
        assert_eq!(decode(&payload), Some((7, 123_456_789)));
        assert_eq!(encode(1, 2, 4).len(), HEADER_LEN);
        assert_eq!(decode(&[0; 15]), None);
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
    }
}
