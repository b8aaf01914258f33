//! The bench payload of docs/protocol.md: sequence number and send time (both u64
//! little-endian), then padding, and the host clock that stamps it. The
//! padding is zeros, or JSON-like text for runs where compression matters
//! (`--payload json`), whose entropy the report states.

use std::sync::OnceLock;

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

/// What fills a payload after its header (`fanout load --payload`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Fill {
    Zeros,
    Json,
}

/// The JSON-like text `json` payloads are cut from: longer than DEFLATE's
/// largest window (32 KiB), so a message never repeats one sent shortly before.
const CORPUS_LEN: usize = 256 * 1024;

/// A payload of `size` bytes (at least the header) for message `seq`.
pub fn encode(seq: u64, sent_ns: u64, size: usize, fill: Fill) -> Vec<u8> {
    let mut payload = vec![0u8; size.max(HEADER_LEN)];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    payload[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    if fill == Fill::Json {
        fill_json(&mut payload[HEADER_LEN..], seq);
    }
    payload
}

/// Text from the corpus, from a place that moves on with `seq` (a prime
/// stride, so consecutive messages are far apart).
fn fill_json(out: &mut [u8], seq: u64) {
    let corpus = corpus();
    let mut at = (seq.wrapping_mul(7_919) as usize) % corpus.len();
    let mut filled = 0;
    while filled < out.len() {
        let take = (out.len() - filled).min(corpus.len() - at);
        out[filled..filled + take].copy_from_slice(&corpus[at..at + take]);
        filled += take;
        at = 0;
    }
}

/// Records like a market or chat feed's: fixed keys, names from small
/// vocabularies, ids and prices that vary. Made once, the same every run.
fn corpus() -> &'static [u8] {
    static CORPUS: OnceLock<Vec<u8>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        const SYMBOLS: [&str; 8] = ["ACME", "GLOBX", "INITECH", "UMBR", "HOOLI", "STARK", "WAYNE", "TYRL"];
        const EVENTS: [&str; 4] = ["trade", "quote", "cancel", "update"];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut text = String::with_capacity(CORPUS_LEN + 256);
        while text.len() < CORPUS_LEN {
            let (a, b, c, d) = (next(), next(), next(), next());
            text.push_str(&format!(
                "{{\"id\":{},\"event\":\"{}\",\"symbol\":\"{}\",\"user\":\"u{}\",\"price\":{}.{:02},\"size\":{}}},",
                a % 10_000_000,
                EVENTS[(b % 4) as usize],
                SYMBOLS[(b >> 8) as usize % 8],
                c % 5_000,
                100 + d % 400,
                (d >> 16) % 100,
                1 + (d >> 32) % 1_000,
            ));
        }
        text.truncate(CORPUS_LEN);
        text.into_bytes()
    })
}

/// What a payload of `size` bytes filled with `fill` is like: its order-0
/// entropy (bits per byte) and the share of its bytes left after DEFLATE
/// (one message alone, zlib's default level, no shared context).
pub fn describe(fill: Fill, size: usize) -> (f64, f64) {
    let sample = encode(12_345, 0x0123_4567_89AB_CDEF, size, fill);
    let mut counts = [0u64; 256];
    sample.iter().for_each(|&b| counts[b as usize] += 1);
    let n = sample.len() as f64;
    let entropy = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    let deflated = crate::protocol::deflate::Deflater::new(15, false).message(&sample);
    (entropy, deflated.len() as f64 / n)
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
        for fill in [Fill::Zeros, Fill::Json] {
            let payload = encode(7, 123_456_789, 32, fill);
            assert_eq!(payload.len(), 32);
            assert_eq!(decode(&payload), Some((7, 123_456_789)));
            assert_eq!(encode(1, 2, 4, fill).len(), HEADER_LEN);
        }
        assert_eq!(decode(&[0; 15]), None);
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
    }

    #[test]
    fn json_payloads_differ_by_message_and_compress_like_text() {
        let a = encode(1, 0, 1024, Fill::Json);
        let b = encode(2, 0, 1024, Fill::Json);
        assert_ne!(a[16..], b[16..]);
        assert!(std::str::from_utf8(&a[16..]).is_ok());
        let (entropy, deflated) = describe(Fill::Json, 1024);
        assert!((3.5..6.0).contains(&entropy), "{entropy}");
        assert!((0.2..0.7).contains(&deflated), "{deflated}");
        let (entropy, deflated) = describe(Fill::Zeros, 1024);
        assert!(entropy < 1.0 && deflated < 0.1, "{entropy} {deflated}");
    }
}
