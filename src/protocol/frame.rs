//! WebSocket frame headers (RFC 6455 §5.2): decode, encode and masking.
//!
//! Decoding checks every per-frame rule (reserved bits, reserved opcodes,
//! masking direction, control-frame limits, the size limit) so that callers
//! only ever see frames that are legal on their own. RSV1 is legal only
//! where permessage-deflate was negotiated, and then only on data frames
//! (RFC 7692 §6): it marks the first frame of a compressed message.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest possible header: 2 bytes + 8-byte length + 4-byte mask key.
pub const MAX_HEADER_LEN: usize = 14;
/// Control frames carry at most this many payload bytes (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The first header byte's RSV1 bit: a compressed message (permessage-deflate).
pub const RSV1: u8 = 0x40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Which end of the connection we are: it decides which frames must be masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We are the server: frames we receive must be masked.
    Server,
    /// We are the client: frames we receive must not be masked.
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// RSV1: the frame starts a compressed message (permessage-deflate).
    pub compressed: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: usize,
}

/// A frame the peer must not send. Each maps to the close code we answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reserved bits RSV2 or RSV3 set (no extension uses them)")]
    ReservedBits,
    #[error("RSV1 (compressed) set, but permessage-deflate was not negotiated")]
    CompressionNotNegotiated,
    #[error("a control frame had the compressed bit (RSV1) set")]
    CompressedControl,
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("a client frame was not masked")]
    Unmasked,
    #[error("a server frame was masked")]
    Masked,
    #[error("a control frame was fragmented")]
    FragmentedControl,
    #[error("a control frame carried more than 125 bytes")]
    ControlTooLong,
    #[error("payload length has its most significant bit set")]
    LengthOverflow,
    #[error("frame larger than the message limit")]
    TooBig,
}

impl FrameError {
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::TooBig => super::close_code::MESSAGE_TOO_BIG,
            _ => super::close_code::PROTOCOL_ERROR,
        }
    }
}

/// Decode one frame header from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold the whole header, and the
/// header with its length in bytes otherwise. `max_payload` is the largest
/// payload accepted; longer frames fail with [`FrameError::TooBig`] as soon as
/// their length is known, before any payload is buffered.
pub fn decode_header(
    buf: &[u8],
    role: Role,
    max_payload: usize,
) -> Result<Option<(Header, usize)>, FrameError> {
    decode_header_allowing(buf, role, max_payload, false)
}

/// [`decode_header`] on a connection that negotiated permessage-deflate
/// (`compression`): RSV1 is then allowed on data frames.
pub fn decode_header_allowing(
    buf: &[u8],
    role: Role,
    max_payload: usize,
    compression: bool,
) -> Result<Option<(Header, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let compressed = b0 & RSV1 != 0;
    if b0 & 0x30 != 0 {
        return Err(FrameError::ReservedBits);
    }
    if compressed && !compression {
        return Err(FrameError::CompressionNotNegotiated);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::ReservedOpcode(b0 & 0x0F))?;
    if compressed && opcode.is_control() {
        return Err(FrameError::CompressedControl);
    }
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(FrameError::Unmasked),
        (Role::Client, true) => return Err(FrameError::Masked),
        _ => {}
    }
    let short_len = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if short_len as usize > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong);
        }
    }
    let (payload_len, mut pos) = match short_len {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap()), 10),
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    if payload_len >> 63 != 0 {
        return Err(FrameError::LengthOverflow);
    }
    if payload_len > max_payload as u64 {
        return Err(FrameError::TooBig);
    }
    let mask = if masked {
        let Some(key) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        pos += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    let header = Header {
        fin,
        compressed,
        opcode,
        mask,
        payload_len: payload_len as usize,
    };
    Ok(Some((header, pos)))
}

/// Encode a header into `out`, returning how many bytes it took.
pub fn encode_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = (fin as u8) << 7 | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut pos = match payload_len {
        0..=125 => {
            out[1] = mask_bit | payload_len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        }
    };
    if let Some(key) = mask {
        out[pos..pos + 4].copy_from_slice(&key);
        pos += 4;
    }
    pos
}

/// XOR `buf` with the mask key (§5.3). Masking and unmasking are the same
/// operation. Works a word at a time: this runs over every byte a client sends.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes((&*chunk).try_into().unwrap()) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key phase restarts at 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// One whole unmasked frame (what a server sends), built once and shareable.
pub fn server_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = encode_header(&mut header, true, opcode, payload.len(), None);
    let mut frame = BytesMut::with_capacity(header_len + payload.len());
    frame.put_slice(&header[..header_len]);
    frame.put_slice(payload);
    frame.freeze()
}

/// One whole masked frame (what a client sends).
pub fn client_frame(opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = encode_header(&mut header, true, opcode, payload.len(), Some(key));
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(&header[..header_len]);
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[header_len..], key);
    frame
}

/// The payload of a close frame: the code, then a UTF-8 reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize, mask: Option<[u8; 4]>) {
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut out, true, OpCode::Binary, len, mask);
        let role = if mask.is_some() {
            Role::Server
        } else {
            Role::Client
        };
        let (header, used) = decode_header(&out[..n], role, usize::MAX >> 1)
            .unwrap()
            .unwrap();
        assert_eq!(used, n);
        assert_eq!(header.payload_len, len);
        assert_eq!(header.mask, mask);
        assert!(header.fin);
        // Every shorter prefix is "need more bytes", never an error.
        for cut in 0..n {
            assert_eq!(decode_header(&out[..cut], role, usize::MAX >> 1), Ok(None));
        }
    }

    #[test]
    fn header_lengths_roundtrip_at_every_boundary() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            roundtrip(len, None);
            roundtrip(len, Some([1, 2, 3, 4]));
        }
    }

    #[test]
    fn header_sizes_follow_the_length_encoding() {
        let mut out = [0u8; MAX_HEADER_LEN];
        assert_eq!(encode_header(&mut out, true, OpCode::Text, 125, None), 2);
        assert_eq!(encode_header(&mut out, true, OpCode::Text, 126, None), 4);
        assert_eq!(encode_header(&mut out, true, OpCode::Text, 65536, None), 10);
        assert_eq!(
            encode_header(&mut out, true, OpCode::Text, 65536, Some([0; 4])),
            14
        );
    }

    #[test]
    fn rejects_illegal_headers() {
        let max = 1 << 20;
        assert_eq!(
            decode_header(&[0xC1, 0x80], Role::Server, max),
            Err(FrameError::CompressionNotNegotiated)
        );
        assert_eq!(
            decode_header(&[0xA1, 0x80], Role::Server, max),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            decode_header(&[0x83, 0x80], Role::Server, max),
            Err(FrameError::ReservedOpcode(3))
        );
        assert_eq!(
            decode_header(&[0x8B, 0x80], Role::Server, max),
            Err(FrameError::ReservedOpcode(0xB))
        );
        assert_eq!(
            decode_header(&[0x81, 0x00], Role::Server, max),
            Err(FrameError::Unmasked)
        );
        assert_eq!(
            decode_header(&[0x81, 0x80], Role::Client, max),
            Err(FrameError::Masked)
        );
        assert_eq!(
            decode_header(&[0x09, 0x80], Role::Server, max),
            Err(FrameError::FragmentedControl)
        );
        assert_eq!(
            decode_header(&[0x89, 0xFE], Role::Server, max),
            Err(FrameError::ControlTooLong)
        );
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(
            decode_header(&huge, Role::Server, max),
            Err(FrameError::LengthOverflow)
        );
        let mut big = vec![0x82, 0xFF];
        big.extend_from_slice(&((max as u64) + 1).to_be_bytes());
        assert_eq!(
            decode_header(&big, Role::Server, max),
            Err(FrameError::TooBig)
        );
    }

    #[test]
    fn mask_matches_the_bytewise_definition_at_every_length() {
        let key = [0xA1, 0xB2, 0xC3, 0xD4];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut fast = original.clone();
            apply_mask(&mut fast, key);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
            apply_mask(&mut fast, key);
            assert_eq!(fast, original);
        }
    }

    #[test]
    fn server_frame_is_unmasked_and_client_frame_masked() {
        let frame = server_frame(OpCode::Text, b"hi");
        assert_eq!(&frame[..], &[0x81, 0x02, b'h', b'i']);
        let frame = client_frame(OpCode::Text, b"hi", [1, 2, 3, 4]);
        assert_eq!(&frame[..6], &[0x81, 0x82, 1, 2, 3, 4]);
        assert_eq!(&frame[6..], &[b'h' ^ 1, b'i' ^ 2]);
    }
}
