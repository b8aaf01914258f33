//! What a connection that agreed on permessage-deflate compresses and
//! inflates with. In `shared` mode it keeps nothing: the shard's
//! [`Scratch`] codec, reset after every message, serves all of them, so a
//! room message is compressed once per shard and window size whatever the
//! number of members. In `per-connection` mode it keeps its own [`Codec`]
//! (context takeover both ways) while it lives. The server core, the task
//! backends and the load generator all use these.

use bytes::{BufMut, Bytes, BytesMut};

use super::negotiate::{Agreed, DeflateMode, SMALLEST_SERVER_WINDOW};
use super::{inflate_message, Deflater, Inflater};
use crate::protocol::frame::{self, encode_header, OpCode, Role, MAX_HEADER_LEN};
use crate::protocol::message::Violation;

/// A compressor and an inflater, one for each direction.
pub struct Codec {
    pub deflater: Deflater,
    pub inflater: Inflater,
}

impl Codec {
    /// The server's codec as agreed: it compresses with its window and
    /// inflates with the client's.
    pub fn server(agreed: &Agreed) -> Codec {
        Codec {
            deflater: Deflater::new(
                agreed.server_window_bits,
                !agreed.server_no_context_takeover,
            ),
            inflater: Inflater::new(
                agreed.client_window_bits,
                !agreed.client_no_context_takeover,
            ),
        }
    }

    /// The client's codec as agreed: the mirror of [`Codec::server`].
    pub fn client(agreed: &Agreed) -> Codec {
        Codec {
            deflater: Deflater::new(
                agreed.client_window_bits,
                !agreed.client_no_context_takeover,
            ),
            inflater: Inflater::new(
                agreed.server_window_bits,
                !agreed.server_no_context_takeover,
            ),
        }
    }

    pub fn parts(&mut self) -> CodecRef<'_> {
        CodecRef {
            deflater: &mut self.deflater,
            inflater: &mut self.inflater,
        }
    }
}

/// zlib's own sizing (zconf.h) of what a codec allocates: a compressor
/// 2^(bits+2) + 2^(memLevel+9) bytes with memLevel 8, an inflater a window
/// of 2^bits and ~7 KiB of tables. An estimate for `--deflate-memory`'s
/// budget; `fanout bench --deflate` measures the real cost.
pub fn estimated_codec_bytes(agreed: &Agreed) -> u64 {
    let deflate = (1u64 << (agreed.server_window_bits + 2)) + (1 << (8 + 9));
    let inflate = (1u64 << agreed.client_window_bits) + 7 * 1024;
    deflate + inflate
}

/// A connection's codec, borrowed for one message.
pub struct CodecRef<'a> {
    pub deflater: &'a mut Deflater,
    pub inflater: &'a mut Inflater,
}

/// How one connection compresses, once it agreed on permessage-deflate.
pub enum ConnDeflate {
    /// `shared`: the shard's scratch codec; the server's window, in bits.
    Shared { window_bits: u8 },
    /// `per-connection`: its own codec, kept while it lives.
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

    /// The codec for this message: its own, or the scratch's.
    pub fn codec<'a>(&'a mut self, scratch: &'a mut Scratch) -> CodecRef<'a> {
        match self {
            ConnDeflate::Shared { window_bits } => scratch.codec(*window_bits),
            ConnDeflate::Own(codec) => codec.parts(),
        }
    }

    /// A data message compressed into one server frame.
    pub fn compressed_frame(
        &mut self,
        scratch: &mut Scratch,
        opcode: OpCode,
        payload: &[u8],
    ) -> Bytes {
        compressed_server_frame(self.codec(scratch).deflater, opcode, payload)
    }

    /// A compressed message from the client, inflated and checked.
    pub fn inflate(
        &mut self,
        scratch: &mut Scratch,
        opcode: OpCode,
        payload: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, Violation> {
        inflate_message(self.codec(scratch).inflater, opcode, payload, max)
    }
}

/// A shard's codec for `shared` connections: no context takeover either
/// way, so one compressor per window size in use and one inflater (a
/// 2^15 window inflates what any smaller window made) serve them all.
/// Made on first use and kept for the shard's life.
#[derive(Default)]
pub struct Scratch {
    deflaters: [Option<Deflater>; 16 - SMALLEST_SERVER_WINDOW as usize],
    inflater: Option<Inflater>,
}

impl Scratch {
    pub fn codec(&mut self, window_bits: u8) -> CodecRef<'_> {
        let slot = (window_bits.max(SMALLEST_SERVER_WINDOW) - SMALLEST_SERVER_WINDOW) as usize;
        CodecRef {
            deflater: self.deflaters[slot].get_or_insert_with(|| Deflater::new(window_bits, false)),
            inflater: self
                .inflater
                .get_or_insert_with(|| Inflater::new(15, false)),
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
        let codec = member.codec(&mut scratch);
        let compressed = compress_room_frame(codec.deflater, &plain).unwrap();
        assert_eq!(compressed[0], 0x80 | frame::RSV1 | OpCode::Text as u8);
        // The same bytes again: nothing was kept from the first.
        let codec = member.codec(&mut scratch);
        assert_eq!(
            compress_room_frame(codec.deflater, &plain).unwrap(),
            compressed
        );
        let mut inflater = Inflater::new(15, false);
        let (opcode, payload) = client_reads(&compressed, &mut inflater);
        assert_eq!((opcode, &payload[..]), (OpCode::Text, &plain[2..]));
        // Control frames and fragments are not compressed.
        let ping = frame::server_frame(OpCode::Ping, b"x");
        assert!(compress_room_frame(codec_of(&mut scratch), &ping).is_none());
    }

    fn codec_of(scratch: &mut Scratch) -> &mut Deflater {
        scratch.codec(15).deflater
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
                let frame = compress_room_frame(server.codec(&mut scratch).deflater, &plain);
                let frame = frame.unwrap();
                let (_, payload) = client_reads(&frame, &mut client.inflater);
                assert_eq!(payload, [7u8; 300]);
                frame.len()
            })
            .collect();
        assert!(sizes[1] < sizes[0], "the second refers back: {sizes:?}");
        // And the other way: what the client compresses, the server inflates.
        for _ in 0..2 {
            let compressed = client.deflater.message(b"hello hello hello");
            let codec = server.codec(&mut scratch);
            let inflated = codec.inflater.message(&compressed, 100).unwrap();
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
        assert_eq!(
            estimated_codec_bytes(&full),
            131_072 + 131_072 + 32_768 + 7_168
        );
        assert!(estimated_codec_bytes(&small) < estimated_codec_bytes(&full) / 2);
    }
}
