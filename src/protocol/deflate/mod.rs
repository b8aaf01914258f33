//! permessage-deflate (RFC 7692): negotiating it in the upgrade, and the
//! bytes of a compressed message. Sans-io like the rest of `protocol`: the
//! server core, the task backends and the load generator share it.

pub mod codec;
pub mod conn;
pub mod negotiate;

pub use codec::{Deflater, InflateError, Inflater};
pub use conn::{Codec, ConnDeflate, Scratch};
pub use negotiate::{choose, offers, Agreed, Declined, DeflateLimits, DeflateMode};

use super::frame::OpCode;
use super::message::Violation;

/// A compressed message's payload inflated and checked as the message it
/// is: at most `max` bytes (past that, 1009, stopped while inflating), DEFLATE
/// data (else 1007), and UTF-8 when it is text (else 1007).
pub fn inflate_message(
    inflater: &mut Inflater,
    opcode: OpCode,
    payload: &[u8],
    max: usize,
) -> Result<Vec<u8>, Violation> {
    let inflated = inflater
        .message(payload, max)
        .map_err(|error| match error {
            InflateError::TooBig(_) => Violation::MessageTooBig,
            InflateError::Corrupt(_) => Violation::CorruptCompressed,
        })?;
    if opcode == OpCode::Text && std::str::from_utf8(&inflated).is_err() {
        return Err(Violation::InvalidUtf8);
    }
    Ok(inflated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::close_code;

    #[test]
    fn each_bad_compressed_message_gets_its_close_code() {
        let mut inflater = Inflater::new(15, false);
        let mut deflater = Deflater::new(15, false);
        let text = deflater.message("héllo".as_bytes());
        assert_eq!(
            inflate_message(&mut inflater, OpCode::Text, &text, 100).unwrap(),
            "héllo".as_bytes()
        );
        let big = deflater.message(&[b'a'; 10_000]);
        let error = inflate_message(&mut inflater, OpCode::Binary, &big, 1_000).unwrap_err();
        assert_eq!(
            (error, error.close_code()),
            (Violation::MessageTooBig, close_code::MESSAGE_TOO_BIG)
        );
        let error = inflate_message(&mut inflater, OpCode::Binary, &[0xff; 8], 100).unwrap_err();
        assert_eq!(
            (error, error.close_code()),
            (Violation::CorruptCompressed, close_code::INVALID_PAYLOAD)
        );
        // Bytes that are fine as binary but not as text.
        let latin1 = deflater.message(&[0xe9, 0x20]);
        assert!(inflate_message(&mut inflater, OpCode::Binary, &latin1, 100).is_ok());
        let error = inflate_message(&mut inflater, OpCode::Text, &latin1, 100).unwrap_err();
        assert_eq!(
            (error, error.close_code()),
            (Violation::InvalidUtf8, close_code::INVALID_PAYLOAD)
        );
    }
}
