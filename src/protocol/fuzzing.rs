//! What every input must do to the server's parsers, whatever its bytes:
//! not panic, never claim more bytes than it was given, always make
//! progress or ask for more, and leave a connection in a state it can
//! close from. The cargo-fuzz targets in `fuzz/` call these with generated
//! inputs; `tests/fuzz_corpus.rs` replays the committed corpus through the
//! same functions on the stable toolchain.

use bytes::Bytes;

use super::deflate::{Agreed, ConnDeflate, DeflateLimits, DeflateMode, Scratch};
use super::frame::{OpCode, Role};
use super::handshake::{self, Parsed};
use super::message::{self, Fragments, Violation};
use super::{tcp, Proto};
use crate::server::admission::Refusal;
use crate::server::deflate::DeflateEvent;
use crate::server::session::{self, Ending, Limits, Outbox, Phase};

/// Small limits, so that "too big" paths are reached by small inputs.
const MAX_MESSAGE: usize = 4096;
const MAX_HANDSHAKE: usize = 2048;

/// Server-side frame decoding with reassembly, frame after frame.
pub fn frames(data: &[u8]) {
    let mut buf = data.to_vec();
    let mut fragments: Option<Box<Fragments>> = None;
    let mut at = 0;
    while at < buf.len() {
        let rest = buf.len() - at;
        match message::read_frame(&mut buf[at..], Role::Server, MAX_MESSAGE, &mut fragments) {
            Ok(Some(step)) => {
                assert!(
                    step.consumed > 0 && step.consumed <= rest,
                    "a frame's length"
                );
                at += step.consumed;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// The WebSocket upgrade request parser.
pub fn handshake(data: &[u8]) {
    if let Ok(Parsed::Upgrade { len, .. }) = handshake::parse_request(data, MAX_HANDSHAKE) {
        assert!(len <= data.len(), "a request's length");
    }
}

/// The raw-TCP codec: length-prefixed messages, the first a hello.
pub fn tcp_messages(data: &[u8]) {
    let mut at = 0;
    while let Ok(Some((payload, used))) = tcp::decode(&data[at..], MAX_MESSAGE) {
        assert_eq!(used, tcp::HEADER_LEN + payload.len());
        assert!(used <= data.len() - at);
        let _ = tcp::parse_hello(payload);
        at += used;
    }
}

/// A whole connection through `session::on_input`, the way the shard core
/// feeds it: the first byte picks the protocol, whether upgrades are
/// admitted and the permessage-deflate mode, the second the size of the reads the bytes arrive in; bytes
/// the session leaves unused are presented again with the next read.
pub fn session(data: &[u8]) {
    let [options, chunk, rest @ ..] = data else {
        return;
    };
    let limits = Limits {
        proto: if options & 1 == 0 {
            Proto::Ws
        } else {
            Proto::Tcp
        },
        max_message: MAX_MESSAGE,
        max_handshake: MAX_HANDSHAKE,
        deflate: match options >> 2 & 3 {
            1 => DeflateMode::Shared,
            2 => DeflateMode::PerConnection,
            _ => DeflateMode::Off,
        },
        deflate_limits: DeflateLimits::default(),
    };
    let mut out = Recorder {
        refuse: options & 2 != 0,
        mode: limits.deflate,
        ..Recorder::default()
    };
    let chunk = usize::from(*chunk).max(1);
    let mut phase = Phase::Handshake;
    let mut fragments = None;
    let mut pending: Vec<u8> = Vec::new();
    for read in rest.chunks(chunk) {
        pending.extend_from_slice(read);
        let (used, ending) =
            session::on_input(&limits, &mut phase, &mut pending, &mut fragments, &mut out);
        assert!(used <= pending.len(), "the session used more than it had");
        pending.drain(..used);
        if let Some(ending) = ending {
            assert!(
                matches!(phase, Phase::Closing(_) | Phase::Draining),
                "{ending:?} left the connection {phase:?}"
            );
            if matches!(ending, Ending::Rejected(503)) {
                assert!(out.refuse, "a 503 without a refusal");
            }
        }
        assert!(
            pending.len() <= MAX_HANDSHAKE.max(MAX_MESSAGE) + 16,
            "unused input grows past the limits: {} bytes",
            pending.len()
        );
    }
}

/// An outbox that keeps nothing but whether upgrades are refused and the
/// connection's permessage-deflate codec.
struct Recorder {
    refuse: bool,
    replies: usize,
    mode: DeflateMode,
    deflate: Option<ConnDeflate>,
    scratch: Scratch,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            refuse: false,
            replies: 0,
            mode: DeflateMode::Off,
            deflate: None,
            scratch: Scratch::default(),
        }
    }
}

impl Outbox for Recorder {
    fn agree_deflate(&mut self, agreed: &Agreed) -> bool {
        assert_ne!(self.mode, DeflateMode::Off, "agreed with deflate off");
        self.deflate = Some(ConnDeflate::new(self.mode, agreed));
        true
    }
    fn deflating(&self) -> bool {
        self.deflate.is_some()
    }
    fn compressed_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Bytes {
        let deflate = self.deflate.as_mut().expect("compressing unagreed");
        deflate.compressed_frame(&mut self.scratch, opcode, payload)
    }
    fn inflate(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, Violation> {
        let deflate = self.deflate.as_mut().expect("inflating unagreed");
        let inflated = deflate.inflate(&mut self.scratch, opcode, payload, max);
        if let Ok(bytes) = &inflated {
            assert!(bytes.len() <= max, "inflated past the limit");
        }
        inflated
    }
    fn count_deflate(&mut self, _: DeflateEvent) {}
    fn reply(&mut self, parts: &[&[u8]]) {
        self.replies += parts.iter().map(|p| p.len()).sum::<usize>();
    }
    fn echo(&mut self, parts: &[&[u8]]) {
        self.reply(parts);
    }
    fn publish(&mut self, frame: Bytes) {
        self.replies += frame.len();
    }
    fn admit(&mut self) -> Result<(), Refusal> {
        match self.refuse {
            true => Err(Refusal::OverCapacity),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{client_frame, OpCode};

    #[test]
    fn the_checks_accept_ordinary_traffic() {
        let mut ws = vec![0u8, 7];
        ws.extend_from_slice(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
        ws.extend(client_frame(OpCode::Text, b"hello", [1, 2, 3, 4]));
        ws.extend(client_frame(
            OpCode::Close,
            &1000u16.to_be_bytes(),
            [1, 2, 3, 4],
        ));
        session(&ws);
        ws[0] = 2; // refused with 503
        session(&ws);
        frames(&client_frame(OpCode::Binary, &[0; 300], [9, 9, 9, 9]));
        handshake(&ws[2..]);
        let mut tcp_bytes = tcp::encode(b"/room");
        tcp_bytes.extend(tcp::encode(b"abc"));
        tcp_messages(&tcp_bytes);
        session(&[&[1u8, 3][..], &tcp_bytes].concat());
    }
}
