//! permessage-deflate's bytes (RFC 7692 §7.2): a message compressed as raw
//! DEFLATE ending in a sync flush whose empty block (`00 00 ff ff`) is cut
//! off, and inflated back with that tail put on again. zlib-rs (through
//! flate2) does the DEFLATE; this module only keeps the RFC's framing and
//! the bound on what a message may inflate to.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The empty stored block a sync flush ends with, which the sender drops.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Output grows by at most this much at a time, so a message that inflates
/// past its bound is stopped having allocated little more than the bound.
const STEP: usize = 16 * 1024;

/// Why a compressed message could not be inflated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates to more than the bound (close 1009).
    #[error("the message inflates past {0} bytes")]
    TooBig(usize),
    /// Its bytes are not DEFLATE data (close 1007).
    #[error("the compressed data is corrupt: {0}")]
    Corrupt(String),
}

/// A compressor for one direction. With context takeover it keeps its
/// window between messages; without, it starts afresh for each.
pub struct Deflater {
    compress: Compress,
    context_takeover: bool,
}

impl Deflater {
    pub fn new(window_bits: u8, context_takeover: bool) -> Deflater {
        Deflater {
            compress: Compress::new_with_window_bits(Compression::default(), false, window_bits),
            context_takeover,
        }
    }

    /// One message's payload, compressed, without the sync flush's tail.
    pub fn message(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() / 2 + 16);
        let mut input = payload;
        loop {
            out.reserve(STEP.max(input.len() / 2));
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("compressing into a buffer with room cannot fail");
            input = &input[(self.compress.total_in() - before) as usize..];
            // A sync flush is done when all input is taken and the output
            // buffer was not filled up.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if !self.context_takeover {
            self.compress.reset();
        }
        out
    }
}

/// An inflater for one direction, bounded per message.
pub struct Inflater {
    decompress: Decompress,
    context_takeover: bool,
}

impl Inflater {
    pub fn new(window_bits: u8, context_takeover: bool) -> Inflater {
        Inflater {
            decompress: Decompress::new_with_window_bits(false, window_bits),
            context_takeover,
        }
    }

    /// A whole message's compressed payload, inflated, or why not; at most
    /// `max` bytes come out (and not much more is ever allocated).
    pub fn message(&mut self, compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        let result = self
            .push(compressed, &mut out, max)
            .and_then(|()| self.push(&TAIL, &mut out, max));
        if !self.context_takeover || result.is_err() {
            self.decompress.reset(false);
        }
        result.map(|()| out)
    }

    /// Inflate `input` onto `out`, never past `max` bytes in all.
    fn push(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), InflateError> {
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(InflateError::TooBig(max));
                }
                // Grow geometrically, but never past one byte beyond the
                // bound (which shows that it was passed).
                out.reserve_exact(out.len().max(STEP).min(max + 1 - out.len()));
            }
            let before = self.decompress.total_in();
            let status = self
                .decompress
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            input = &input[(self.decompress.total_in() - before) as usize..];
            if out.len() > max {
                return Err(InflateError::TooBig(max));
            }
            let room_left = out.len() < out.capacity();
            match status {
                Status::StreamEnd if !input.is_empty() => {
                    return Err(InflateError::Corrupt("data after the final block".into()))
                }
                Status::StreamEnd => return Ok(()),
                _ if input.is_empty() && room_left => return Ok(()),
                Status::BufError if room_left => {
                    return Err(InflateError::Corrupt("no progress".into()))
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON-like text, the kind of payload that compresses.
    fn json(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"id\":{i},\"user\":\"u{}\",\"text\":\"hello room\"}}",
                    i % 7
                )
            })
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn a_message_round_trips_with_and_without_context_takeover() {
        for takeover in [false, true] {
            let mut deflater = Deflater::new(15, takeover);
            let mut inflater = Inflater::new(15, takeover);
            for size in [0, 1, 100, 70_000] {
                let payload = json(size / 40 + 1)[..size].to_vec();
                let compressed = deflater.message(&payload);
                assert!(!compressed.ends_with(&TAIL));
                assert_eq!(inflater.message(&compressed, 1 << 20).unwrap(), payload);
            }
        }
    }

    #[test]
    fn context_takeover_makes_a_repeated_message_smaller() {
        let payload = json(20);
        let mut fresh = Deflater::new(15, false);
        let mut kept = Deflater::new(15, true);
        let first = (fresh.message(&payload).len(), kept.message(&payload).len());
        assert_eq!(first.0, first.1);
        assert_eq!(
            fresh.message(&payload).len(),
            first.0,
            "no takeover: same every time"
        );
        assert!(
            kept.message(&payload).len() < first.1 / 4,
            "takeover refers back"
        );
    }

    /// RFC 7692 §7.2.3.1: "Hello" compressed, as the RFC prints it.
    #[test]
    fn the_rfcs_hello_inflates() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut inflater = Inflater::new(15, false);
        assert_eq!(inflater.message(&hello, 100).unwrap(), b"Hello");
        // §7.2.3.2: the same with a stored block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflater.message(&stored, 100).unwrap(), b"Hello");
    }

    #[test]
    fn a_bomb_is_stopped_at_the_bound_and_garbage_is_corrupt() {
        let zeros = vec![0u8; 50 << 20];
        let bomb = Deflater::new(15, false).message(&zeros);
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let mut inflater = Inflater::new(15, false);
        assert_eq!(
            inflater.message(&bomb, 1 << 20),
            Err(InflateError::TooBig(1 << 20))
        );
        // What it allocated on the way: no more than the bound and a byte.
        let mut out = Vec::new();
        let refused = inflater.push(&bomb, &mut out, 1 << 20);
        assert_eq!(refused, Err(InflateError::TooBig(1 << 20)));
        assert!(out.capacity() <= (1 << 20) + 1, "{}", out.capacity());
        inflater.decompress.reset(false);
        // The inflater is usable after a refused message.
        let small = Deflater::new(15, false).message(b"after");
        assert_eq!(inflater.message(&small, 100).unwrap(), b"after");
        let error = inflater
            .message(&[0xff, 0xff, 0xff, 0xff], 100)
            .unwrap_err();
        assert!(matches!(error, InflateError::Corrupt(_)), "{error:?}");
    }

    #[test]
    fn a_small_window_is_what_it_says() {
        let payload = json(50);
        let compressed = Deflater::new(9, false).message(&payload);
        assert_eq!(
            Inflater::new(9, false)
                .message(&compressed, 1 << 20)
                .unwrap(),
            payload
        );
    }
}
