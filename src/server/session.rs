//! What a connection does with the bytes it receives, whatever backend read
//! them: the WebSocket handshake or TCP hello, then frames in and replies or
//! room publishes out. Backends implement [`Outbox`] and call [`on_input`];
//! protocol behaviour is written once, here.

use bytes::Bytes;

use crate::protocol::close_code;
use crate::protocol::deflate::{self, Agreed, DeflateLimits, DeflateMode};
use crate::protocol::frame::{self, encode_header, OpCode, Role, MAX_HEADER_LEN};
use crate::protocol::handshake::{self, Parsed, Upgrade};
use crate::protocol::message::{self, Event, Fragments, Violation};
use crate::protocol::Proto;
use crate::protocol::{tcp, Route};
use crate::server::admission::Refusal;
use crate::server::deflate::{is_about_compression, DeflateEvent};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the WebSocket request or the TCP hello.
    Handshake,
    /// Exchanging messages; a `Room` connection is a room member.
    Open(Route),
    /// Our last bytes (a close frame or an HTTP error) are being written;
    /// then the connection does what [`AfterFlush`] says.
    Closing(AfterFlush),
    /// Write side shut down; waiting for the peer to hang up or, on a
    /// WebSocket, to answer our close frame. Other input is discarded.
    Draining,
}

/// What a closing connection does once its last bytes are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFlush {
    /// The peer started the close handshake and we answered: the handshake
    /// is complete and the server closes the TCP connection first (§7.1.1).
    HangUp,
    /// We started the close (an error, a refusal): shut our write side and
    /// read until the peer answers or hangs up, so that closing with unread
    /// input cannot turn into a reset that destroys our last message.
    Drain,
}

/// The ways a backend sends what the protocol decides.
pub trait Outbox {
    /// Bytes for this connection alone, in order (e.g. a header and a payload).
    fn reply(&mut self, parts: &[&[u8]]);
    /// A message echoed back: a reply the backend may count apart.
    fn echo(&mut self, parts: &[&[u8]]);
    /// A frame for every room member on every shard, this connection included.
    fn publish(&mut self, frame: Bytes);
    /// A handshake is complete: may the connection upgrade? (Admission
    /// control: `server::admission`.) A yes holds its place until it closes.
    fn admit(&mut self) -> Result<(), Refusal>;
    /// The upgrade agreed on permessage-deflate: keep what the connection
    /// needs (`protocol::deflate::ConnDeflate`). False when it cannot (the
    /// codec memory budget): the offer is then declined.
    fn agree_deflate(&mut self, agreed: &Agreed) -> bool;
    /// Whether the connection agreed on permessage-deflate.
    fn deflating(&self) -> bool;
    /// A data message compressed into one frame with the connection's codec
    /// (only called when [`Outbox::deflating`]).
    fn compressed_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Bytes;
    /// A compressed message inflated with the connection's codec, at most
    /// `max` bytes, checked as its opcode says (`deflate::inflate_message`).
    fn inflate(&mut self, opcode: OpCode, payload: &[u8], max: usize)
        -> Result<Vec<u8>, Violation>;
    /// Something about permessage-deflate to count.
    fn count_deflate(&mut self, event: DeflateEvent);
}

/// Why the protocol ended a connection, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Handshake refused with this HTTP status (404 for an unknown TCP hello).
    Rejected(u16),
    /// The peer broke the protocol; we closed with this code.
    Violation(u16),
    /// The peer started the close handshake and we answered.
    PeerClosed,
    /// The peer answered the close we sent: hang up now.
    CloseAnswered,
}

/// Did input that moved a connection from `before` to `after` (ending as
/// `ending`) complete its handshake? A request and a close can arrive in
/// one read: the session then goes from Handshake straight to Closing,
/// having upgraded in between.
pub fn upgraded(before: Phase, after: Phase, ending: Option<Ending>) -> bool {
    before == Phase::Handshake
        && (matches!(after, Phase::Open(_))
            || matches!(ending, Some(Ending::PeerClosed | Ending::Violation(_))))
}

/// Limits and protocol, fixed for the server's life.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub proto: Proto,
    pub max_message: usize,
    pub max_handshake: usize,
    /// What to do with permessage-deflate offers, and within what windows.
    pub deflate: DeflateMode,
    pub deflate_limits: DeflateLimits,
}

impl Limits {
    pub fn of(settings: &crate::server::settings::Settings) -> Limits {
        Limits {
            proto: settings.proto,
            max_message: settings.max_message,
            max_handshake: settings.max_handshake,
            deflate: settings.deflate.mode,
            deflate_limits: settings.deflate.limits,
        }
    }
}

enum Progress {
    NeedMore,
    Used(usize),
    End(Ending),
}

/// Feed the bytes that have arrived. Returns how many were used (the rest is
/// an incomplete request or frame to present again with more bytes) and, if
/// the connection must close, why; `phase` is then `Closing` (or stays
/// `Draining` when the peer answered our close). Input while closing is
/// discarded, except that a draining WebSocket looks for the peer's close.
pub fn on_input(
    limits: &Limits,
    phase: &mut Phase,
    input: &mut [u8],
    fragments: &mut Option<Box<Fragments>>,
    out: &mut impl Outbox,
) -> (usize, Option<Ending>) {
    let mut used = 0;
    while used < input.len() {
        let rest = &mut input[used..];
        let progress = match (*phase, limits.proto) {
            (Phase::Handshake, Proto::Ws) => ws_handshake(limits, phase, rest, out),
            (Phase::Handshake, Proto::Tcp) => tcp_hello(limits, phase, rest, out),
            (Phase::Open(route), Proto::Ws) => ws_frame(limits, route, rest, fragments, out),
            (Phase::Open(route), Proto::Tcp) => tcp_message(limits, route, rest, out),
            (Phase::Draining, Proto::Ws) => ws_drain(limits, rest),
            (Phase::Closing(_) | Phase::Draining, _) => Progress::Used(rest.len()),
        };
        match progress {
            Progress::NeedMore => break,
            Progress::Used(n) => used += n,
            Progress::End(ending) => {
                *phase = match ending {
                    Ending::CloseAnswered => Phase::Draining,
                    Ending::PeerClosed => Phase::Closing(AfterFlush::HangUp),
                    Ending::Rejected(_) | Ending::Violation(_) => Phase::Closing(AfterFlush::Drain),
                };
                *fragments = None;
                return (input.len(), Some(ending));
            }
        }
    }
    (used, None)
}

fn ws_handshake(
    limits: &Limits,
    phase: &mut Phase,
    input: &[u8],
    out: &mut impl Outbox,
) -> Progress {
    match handshake::parse_request(input, limits.max_handshake) {
        Ok(Parsed::Partial) => Progress::NeedMore,
        Ok(Parsed::Upgrade { upgrade, len }) => {
            if let Err(refusal) = out.admit() {
                out.reply(&[&refusal.http_response()]);
                return Progress::End(Ending::Rejected(503));
            }
            let extension = negotiate_deflate(limits, &upgrade, out);
            out.reply(&[&handshake::accept_response(&upgrade, extension.as_deref())]);
            *phase = Phase::Open(upgrade.route);
            Progress::Used(len)
        }
        Err(rejection) => {
            out.reply(&[&rejection.response()]);
            Progress::End(Ending::Rejected(rejection.status().0))
        }
    }
}

/// The permessage-deflate answer for the 101, if the server agrees to one
/// of the offers (`--deflate`); every declined offer is counted.
fn negotiate_deflate(limits: &Limits, upgrade: &Upgrade, out: &mut impl Outbox) -> Option<String> {
    if limits.deflate == DeflateMode::Off {
        return None;
    }
    let (agreed, declined) = deflate::choose(
        &upgrade.deflate_offers,
        limits.deflate,
        limits.deflate_limits,
    );
    for why in declined {
        out.count_deflate(DeflateEvent::Declined(why));
    }
    let agreed = agreed?;
    if !out.agree_deflate(&agreed) {
        out.count_deflate(DeflateEvent::OverBudget);
        return None;
    }
    out.count_deflate(DeflateEvent::Agreed);
    Some(agreed.answer())
}

/// Close for `violation`: its code, its description as the reason;
/// counted by its reason too when it is about a compressed message.
fn violated(out: &mut impl Outbox, violation: Violation, compression: bool) -> Progress {
    if compression {
        out.count_deflate(DeflateEvent::Broken(violation));
    }
    let code = violation.close_code();
    send_close(out, code, &violation.to_string());
    Progress::End(Ending::Violation(code))
}

fn ws_frame(
    limits: &Limits,
    route: Route,
    input: &mut [u8],
    fragments: &mut Option<Box<Fragments>>,
    out: &mut impl Outbox,
) -> Progress {
    let max = limits.max_message;
    let deflating = out.deflating();
    let step = match message::read_frame_allowing(input, Role::Server, max, deflating, fragments) {
        Ok(Some(step)) => step,
        Ok(None) => return Progress::NeedMore,
        Err(violation) => return violated(out, violation, is_about_compression(violation)),
    };
    match step.event {
        None | Some(Event::Pong(_)) => {}
        Some(Event::Message {
            opcode,
            payload,
            compressed,
        }) => {
            let inflated;
            let payload = match compressed {
                false => &payload[..],
                true => match out.inflate(opcode, &payload, max) {
                    Ok(bytes) => {
                        out.count_deflate(DeflateEvent::Inflated);
                        inflated = bytes;
                        &inflated[..]
                    }
                    Err(violation) => return violated(out, violation, true),
                },
            };
            match route {
                Route::Echo if deflating => {
                    let frame = out.compressed_frame(opcode, payload);
                    out.count_deflate(DeflateEvent::Compressed);
                    out.echo(&[&frame]);
                }
                Route::Echo => {
                    let mut header = [0u8; MAX_HEADER_LEN];
                    let n = encode_header(&mut header, true, opcode, payload.len(), None);
                    out.echo(&[&header[..n], payload]);
                }
                // Published plain; each member gets it as it agreed (the room
                // compresses it once for those that agreed on deflate).
                Route::Room => out.publish(frame::server_frame(opcode, payload)),
            }
        }
        Some(Event::Ping(payload)) => {
            out.reply(&[&frame::server_frame(OpCode::Pong, payload)]);
        }
        Some(Event::Close { code, .. }) => {
            // Answer with the peer's code (§5.5.1); an empty close gets an empty one.
            let payload = code.map(u16::to_be_bytes);
            let payload = payload.as_ref().map_or(&[][..], |code| &code[..]);
            out.reply(&[&frame::server_frame(OpCode::Close, payload)]);
            return Progress::End(Ending::PeerClosed);
        }
    }
    Progress::Used(step.consumed)
}

/// After our close: skip frames until the peer's close arrives. Bytes that
/// are not frames at all are discarded; the peer's EOF or the close deadline
/// then ends the connection.
fn ws_drain(limits: &Limits, input: &mut [u8]) -> Progress {
    // Compressed frames are skipped like any other (nothing is inflated).
    match message::read_frame_allowing(input, Role::Server, limits.max_message, true, &mut None) {
        Ok(None) => Progress::NeedMore,
        Ok(Some(step)) if matches!(step.event, Some(Event::Close { .. })) => {
            Progress::End(Ending::CloseAnswered)
        }
        Ok(Some(step)) => Progress::Used(step.consumed),
        Err(_) => Progress::Used(input.len()),
    }
}

/// Send a close frame; the reason is cut to fit the 125-byte control limit.
pub fn send_close(out: &mut impl Outbox, code: u16, reason: &str) {
    let mut end = reason.len().min(frame::MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let payload = frame::close_payload(code, &reason[..end]);
    out.reply(&[&frame::server_frame(OpCode::Close, &payload)]);
}

fn tcp_hello(limits: &Limits, phase: &mut Phase, input: &[u8], out: &mut impl Outbox) -> Progress {
    let (payload, used) = match tcp::decode(input, limits.max_handshake) {
        Ok(Some(message)) => message,
        Ok(None) => return Progress::NeedMore,
        Err(_) => return Progress::End(Ending::Rejected(431)),
    };
    match tcp::parse_hello(payload) {
        Some(route) => {
            if out.admit().is_err() {
                out.reply(&[&tcp::encode(tcp::HELLO_BUSY)]);
                return Progress::End(Ending::Rejected(503));
            }
            out.reply(&[&tcp::encode(tcp::HELLO_OK)]);
            *phase = Phase::Open(route);
            Progress::Used(used)
        }
        None => {
            out.reply(&[&tcp::encode(tcp::HELLO_NOT_FOUND)]);
            Progress::End(Ending::Rejected(404))
        }
    }
}

fn tcp_message(limits: &Limits, route: Route, input: &[u8], out: &mut impl Outbox) -> Progress {
    let used = match tcp::decode(input, limits.max_message) {
        Ok(Some((_, used))) => used,
        Ok(None) => return Progress::NeedMore,
        Err(_) => return Progress::End(Ending::Violation(close_code::MESSAGE_TOO_BIG)),
    };
    // The length prefix is already in place: echo or publish the bytes as they came.
    let message = &input[..used];
    match route {
        Route::Echo => out.echo(&[message]),
        Route::Room => out.publish(Bytes::copy_from_slice(message)),
    }
    Progress::Used(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::{ConnDeflate, Deflater, Inflater, Scratch};
    use crate::protocol::frame::client_frame;

    #[derive(Default)]
    struct Recorder {
        replies: Vec<u8>,
        published: Vec<Bytes>,
        /// Refuse every upgrade with this.
        refuse: Option<Refusal>,
        /// Refuse deflate codecs (a spent budget).
        no_codecs: bool,
        mode: Option<DeflateMode>,
        deflate: Option<ConnDeflate>,
        scratch: Scratch,
        events: Vec<DeflateEvent>,
    }

    impl Outbox for Recorder {
        fn agree_deflate(&mut self, agreed: &Agreed) -> bool {
            let mode = self.mode.expect("a mode that is not off");
            self.deflate = (!self.no_codecs).then(|| ConnDeflate::new(mode, agreed));
            !self.no_codecs
        }
        fn deflating(&self) -> bool {
            self.deflate.is_some()
        }
        fn compressed_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Bytes {
            let deflate = self.deflate.as_mut().unwrap();
            deflate.compressed_frame(&mut self.scratch, opcode, payload)
        }
        fn inflate(
            &mut self,
            opcode: OpCode,
            payload: &[u8],
            max: usize,
        ) -> Result<Vec<u8>, Violation> {
            let deflate = self.deflate.as_mut().unwrap();
            deflate.inflate(&mut self.scratch, opcode, payload, max)
        }
        fn count_deflate(&mut self, event: DeflateEvent) {
            self.events.push(event);
        }
        fn admit(&mut self) -> Result<(), Refusal> {
            self.refuse.map_or(Ok(()), Err)
        }
        fn reply(&mut self, parts: &[&[u8]]) {
            parts.iter().for_each(|p| self.replies.extend_from_slice(p));
        }
        fn echo(&mut self, parts: &[&[u8]]) {
            self.reply(parts)
        }
        fn publish(&mut self, frame: Bytes) {
            self.published.push(frame);
        }
    }

    fn limits(proto: Proto) -> Limits {
        Limits {
            proto,
            max_message: 1024,
            max_handshake: 1024,
            deflate: DeflateMode::Off,
            deflate_limits: DeflateLimits::default(),
        }
    }

    /// Run the session over `input` with no fragment state.
    fn feed(
        proto: Proto,
        phase: &mut Phase,
        input: &mut [u8],
        out: &mut Recorder,
    ) -> (usize, Option<Ending>) {
        on_input(&limits(proto), phase, input, &mut None, out)
    }

    const REQUEST: &[u8] = b"GET /room HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn pipelined_frames_after_the_request_are_handled() {
        let mut input = REQUEST.to_vec();
        input.extend(client_frame(OpCode::Text, b"hi", [1, 2, 3, 4]));
        let mut phase = Phase::Handshake;
        let mut out = Recorder::default();
        let (used, ending) = feed(Proto::Ws, &mut phase, &mut input, &mut out);
        assert_eq!((used, ending), (input.len(), None));
        assert_eq!(phase, Phase::Open(Route::Room));
        assert!(out.replies.starts_with(b"HTTP/1.1 101 "));
        assert_eq!(&out.published[0][..], b"\x81\x02hi");
    }

    #[test]
    fn a_refused_upgrade_gets_a_503_and_pipelined_frames_are_dropped() {
        let mut input = REQUEST.to_vec();
        input.extend(client_frame(OpCode::Text, b"hi", [1, 2, 3, 4]));
        let mut phase = Phase::Handshake;
        let mut out = Recorder {
            refuse: Some(Refusal::OverCapacity),
            ..Recorder::default()
        };
        let (_, ending) = feed(Proto::Ws, &mut phase, &mut input, &mut out);
        assert_eq!(ending, Some(Ending::Rejected(503)));
        assert_eq!(phase, Phase::Closing(AfterFlush::Drain));
        assert!(out
            .replies
            .starts_with(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"));
        assert!(out.published.is_empty());
        // TCP: the hello's answer says to try again later.
        let mut input = tcp::encode(b"/echo");
        let mut phase = Phase::Handshake;
        let mut out = Recorder {
            refuse: Some(Refusal::AcceptRate),
            ..Recorder::default()
        };
        let (_, ending) = feed(Proto::Tcp, &mut phase, &mut input, &mut out);
        assert_eq!(ending, Some(Ending::Rejected(503)));
        assert_eq!(out.replies, tcp::encode(tcp::HELLO_BUSY));
    }

    #[test]
    fn a_partial_frame_is_left_for_later() {
        let mut input = client_frame(OpCode::Binary, b"hello", [1, 2, 3, 4]);
        input.truncate(8);
        let mut phase = Phase::Open(Route::Echo);
        let mut out = Recorder::default();
        let (used, ending) = feed(Proto::Ws, &mut phase, &mut input, &mut out);
        assert_eq!((used, ending), (0, None));
        assert!(out.replies.is_empty());
    }

    #[test]
    fn violations_close_with_their_code_and_wait_for_the_answer() {
        let mut input = vec![0x81, 0x02, b'h', b'i']; // unmasked client frame
        let mut phase = Phase::Open(Route::Echo);
        let mut out = Recorder::default();
        let (_, ending) = feed(Proto::Ws, &mut phase, &mut input, &mut out);
        assert_eq!(ending, Some(Ending::Violation(1002)));
        assert_eq!(phase, Phase::Closing(AfterFlush::Drain));
        // The peer's answer to our close ends the draining.
        let mut phase = Phase::Draining;
        let mut input = client_frame(OpCode::Close, &1002u16.to_be_bytes(), [1, 2, 3, 4]);
        let (_, ending) = feed(Proto::Ws, &mut phase, &mut input, &mut out);
        assert_eq!(ending, Some(Ending::CloseAnswered));
        assert_eq!(&out.replies[..4], &[0x88, out.replies[1], 0x03, 0xEA]);
    }

    #[test]
    fn close_reason_is_cut_to_the_control_limit_on_a_char_boundary() {
        let mut out = Recorder::default();
        send_close(&mut out, 1002, &"é".repeat(100));
        assert_eq!(out.replies[1] as usize, out.replies.len() - 2);
        assert!(out.replies.len() - 2 <= 125);
        assert!(std::str::from_utf8(&out.replies[4..]).is_ok());
    }

    #[test]
    fn tcp_hello_then_echo_keeps_the_prefix() {
        let mut input = tcp::encode(b"/echo");
        input.extend(tcp::encode(b"abc"));
        let mut phase = Phase::Handshake;
        let mut out = Recorder::default();
        feed(Proto::Tcp, &mut phase, &mut input, &mut out);
        let mut expected = tcp::encode(b"ok");
        expected.extend(tcp::encode(b"abc"));
        assert_eq!(out.replies, expected);
    }

    #[test]
    fn tcp_unknown_hello_and_oversized_message_end_the_connection() {
        let mut phase = Phase::Handshake;
        let mut out = Recorder::default();
        let mut input = tcp::encode(b"/nope");
        let (_, ending) = feed(Proto::Tcp, &mut phase, &mut input, &mut out);
        assert_eq!(ending, Some(Ending::Rejected(404)));
        let mut phase = Phase::Open(Route::Echo);
        let mut input = tcp::header(2000).to_vec();
        let (_, ending) = feed(Proto::Tcp, &mut phase, &mut input, &mut out);
        assert_eq!(ending, Some(Ending::Violation(1009)));
    }
    /// A request offering permessage-deflate with `params`.
    fn deflate_request(params: &str) -> Vec<u8> {
        let request = std::str::from_utf8(REQUEST)
            .unwrap()
            .replace("/room", "/echo");
        let header = format!("Sec-WebSocket-Extensions: permessage-deflate{params}\r\n\r\n");
        request
            .replace("\r\n\r\n", &format!("\r\n{header}"))
            .into_bytes()
    }

    fn deflate_limits(mode: DeflateMode) -> Limits {
        Limits {
            deflate: mode,
            ..limits(Proto::Ws)
        }
    }

    /// A client frame carrying `payload` compressed (RSV1).
    fn compressed_client_frame(opcode: OpCode, compressed: &[u8]) -> Vec<u8> {
        let mut frame = client_frame(opcode, compressed, [5, 6, 7, 8]);
        frame[0] |= frame::RSV1;
        frame
    }

    #[test]
    fn an_agreed_connection_inflates_what_it_gets_and_echoes_it_compressed() {
        for mode in [DeflateMode::Shared, DeflateMode::PerConnection] {
            let mut input = deflate_request("; client_max_window_bits");
            let mut client = Deflater::new(15, false);
            input.extend(compressed_client_frame(
                OpCode::Text,
                &client.message(b"hello hello"),
            ));
            let mut phase = Phase::Handshake;
            let mut out = Recorder {
                mode: Some(mode),
                ..Recorder::default()
            };
            let (_, ending) = on_input(
                &deflate_limits(mode),
                &mut phase,
                &mut input,
                &mut None,
                &mut out,
            );
            assert_eq!(ending, None);
            let text = String::from_utf8_lossy(&out.replies).into_owned();
            let answer = match mode {
                DeflateMode::Shared => {
                    "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
                }
                _ => "permessage-deflate",
            };
            assert!(
                text.contains(&format!("Sec-WebSocket-Extensions: {answer}\r\n")),
                "{text}"
            );
            let echo = &out.replies[text.find("\r\n\r\n").unwrap() + 4..];
            assert_eq!(echo[0], 0x80 | frame::RSV1 | OpCode::Text as u8, "{mode:?}");
            let inflated = Inflater::new(15, false).message(&echo[2..], 100).unwrap();
            assert_eq!(inflated, b"hello hello");
            assert_eq!(
                out.events,
                [
                    DeflateEvent::Agreed,
                    DeflateEvent::Inflated,
                    DeflateEvent::Compressed
                ]
            );
        }
    }

    #[test]
    fn offers_are_declined_when_off_unacceptable_or_over_budget() {
        let cases: [(DeflateMode, &str, bool, Vec<DeflateEvent>); 3] = [
            (DeflateMode::Off, "", false, vec![]),
            (
                DeflateMode::Shared,
                "; server_max_window_bits=8",
                false,
                vec![DeflateEvent::Declined(deflate::Declined::WindowTooSmall(8))],
            ),
            (
                DeflateMode::PerConnection,
                "",
                true,
                vec![DeflateEvent::OverBudget],
            ),
        ];
        for (mode, params, no_codecs, events) in cases {
            let mut input = deflate_request(params);
            // RSV1 after a declined offer is a protocol error.
            input.extend(compressed_client_frame(OpCode::Text, b"\xf2\x48"));
            let mut phase = Phase::Handshake;
            let mut out = Recorder {
                mode: Some(mode),
                no_codecs,
                ..Recorder::default()
            };
            let (_, ending) = on_input(
                &deflate_limits(mode),
                &mut phase,
                &mut input,
                &mut None,
                &mut out,
            );
            assert_eq!(ending, Some(Ending::Violation(1002)), "{mode:?} {params}");
            assert!(!String::from_utf8_lossy(&out.replies).contains("Sec-WebSocket-Extensions"));
            let mut expected = events;
            expected.push(DeflateEvent::Broken(Violation::Frame(
                frame::FrameError::CompressionNotNegotiated,
            )));
            assert_eq!(out.events, expected, "{mode:?} {params}");
        }
    }

    #[test]
    fn bad_compressed_messages_close_with_their_codes() {
        let bomb = Deflater::new(15, false).message(&[0u8; 10_000]);
        let cases: [(Vec<u8>, u16, Violation); 3] = [
            (
                compressed_client_frame(OpCode::Binary, &bomb),
                1009,
                Violation::MessageTooBig,
            ),
            (
                compressed_client_frame(OpCode::Binary, &[0xff; 6]),
                1007,
                Violation::CorruptCompressed,
            ),
            (
                {
                    let mut first = compressed_client_frame(OpCode::Binary, b"\xf2\x48");
                    first[0] &= !0x80; // not final
                    let mut next = client_frame(OpCode::Continuation, b"\x00", [1, 1, 1, 1]);
                    next[0] |= frame::RSV1;
                    first.extend(next);
                    first
                },
                1002,
                Violation::CompressedContinuation,
            ),
        ];
        for (frames, code, violation) in cases {
            let mut input = deflate_request("");
            input.extend(frames);
            let mut phase = Phase::Handshake;
            let mut out = Recorder {
                mode: Some(DeflateMode::Shared),
                ..Recorder::default()
            };
            let limits = deflate_limits(DeflateMode::Shared);
            let (_, ending) = on_input(&limits, &mut phase, &mut input, &mut None, &mut out);
            assert_eq!(ending, Some(Ending::Violation(code)), "{violation:?}");
            assert_eq!(out.events.last(), Some(&DeflateEvent::Broken(violation)));
        }
    }
}
