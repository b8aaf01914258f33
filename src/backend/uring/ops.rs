//! The one id every io_uring operation carries (`user_data`): what the
//! operation is, and for a connection's operations its slab key and
//! generation. A slab slot is reused as soon as its connection closes, but
//! completions for the old connection may still be on their way: the
//! generation tells them apart, so they are never taken for the new one's.

/// What an operation was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// The listener's multishot accept.
    Accept = 1,
    /// The waker's multishot poll.
    Wake = 2,
    /// A connection's recv of what is waiting (one shot, never waits).
    Recv = 3,
    /// A connection's send of the front of its queue.
    Send = 4,
    /// Cancel, close, shutdown: only counted, their outcome changes nothing.
    Housekeeping = 5,
    /// A connection's multishot poll for input.
    Poll = 6,
    /// A connection's multishot recv (one that keeps talking).
    Stream = 7,
}

/// `user_data`: op in bits 56..64, generation in 32..48, key in 0..32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub op: Op,
    pub generation: u16,
    pub key: u32,
}

impl Tag {
    pub const ACCEPT: Tag = Tag::plain(Op::Accept);
    pub const WAKE: Tag = Tag::plain(Op::Wake);
    pub const HOUSEKEEPING: Tag = Tag::plain(Op::Housekeeping);

    const fn plain(op: Op) -> Tag {
        Tag {
            op,
            generation: 0,
            key: 0,
        }
    }

    pub fn conn(op: Op, key: usize, generation: u16) -> Tag {
        let key = u32::try_from(key).expect("a shard holds fewer than 2^32 connections");
        Tag {
            op,
            generation,
            key,
        }
    }

    pub fn encode(self) -> u64 {
        (self.op as u64) << 56 | (self.generation as u64) << 32 | self.key as u64
    }

    pub fn decode(user_data: u64) -> Option<Tag> {
        let op = match user_data >> 56 {
            1 => Op::Accept,
            2 => Op::Wake,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::Housekeeping,
            6 => Op::Poll,
            7 => Op::Stream,
            _ => return None,
        };
        Some(Tag {
            op,
            generation: (user_data >> 32) as u16,
            key: user_data as u32,
        })
    }

    pub fn key(self) -> usize {
        self.key as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_keep_key_and_generation_apart() {
        let tag = Tag::conn(Op::Send, 0xdead_beef, 0xffff);
        assert_eq!(Tag::decode(tag.encode()), Some(tag));
        let other = Tag::conn(Op::Send, 0xdead_beef, 0xfffe);
        assert_ne!(tag.encode(), other.encode());
        assert_eq!(Tag::decode(0), None);
    }
}
