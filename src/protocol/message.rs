//! Turns a stream of WebSocket frames into messages and control events:
//! fragmentation, UTF-8 also across fragments, the close-frame rules and the
//! message size limit (RFC 6455 §5.4–5.6, §7.4).
//!
//! The only state kept between calls is [`Fragments`], which exists only while
//! a fragmented message is in flight, so an idle connection carries none.
//!
//! On a connection that negotiated permessage-deflate, a message whose first
//! frame has RSV1 comes out marked `compressed`, its payload as sent: the
//! caller inflates it (`protocol::deflate`) and only then checks a text
//! message's UTF-8. RSV1 on a continuation frame is a protocol error.

use super::close_code;
use super::frame::{apply_mask, decode_header_allowing, FrameError, OpCode, Role};

/// A message being reassembled; exists only between its first and last frame.
#[derive(Debug)]
pub struct Fragments {
    opcode: OpCode,
    /// The first frame had RSV1: the data is compressed.
    compressed: bool,
    data: Vec<u8>,
    /// Bytes of `data` already known to be valid UTF-8 (text messages).
    utf8_checked: usize,
}

/// A message's payload: borrowed straight from the read buffer when it came in
/// one frame, owned when it was reassembled from fragments.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    Borrowed(&'a [u8]),
    Assembled(Vec<u8>),
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Borrowed(bytes) => bytes,
            Payload::Assembled(bytes) => bytes,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole data message: `opcode` is Text or Binary. `compressed`: it
    /// came with RSV1 and its payload is still DEFLATE data (its UTF-8 not
    /// yet checked).
    Message {
        opcode: OpCode,
        payload: Payload<'a>,
        compressed: bool,
    },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The peer started or answered the close handshake.
    Close {
        code: Option<u16>,
        reason: &'a str,
    },
}

/// What a peer did wrong; each has the close code the receiver must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("continuation frame with no message in progress")]
    UnexpectedContinuation,
    #[error("a continuation frame had the compressed bit (RSV1) set")]
    CompressedContinuation,
    #[error("a compressed message is not DEFLATE data")]
    CorruptCompressed,
    #[error("new data frame while a fragmented message is in progress")]
    InterleavedMessage,
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    #[error("close frame with a 1-byte payload")]
    ShortClosePayload,
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    #[error("message larger than the limit")]
    MessageTooBig,
}

impl Violation {
    pub fn close_code(self) -> u16 {
        match self {
            Violation::Frame(error) => error.close_code(),
            Violation::InvalidUtf8 | Violation::CorruptCompressed => close_code::INVALID_PAYLOAD,
            Violation::MessageTooBig => close_code::MESSAGE_TOO_BIG,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// The result of reading one frame: how many bytes it used and, unless it
/// was a non-final fragment, the event it completed.
#[derive(Debug)]
pub struct Step<'a> {
    pub consumed: usize,
    pub event: Option<Event<'a>>,
}

/// Read one frame from the front of `buf`.
///
/// `Ok(None)` means the frame is not complete yet: call again with more bytes.
/// Masked payloads are unmasked in place, which is why `buf` is `&mut`.
pub fn read_frame<'a>(
    buf: &'a mut [u8],
    role: Role,
    max_message: usize,
    fragments: &mut Option<Box<Fragments>>,
) -> Result<Option<Step<'a>>, Violation> {
    read_frame_allowing(buf, role, max_message, false, fragments)
}

/// [`read_frame`] on a connection that negotiated permessage-deflate
/// (`compression`): a message may then come compressed.
pub fn read_frame_allowing<'a>(
    buf: &'a mut [u8],
    role: Role,
    max_message: usize,
    compression: bool,
    fragments: &mut Option<Box<Fragments>>,
) -> Result<Option<Step<'a>>, Violation> {
    let Some((header, header_len)) = decode_header_allowing(buf, role, max_message, compression)?
    else {
        return Ok(None);
    };
    let consumed = header_len + header.payload_len;
    if buf.len() < consumed {
        return Ok(None);
    }
    let payload = &mut buf[header_len..consumed];
    if let Some(key) = header.mask {
        apply_mask(payload, key);
    }
    let payload: &'a [u8] = payload;
    let event = match header.opcode {
        OpCode::Ping => Some(Event::Ping(payload)),
        OpCode::Pong => Some(Event::Pong(payload)),
        OpCode::Close => Some(parse_close(payload)?),
        OpCode::Continuation if header.compressed => return Err(Violation::CompressedContinuation),
        OpCode::Continuation => continue_message(fragments, payload, header.fin, max_message)?,
        OpCode::Text | OpCode::Binary => {
            let first = First {
                opcode: header.opcode,
                compressed: header.compressed,
                fin: header.fin,
            };
            start_message(fragments, first, payload)?
        }
    };
    Ok(Some(Step { consumed, event }))
}

/// The first frame of a data message: what it says of the whole.
struct First {
    opcode: OpCode,
    compressed: bool,
    fin: bool,
}

fn start_message<'a>(
    fragments: &mut Option<Box<Fragments>>,
    first: First,
    payload: &'a [u8],
) -> Result<Option<Event<'a>>, Violation> {
    let First {
        opcode,
        compressed,
        fin,
    } = first;
    if fragments.is_some() {
        return Err(Violation::InterleavedMessage);
    }
    // Compressed text is checked once inflated, by the caller.
    let utf8_checked = if opcode == OpCode::Text && !compressed {
        check_utf8(payload, 0, fin)?
    } else {
        0
    };
    if fin {
        let payload = Payload::Borrowed(payload);
        return Ok(Some(Event::Message {
            opcode,
            payload,
            compressed,
        }));
    }
    *fragments = Some(Box::new(Fragments {
        opcode,
        compressed,
        data: payload.to_vec(),
        utf8_checked,
    }));
    Ok(None)
}

fn continue_message<'a>(
    fragments: &mut Option<Box<Fragments>>,
    payload: &[u8],
    fin: bool,
    max_message: usize,
) -> Result<Option<Event<'a>>, Violation> {
    let Some(message) = fragments.as_mut() else {
        return Err(Violation::UnexpectedContinuation);
    };
    if message.data.len() + payload.len() > max_message {
        return Err(Violation::MessageTooBig);
    }
    message.data.extend_from_slice(payload);
    if message.opcode == OpCode::Text && !message.compressed {
        message.utf8_checked = check_utf8(&message.data, message.utf8_checked, fin)?;
    }
    if !fin {
        return Ok(None);
    }
    let message = fragments.take().unwrap();
    let payload = Payload::Assembled(message.data);
    Ok(Some(Event::Message {
        opcode: message.opcode,
        payload,
        compressed: message.compressed,
    }))
}

/// Check `data[from..]` is UTF-8 and return how far it is known good. A code
/// point cut off at the end is fine while more fragments are to come; any
/// sequence that can never become valid fails at once (fail fast, §8.1).
fn check_utf8(data: &[u8], from: usize, fin: bool) -> Result<usize, Violation> {
    match std::str::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(error) if error.error_len().is_none() && !fin => Ok(from + error.valid_up_to()),
        Err(_) => Err(Violation::InvalidUtf8),
    }
}

fn parse_close(payload: &[u8]) -> Result<Event<'_>, Violation> {
    match payload {
        [] => Ok(Event::Close {
            code: None,
            reason: "",
        }),
        [_] => Err(Violation::ShortClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code::is_valid_on_wire(code) {
                return Err(Violation::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
            Ok(Event::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{client_frame, encode_header, MAX_HEADER_LEN};

    const KEY: [u8; 4] = [9, 8, 7, 6];

    fn fragment(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut header, fin, opcode, payload.len(), Some(KEY));
        let mut frame = header[..n].to_vec();
        frame.extend_from_slice(payload);
        apply_mask(&mut frame[n..], KEY);
        frame
    }

    /// Feed `stream` through the reader and collect owned events.
    fn read_all(stream: Vec<u8>, max: usize) -> Result<Vec<(String, Vec<u8>)>, Violation> {
        read_all_allowing(stream, max, false)
    }

    /// [`read_all`] where permessage-deflate was negotiated (`compression`).
    fn read_all_allowing(
        mut stream: Vec<u8>,
        max: usize,
        compression: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, Violation> {
        let mut fragments = None;
        let mut events = Vec::new();
        let mut pos = 0;
        while let Some(step) = read_frame_allowing(
            &mut stream[pos..],
            Role::Server,
            max,
            compression,
            &mut fragments,
        )? {
            pos += step.consumed;
            match step.event {
                Some(Event::Message {
                    opcode,
                    payload,
                    compressed,
                }) => {
                    let how = if compressed { " compressed" } else { "" };
                    events.push((format!("{opcode:?}{how}"), payload.to_vec()))
                }
                Some(Event::Ping(p)) => events.push(("Ping".into(), p.to_vec())),
                Some(Event::Pong(p)) => events.push(("Pong".into(), p.to_vec())),
                Some(Event::Close { code, reason }) => {
                    events.push((format!("Close {code:?} {reason}"), vec![]))
                }
                None => {}
            }
        }
        assert_eq!(pos, stream.len(), "stream fully consumed");
        Ok(events)
    }

    #[test]
    fn whole_message_is_borrowed_and_unmasked() {
        let mut frame = client_frame(OpCode::Binary, b"abc", KEY);
        let mut fragments = None;
        let step = read_frame(&mut frame, Role::Server, 100, &mut fragments)
            .unwrap()
            .unwrap();
        assert_eq!(step.consumed, 9);
        assert_eq!(
            step.event,
            Some(Event::Message {
                opcode: OpCode::Binary,
                payload: Payload::Borrowed(b"abc"),
                compressed: false,
            })
        );
    }

    #[test]
    fn incomplete_frames_wait_for_more_bytes() {
        let frame = client_frame(OpCode::Text, b"hello", KEY);
        for cut in 0..frame.len() {
            let mut partial = frame[..cut].to_vec();
            let mut fragments = None;
            let step = read_frame(&mut partial, Role::Server, 100, &mut fragments).unwrap();
            assert!(step.is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn fragments_reassemble_with_control_frames_between() {
        let mut stream = fragment(false, OpCode::Text, "héllo ".as_bytes());
        stream.extend(fragment(true, OpCode::Ping, b"p"));
        stream.extend(fragment(false, OpCode::Continuation, b"wor"));
        stream.extend(fragment(true, OpCode::Continuation, b"ld"));
        let events = read_all(stream, 100).unwrap();
        assert_eq!(events[0], ("Ping".into(), b"p".to_vec()));
        assert_eq!(
            events[1],
            ("Text".into(), "héllo world".as_bytes().to_vec())
        );
    }

    #[test]
    fn utf8_split_inside_a_code_point_across_fragments_is_valid() {
        let text = "€uro".as_bytes(); // € is three bytes
        let mut stream = fragment(false, OpCode::Text, &text[..1]);
        stream.extend(fragment(false, OpCode::Continuation, &text[1..2]));
        stream.extend(fragment(true, OpCode::Continuation, &text[2..]));
        let events = read_all(stream, 100).unwrap();
        assert_eq!(events, vec![("Text".into(), text.to_vec())]);
    }

    #[test]
    fn invalid_utf8_fails_fast_and_at_the_end() {
        // 0xFF can never start a code point: fails in the first fragment.
        let stream = fragment(false, OpCode::Text, &[b'a', 0xFF]);
        assert_eq!(read_all(stream, 100), Err(Violation::InvalidUtf8));
        // A truncated code point is only an error once the message ends.
        let mut stream = fragment(false, OpCode::Text, &[0xE2, 0x82]);
        stream.extend(fragment(true, OpCode::Continuation, b""));
        assert_eq!(read_all(stream, 100), Err(Violation::InvalidUtf8));
        // Whole single-frame text is checked too.
        let stream = fragment(true, OpCode::Text, &[0xC0, 0xAF]);
        assert_eq!(read_all(stream, 100), Err(Violation::InvalidUtf8));
        assert_eq!(Violation::InvalidUtf8.close_code(), 1007);
    }

    #[test]
    fn fragment_sequence_errors_are_protocol_errors() {
        let stream = fragment(true, OpCode::Continuation, b"x");
        assert_eq!(
            read_all(stream, 100),
            Err(Violation::UnexpectedContinuation)
        );
        let mut stream = fragment(false, OpCode::Binary, b"x");
        stream.extend(fragment(true, OpCode::Binary, b"y"));
        assert_eq!(read_all(stream, 100), Err(Violation::InterleavedMessage));
        assert_eq!(Violation::InterleavedMessage.close_code(), 1002);
    }

    #[test]
    fn size_limit_applies_to_frames_and_to_reassembled_messages() {
        let stream = fragment(true, OpCode::Binary, &[0; 11]);
        let error = read_all(stream, 10).unwrap_err();
        assert_eq!(error, Violation::Frame(FrameError::TooBig));
        assert_eq!(error.close_code(), 1009);
        let mut stream = fragment(false, OpCode::Binary, &[0; 6]);
        stream.extend(fragment(true, OpCode::Continuation, &[0; 6]));
        assert_eq!(read_all(stream, 10), Err(Violation::MessageTooBig));
        let stream = fragment(true, OpCode::Binary, &[0; 10]);
        assert!(read_all(stream, 10).is_ok());
    }

    #[test]
    fn close_frames_are_validated() {
        let events = read_all(fragment(true, OpCode::Close, b""), 100).unwrap();
        assert_eq!(events[0].0, "Close None ");
        let events = read_all(fragment(true, OpCode::Close, b"\x03\xe8bye"), 100).unwrap();
        assert_eq!(events[0].0, "Close Some(1000) bye");
        let short = read_all(fragment(true, OpCode::Close, b"\x03"), 100);
        assert_eq!(short, Err(Violation::ShortClosePayload));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let payload = code.to_be_bytes();
            let result = read_all(fragment(true, OpCode::Close, &payload), 100);
            assert_eq!(result, Err(Violation::InvalidCloseCode(code)));
        }
        let bad_reason = read_all(fragment(true, OpCode::Close, b"\x03\xe8\xff"), 100);
        assert_eq!(bad_reason, Err(Violation::InvalidUtf8));
    }

    /// `fragment` with RSV1 set: a compressed message's first frame.
    fn compressed(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut frame = fragment(fin, opcode, payload);
        frame[0] |= 0x40;
        frame
    }

    #[test]
    fn rsv1_marks_a_compressed_message_only_where_deflate_was_negotiated() {
        // Not negotiated: RSV1 is a reserved bit (1002).
        let error = read_all(compressed(true, OpCode::Text, b"\xf2\x48"), 100).unwrap_err();
        assert_eq!(
            error,
            Violation::Frame(FrameError::CompressionNotNegotiated)
        );
        assert_eq!(error.close_code(), close_code::PROTOCOL_ERROR);
        // Negotiated: the message comes out compressed, its bytes as sent
        // (not UTF-8, and not checked as such until inflated).
        let events = read_all_allowing(compressed(true, OpCode::Text, b"\xf2\x48"), 100, true);
        assert_eq!(
            events.unwrap(),
            [("Text compressed".to_string(), b"\xf2\x48".to_vec())]
        );
        // Fragmented: RSV1 on the first frame only.
        let mut stream = compressed(false, OpCode::Binary, b"\xff\x01");
        stream.extend(fragment(true, OpCode::Continuation, b"\x02"));
        let events = read_all_allowing(stream, 100, true).unwrap();
        assert_eq!(
            events,
            [("Binary compressed".to_string(), b"\xff\x01\x02".to_vec())]
        );
        // An uncompressed message on the same connection is still checked.
        let events = read_all_allowing(fragment(true, OpCode::Text, b"\xff"), 100, true);
        assert_eq!(events, Err(Violation::InvalidUtf8));
    }

    #[test]
    fn rsv1_on_a_continuation_or_control_frame_and_rsv2_rsv3_are_protocol_errors() {
        let mut stream = compressed(false, OpCode::Text, b"a");
        stream.extend(compressed(true, OpCode::Continuation, b"b"));
        let error = read_all_allowing(stream, 100, true).unwrap_err();
        assert_eq!(error, Violation::CompressedContinuation);
        assert_eq!(error.close_code(), close_code::PROTOCOL_ERROR);
        let error = read_all_allowing(compressed(true, OpCode::Ping, b""), 100, true).unwrap_err();
        assert_eq!(error, Violation::Frame(FrameError::CompressedControl));
        assert_eq!(error.close_code(), close_code::PROTOCOL_ERROR);
        for bit in [0x20, 0x10] {
            let mut frame = fragment(true, OpCode::Text, b"a");
            frame[0] |= bit;
            let error = read_all_allowing(frame, 100, true).unwrap_err();
            assert_eq!(
                error,
                Violation::Frame(FrameError::ReservedBits),
                "{bit:#x}"
            );
        }
    }
}
