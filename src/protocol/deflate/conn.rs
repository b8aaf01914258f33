//! What a connection that agreed on permessage-deflate compresses and
//! inflates with. In `shared` mode it keeps nothing: the shard's
//! [`Scratch`] codec, reset after every message, serves all of them, so a
//! room message is compressed once per shard and window size whatever the
//! number of members. In `per-connection` mode it keeps its own [`Codec`]
//! (context takeover both ways) while it lives. The server core, the task
//! backends and the load generator all use these.

use bytes::{BufMut, Bytes, BytesMut};

use super::negotiate::{Agreed, DeflateMode};
use super::{inflate_message, Deflater, Inflater};
use crate::protocol::frame::{self, encode_header, OpCode, Role, MAX_HEADER_LEN};
use crate::protocol::message::Violation;
use crate::side_table::SideTable;

/// A compressor and an inflater, one for each direction, each made when
/// first needed (a room member that never sends keeps no compressor).
pub struct Codec {
    deflater: Lazy<Deflater>,
    inflater: Lazy<Inflater>,
}

/// A codec half: its window and whether it keeps its context, until made.
enum Lazy<T> {
    Params(u8, bool),
    Made(T),
}

impl<T> Lazy<T> {
    fn get(&mut self, make: fn(u8, bool) -> T) -> &mut T {
        if let Lazy::Params(bits, takeover) = *self {
            *self = Lazy::Made(make(bits, takeover));
        }
        match self {
            Lazy::Made(made) => made,
            Lazy::Params(..) => unreachable!("made just above"),
        }
    }
}

impl Codec {
    /// The server's codec as agreed: it compresses with its window and
    /// inflates with the client's.
    pub fn server(agreed: &Agreed) -> Codec {
        Codec {
            deflater: Lazy::Params(
                agreed.server_window_bits,
                !agreed.server_no_context_takeover,
            ),
            inflater: Lazy::Params(
                agreed.client_window_bits,
                !agreed.client_no_context_takeover,
            ),
        }
    }

    /// The client's codec as agreed: the mirror of [`Codec::server`].
    pub fn client(agreed: &Agreed) -> Codec {
        Codec {
            deflater: Lazy::Params(
                agreed.client_window_bits,
                !agreed.client_no_context_takeover,
            ),
            inflater: Lazy::Params(
                agreed.server_window_bits,
                !agreed.server_no_context_takeover,
            ),
        }
    }

    pub fn deflater(&mut self) -> &mut Deflater {
        self.deflater.get(Deflater::new)
    }

    pub fn inflater(&mut self) -> &mut Inflater {
        self.inflater.get(Inflater::new)
    }
}

/// What a server codec allocates, by zlib-rs's own layout (its
/// `DeflateAllocOffsets`, memLevel 8): a compressor holds a double window
/// (2 × 2^bits), the hash chains (2 × 2^bits), the hash heads (2 × 65,536)
/// and the pending and symbol buffers (7 × 16,384); an inflater a window of
/// 2^bits and ~7 KiB of tables. For 15-bit windows 376,832 + 39,936 B (zlib
/// itself would take 262,144 + 39,936). The `--deflate-memory` budget
/// counts this; `fanout bench --deflate` measures the real cost (a
/// compressor lands in jemalloc's 384 KiB size class).
pub fn estimated_codec_bytes(agreed: &Agreed) -> u64 {
    let deflate = 4 * (1u64 << agreed.server_window_bits) + 2 * 65_536 + 7 * 16_384;
    let inflate = (1u64 << agreed.client_window_bits) + 7 * 1024;
    deflate + inflate
}

/// How one connection compresses, once it agreed on permessage-deflate.
pub enum ConnDeflate {
    /// No context takeover either way: the shard's scratch codec; the
    /// window this side compresses with, in bits.
    Shared { window_bits: u8 },
    /// Its own codec, kept while it lives.
    Own(Box<Codec>),
}

impl ConnDeflate {
    /// What the server keeps for a connection that agreed on `agreed` in `mode`.
    pub fn new(mode: DeflateMode, agreed: &Agreed) -> ConnDeflate {
        match mode {
            DeflateMode::PerConnection => ConnDeflate::Own(Box::new(Codec::server(agreed))),
            _ => ConnDeflate::Shared {
                window_bits: agreed.server_window_bits,
            },
        }
    }

    /// What a client keeps: nothing when neither side keeps its context.
    pub fn client(agreed: &Agreed) -> ConnDeflate {
        match agreed.server_no_context_takeover && agreed.client_no_context_takeover {
            true => ConnDeflate::Shared {
                window_bits: agreed.client_window_bits,
            },
            false => ConnDeflate::Own(Box::new(Codec::client(agreed))),
        }
    }

    pub fn deflater<'a>(&'a mut self, scratch: &'a mut Scratch) -> &'a mut Deflater {
        match self {
            ConnDeflate::Shared { window_bits } => scratch.deflater(*window_bits),
            ConnDeflate::Own(codec) => codec.deflater(),
        }
    }

    pub fn inflater<'a>(&'a mut self, scratch: &'a mut Scratch) -> &'a mut Inflater {
        match self {
            ConnDeflate::Shared { .. } => scratch.inflater(),
            ConnDeflate::Own(codec) => codec.inflater(),
        }
    }

    /// A data message compressed into one server frame.
    pub fn compressed_frame(
        &mut self,
        scratch: &mut Scratch,
        opcode: OpCode,
        payload: &[u8],
    ) -> Bytes {
        compressed_server_frame(self.deflater(scratch), opcode, payload)
    }

    /// A compressed message from the peer, inflated and checked.
    pub fn inflate(
        &mut self,
        scratch: &mut Scratch,
        opcode: OpCode,
        payload: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, Violation> {
        inflate_message(self.inflater(scratch), opcode, payload, max)
    }
}

/// A shard's codec for connections that keep no context: one compressor
/// per window size in use and one inflater (a 2^15 window inflates what
/// any smaller window made) serve them all. Made on first use and kept for
/// the shard's life.
#[derive(Default)]
pub struct Scratch {
    deflaters: [Option<Deflater>; 16 - 8],
    inflater: Option<Inflater>,
}

impl Scratch {
    pub fn deflater(&mut self, window_bits: u8) -> &mut Deflater {
        let slot = (window_bits.clamp(8, 15) - 8) as usize;
        self.deflaters[slot].get_or_insert_with(|| Deflater::new(window_bits, false))
    }

    pub fn inflater(&mut self) -> &mut Inflater {
        self.inflater
            .get_or_insert_with(|| Inflater::new(15, false))
    }
}

/// The deflate states of a slab's connections, beside it by key: each
/// connection's own codec where it keeps one (with a value of the owner's,
/// e.g. the bytes it was budgeted), the shared scratch for the rest. The
/// server's shard core and the load generator's shards both keep one.
pub struct ConnCodecs<T> {
    pub scratch: Scratch,
    own: SideTable<(ConnDeflate, T)>,
}

impl<T> Default for ConnCodecs<T> {
    fn default() -> Self {
        ConnCodecs {
            scratch: Scratch::default(),
            own: SideTable::default(),
        }
    }
}

impl<T> ConnCodecs<T> {
    /// Connection `key` keeps `conn` (its own codec) and `value`.
    pub fn keep(&mut self, key: usize, conn: ConnDeflate, value: T) {
        self.own.put(key, (conn, value));
    }

    /// Connection `key` is gone: the value kept with its codec, if it had one.
    pub fn end(&mut self, key: usize) -> Option<T> {
        self.own.take(key).map(|(_, value)| value)
    }

    /// Connection `key`'s own codec, if it keeps one, and the scratch.
    pub fn own(&mut self, key: usize) -> Option<(&mut ConnDeflate, &mut Scratch)> {
        let (conn, _) = self.own.get_mut(key)?;
        Some((conn, &mut self.scratch))
    }

    /// A compressed message from connection `key`'s peer, inflated and
    /// checked with its own codec or the scratch.
    pub fn inflate(
        &mut self,
        key: usize,
        window: u8,
        (opcode, payload, max): (OpCode, &[u8], usize),
    ) -> Result<Vec<u8>, Violation> {
        self.with(key, window, |conn, scratch| {
            conn.inflate(scratch, opcode, payload, max)
        })
    }

    /// Run `work` with connection `key`'s state: its own codec, or the
    /// scratch's for a connection that compresses with `window` and keeps
    /// no context.
    pub fn with<R>(
        &mut self,
        key: usize,
        window: u8,
        work: impl FnOnce(&mut ConnDeflate, &mut Scratch) -> R,
    ) -> R {
        let mut shared = ConnDeflate::Shared {
            window_bits: window,
        };
        match self.own.get_mut(key) {
            Some((own, _)) => work(own, &mut self.scratch),
            None => work(&mut shared, &mut self.scratch),
        }
    }
}

/// A data message compressed into one server frame with RSV1 set.
pub fn compressed_server_frame(deflater: &mut Deflater, opcode: OpCode, payload: &[u8]) -> Bytes {
    let compressed = deflater.message(payload);
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = encode_header(&mut header, true, opcode, compressed.len(), None);
    header[0] |= frame::RSV1;
    let mut frame = BytesMut::with_capacity(header_len + compressed.len());
    frame.put_slice(&header[..header_len]);
    frame.put_slice(&compressed);
    frame.freeze()
}

/// A data message compressed into one masked client frame with RSV1 set.
pub fn compressed_client_frame(
    deflater: &mut Deflater,
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
) -> Vec<u8> {
    let mut frame = frame::client_frame(opcode, &deflater.message(payload), mask);
    frame[0] |= frame::RSV1;
    frame
}

/// A room frame (a whole unmasked data frame, as the room carries them)
/// compressed for a member that agreed on permessage-deflate; `None` if it
/// is not such a frame (it then goes as it is).
pub fn compress_room_frame(deflater: &mut Deflater, plain: &[u8]) -> Option<Bytes> {
    let (header, header_len) = frame::decode_header(plain, Role::Client, usize::MAX).ok()??;
    let whole = header.fin && plain.len() == header_len + header.payload_len;
    let data = matches!(header.opcode, OpCode::Text | OpCode::Binary);
    (whole && data).then(|| compressed_server_frame(deflater, header.opcode, &plain[header_len..]))
}

#[cfg(test)]
mod tests {
    use super::super::negotiate::{choose, offers, DeflateLimits};
    use super::*;
    use crate::protocol::message::{read_frame_allowing, Event};

    fn agreed(mode: DeflateMode, offer: &str) -> Agreed {
        let (agreed, _) = choose(&offers([offer]), mode, DeflateLimits::default());
        agreed.unwrap()
    }

    /// Read one server frame as a client that agreed on deflate would.
    fn client_reads(frame: &[u8], inflater: &mut Inflater) -> (OpCode, Vec<u8>) {
        let mut buf = frame.to_vec();
        let step = read_frame_allowing(&mut buf, Role::Client, 1 << 20, true, &mut None)
            .unwrap()
            .unwrap();
        let Some(Event::Message {
            opcode,
            payload,
            compressed: true,
        }) = step.event
        else {
            panic!("not a compressed message: {:?}", step.event);
        };
        (opcode, inflater.message(&payload, 1 << 20).unwrap())
    }

    #[test]
    fn a_room_frame_compressed_once_reads_back_for_any_shared_member() {
        let plain = frame::server_frame(OpCode::Text, b"{\"a\":1,\"a\":1,\"a\":1}");
        let mut scratch = Scratch::default();
        let mut member = ConnDeflate::new(
            DeflateMode::Shared,
            &agreed(DeflateMode::Shared, "permessage-deflate"),
        );
        let compressed = compress_room_frame(member.deflater(&mut scratch), &plain).unwrap();
        assert_eq!(compressed[0], 0x80 | frame::RSV1 | OpCode::Text as u8);
        // The same bytes again: nothing was kept from the first.
        let again = compress_room_frame(member.deflater(&mut scratch), &plain).unwrap();
        assert_eq!(again, compressed);
        let mut inflater = Inflater::new(15, false);
        let (opcode, payload) = client_reads(&compressed, &mut inflater);
        assert_eq!((opcode, &payload[..]), (OpCode::Text, &plain[2..]));
        // Control frames and fragments are not compressed.
        let ping = frame::server_frame(OpCode::Ping, b"x");
        assert!(compress_room_frame(scratch.deflater(15), &ping).is_none());
    }

    #[test]
    fn a_per_connection_codec_keeps_its_context_and_the_client_mirrors_it() {
        let agreed = agreed(DeflateMode::PerConnection, "permessage-deflate");
        let mut server = ConnDeflate::new(DeflateMode::PerConnection, &agreed);
        let mut client = Codec::client(&agreed);
        let mut scratch = Scratch::default();
        let plain = frame::server_frame(OpCode::Binary, &[7u8; 300]);
        let sizes: Vec<usize> = (0..2)
            .map(|_| {
                let frame = compress_room_frame(server.deflater(&mut scratch), &plain);
                let frame = frame.unwrap();
                let (_, payload) = client_reads(&frame, client.inflater());
                assert_eq!(payload, [7u8; 300]);
                frame.len()
            })
            .collect();
        assert!(sizes[1] < sizes[0], "the second refers back: {sizes:?}");
        // And the other way: what the client compresses, the server inflates.
        for _ in 0..2 {
            let compressed = client.deflater().message(b"hello hello hello");
            let inflated = server
                .inflater(&mut scratch)
                .message(&compressed, 100)
                .unwrap();
            assert_eq!(inflated, b"hello hello hello");
        }
    }

    #[test]
    fn the_estimate_follows_the_windows() {
        let full = agreed(DeflateMode::PerConnection, "permessage-deflate");
        let small = agreed(
            DeflateMode::PerConnection,
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10",
        );
        assert_eq!(estimated_codec_bytes(&full), 376_832 + 39_936);
        assert!(estimated_codec_bytes(&small) < estimated_codec_bytes(&full) * 2 / 3);
    }
}
