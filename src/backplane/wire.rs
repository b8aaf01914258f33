//! What a backplane message is on Redis: the frame as the members get it,
//! behind a 17-byte envelope — the publishing instance's id, its sequence
//! number for the message, and the protocol the frame is encoded for.

use std::collections::HashMap;

use crate::protocol::Proto;

const LEN: usize = 8 + 8 + 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Which server instance published it.
    pub instance: u64,
    /// That instance's count of messages published, from 1.
    pub sequence: u64,
    pub proto: Proto,
}

impl Envelope {
    pub fn wrap(&self, frame: &[u8]) -> Vec<u8> {
        let mut message = Vec::with_capacity(LEN + frame.len());
        message.extend_from_slice(&self.instance.to_be_bytes());
        message.extend_from_slice(&self.sequence.to_be_bytes());
        message.push(match self.proto {
            Proto::Ws => 0,
            Proto::Tcp => 1,
        });
        message.extend_from_slice(frame);
        message
    }

    /// The envelope and the frame, or None if it is not one of ours.
    pub fn open(message: &[u8]) -> Option<(Envelope, &[u8])> {
        if message.len() < LEN {
            return None;
        }
        let instance = u64::from_be_bytes(message[0..8].try_into().ok()?);
        let sequence = u64::from_be_bytes(message[8..16].try_into().ok()?);
        let proto = match message[16] {
            0 => Proto::Ws,
            1 => Proto::Tcp,
            _ => return None,
        };
        let envelope = Envelope {
            instance,
            sequence,
            proto,
        };
        Some((envelope, &message[LEN..]))
    }
}

/// A fresh instance id: the process id and the clock, hashed with a
/// randomly keyed hasher (two instances started in the same nanosecond
/// still differ by pid).
pub fn new_instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// The newest sequence number seen from each other instance, to count the
/// messages a subscriber missed while its link was down.
#[derive(Default)]
pub struct Gaps {
    newest: HashMap<u64, u64>,
}

impl Gaps {
    /// Messages `instance` published before `sequence` that never arrived
    /// here (0 for the first one seen from it: what came before was before
    /// this subscriber listened).
    pub fn missed_before(&mut self, instance: u64, sequence: u64) -> u64 {
        let newest = self.newest.entry(instance).or_insert(sequence - 1);
        let missed = sequence.saturating_sub(*newest + 1);
        *newest = (*newest).max(sequence);
        missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_to_what_was_wrapped_and_a_stranger_does_not_open() {
        let envelope = Envelope {
            instance: 7,
            sequence: 42,
            proto: Proto::Tcp,
        };
        let message = envelope.wrap(b"frame");
        assert_eq!(Envelope::open(&message), Some((envelope, &b"frame"[..])));
        assert_eq!(Envelope::open(b"short"), None);
        let mut wrong = message.clone();
        wrong[16] = 9;
        assert_eq!(Envelope::open(&wrong), None);
    }

    #[test]
    fn gaps_count_what_a_subscriber_missed_per_instance() {
        let mut gaps = Gaps::default();
        assert_eq!(gaps.missed_before(1, 10), 0, "first seen");
        assert_eq!(gaps.missed_before(1, 11), 0);
        assert_eq!(gaps.missed_before(1, 15), 3);
        assert_eq!(gaps.missed_before(2, 1), 0, "another instance");
        assert_eq!(gaps.missed_before(1, 16), 0);
        assert_ne!(new_instance_id(), new_instance_id());
    }
}
