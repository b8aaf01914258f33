//! permessage-deflate in the load generator (`fanout load --deflate`):
//! each client offers what browsers offer, reads the server's answer, and
//! then compresses what it sends and inflates what it gets as agreed. A
//! client whose server keeps no context either way keeps nothing (the
//! shard's scratch codec serves it); one with context takeover keeps its
//! own codec, each half made when first used, in a side table beside the
//! slab, so an idle client stays 40 bytes either way.

use crate::protocol::deflate::conn::compressed_client_frame;
use crate::protocol::deflate::conn::ConnCodecs;
use crate::protocol::deflate::negotiate::{self, Agreed};
use crate::protocol::deflate::ConnDeflate;
use crate::protocol::frame::OpCode;
use crate::protocol::message::Violation;

#[derive(Default)]
pub(super) struct DeflateClients {
    codecs: ConnCodecs<()>,
}

impl DeflateClients {
    /// Client `key` read `answer` in its 101: the window it compresses with
    /// (kept in the client), or why the answer is not acceptable.
    pub fn agree(&mut self, key: usize, answer: &str) -> Result<u8, String> {
        let agreed: Agreed = negotiate::parse_answer(answer)
            .map_err(|why| format!("bad permessage-deflate answer: {why}"))?;
        let conn = ConnDeflate::client(&agreed);
        if let ConnDeflate::Own(_) = conn {
            self.codecs.keep(key, conn, ());
        }
        Ok(agreed.client_window_bits)
    }

    pub fn end(&mut self, key: usize) {
        self.codecs.end(key);
    }

    /// A binary message compressed into one masked client frame.
    pub fn frame(&mut self, key: usize, window: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        self.codecs.with(key, window, |conn, scratch| {
            compressed_client_frame(conn.deflater(scratch), OpCode::Binary, payload, mask)
        })
    }

    pub fn inflate(
        &mut self,
        key: usize,
        window: u8,
        (opcode, payload, max): (OpCode, &[u8], usize),
    ) -> Result<Vec<u8>, Violation> {
        self.codecs.inflate(key, window, (opcode, payload, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::Role;
    use crate::protocol::message::{read_frame_allowing, Event};

    #[test]
    fn a_compressed_client_frame_is_masked_and_reads_back() {
        let mut clients = DeflateClients::default();
        let window = clients.agree(0, "permessage-deflate").unwrap();
        assert_eq!(window, 15);
        // The server's side: context kept, as the answer agreed.
        let mut inflater = crate::protocol::deflate::Inflater::new(15, true);
        for size in [10, 1000, 70_000] {
            let payload = vec![b'x'; size];
            let mut frame = clients.frame(0, window, &payload, [1, 2, 3, 4]);
            let step = read_frame_allowing(&mut frame, Role::Server, 1 << 20, true, &mut None);
            let Some(Event::Message {
                payload: compressed,
                compressed: true,
                ..
            }) = step.unwrap().unwrap().event
            else {
                panic!("not a compressed message");
            };
            assert_eq!(inflater.message(&compressed, 1 << 20).unwrap(), payload);
        }
        assert!(clients
            .agree(1, "permessage-deflate; client_max_window_bits")
            .is_err());
    }
}
