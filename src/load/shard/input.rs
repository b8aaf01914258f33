//! Reading a client's socket and parsing what the server sent: the upgrade
//! response (or TCP hello answer, or a floor server's greeting), then frames
//! or length-prefixed messages.

use std::io::{self, Read};

use super::{Shard, MAX_MESSAGE};
use crate::load::client::{self, Phase};
use crate::load::payload::now_ns;
use crate::load::target::Wire;
use crate::protocol::bare;
use crate::protocol::frame::{client_frame, OpCode, Role};
use crate::protocol::handshake;
use crate::protocol::message::{self, Event};
use crate::protocol::tcp;

impl Shard {
    pub(super) fn on_readable(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(client) = self.clients.get_mut(key) {
            if client.phase == Phase::Connecting {
                break;
            }
            match client.socket.read(&mut scratch) {
                Ok(0) => {
                    self.server_closed(key, "hung up", &[]);
                    break;
                }
                Ok(n) => {
                    let open = match self.tls.is_some() {
                        true => self.tls_bytes(key, &mut scratch[..n]),
                        false => self.on_bytes(key, &mut scratch[..n]),
                    };
                    if !open {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail_client(key, &client::failure_cause(&e));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Bytes just read: parsed where they lie, unless the start of a frame
    /// waits from an earlier read; what is left of an unfinished frame is
    /// kept for the next. Returns whether the client is still open.
    pub(super) fn on_bytes(&mut self, key: usize, read: &mut [u8]) -> bool {
        let mut partial = self.clients[key].take_partial();
        let input: &mut [u8] = if partial.is_empty() {
            read
        } else {
            partial.extend_from_slice(read);
            &mut partial
        };
        let Some(used) = self.on_input(key, input) else {
            return false;
        };
        match self.clients.get_mut(key) {
            Some(client) => {
                client.keep_partial(&input[used..]);
                true
            }
            None => false, // a churn connection, done after its echo
        }
    }

    /// Consume what `input` holds: returns how much of it, or `None` once
    /// the client is gone.
    fn on_input(&mut self, key: usize, input: &mut [u8]) -> Option<usize> {
        let now = now_ns();
        let mut used = 0;
        while used < input.len() {
            let client = self.clients.get(key)?;
            let rest = &mut input[used..];
            let parsed = match (client.phase, self.job.targets[0].wire) {
                (Phase::Handshaking, Wire::Ws) => self.upgrade_response(key, rest, now),
                (Phase::Handshaking, Wire::Tcp) => self.hello_answer(key, rest, now),
                (Phase::Handshaking, Wire::Bare) => self.greeting(key, rest, now),
                (_, Wire::Ws) => self.ws_frame(key, rest, now),
                (_, Wire::Tcp | Wire::Bare) => self.tcp_message(key, rest, now),
            };
            match parsed {
                Parsed::NeedMore => break,
                Parsed::Used(n) => used += n,
                Parsed::Closed => return None,
            }
        }
        Some(used)
    }

    fn upgrade_response(&mut self, key: usize, input: &[u8], now: u64) -> Parsed {
        let expected = self.clients[key].key();
        match handshake::parse_response(input, expected) {
            Ok(None) => Parsed::NeedMore,
            Ok(Some(accepted)) => {
                if let Err(why) = self.agree_deflate(key, accepted.extensions.as_deref()) {
                    return self.refused(key, &why);
                }
                self.on_opened(key, now);
                Parsed::Used(accepted.len)
            }
            Err(handshake::ResponseError::Status(status)) => {
                self.refused(key, &format!("http {status}"))
            }
            Err(e) => self.refused(key, &e.to_string()),
        }
    }

    fn hello_answer(&mut self, key: usize, input: &[u8], now: u64) -> Parsed {
        match tcp::decode(input, MAX_MESSAGE) {
            Ok(Some((answer, len))) if answer == tcp::HELLO_OK => {
                self.on_opened(key, now);
                Parsed::Used(len)
            }
            Ok(Some(_)) => self.refused(key, "hello refused"),
            Ok(None) => Parsed::NeedMore,
            Err(_) => self.refused(key, "oversized message from server"),
        }
    }

    fn greeting(&mut self, key: usize, input: &[u8], now: u64) -> Parsed {
        match input.first() {
            Some(&bare::GREETING) => {
                self.on_opened(key, now);
                Parsed::Used(1)
            }
            Some(_) => self.refused(key, "not a floor server (bad greeting)"),
            None => Parsed::NeedMore,
        }
    }

    fn tcp_message(&mut self, key: usize, input: &[u8], now: u64) -> Parsed {
        match tcp::decode(input, MAX_MESSAGE) {
            Ok(Some((message, len))) => {
                self.on_message(key, message, now);
                Parsed::Used(len)
            }
            Ok(None) => Parsed::NeedMore,
            Err(_) => self.refused(key, "oversized message from server"),
        }
    }

    /// The extension the server agreed to in its 101, if any: only the
    /// permessage-deflate we offered, with parameters the offer allowed.
    fn agree_deflate(&mut self, key: usize, answer: Option<&str>) -> Result<(), String> {
        let Some(answer) = answer else {
            return Ok(());
        };
        let Some(deflate) = self.deflate.as_mut() else {
            return Err(format!(
                "the server agreed to an extension not offered: {answer}"
            ));
        };
        self.clients[key].deflate_window = deflate.agree(key, answer)?;
        self.result.deflate_agreed += 1;
        Ok(())
    }

    fn ws_frame(&mut self, key: usize, input: &mut [u8], now: u64) -> Parsed {
        let client = &mut self.clients[key];
        let window = client.deflate_window;
        let mut fragments = client.take_fragments();
        let step = message::read_frame_allowing(
            input,
            Role::Client,
            MAX_MESSAGE,
            window > 0,
            &mut fragments,
        );
        client.keep_fragments(fragments);
        let step = match step {
            Ok(Some(step)) => step,
            Ok(None) => return Parsed::NeedMore,
            Err(e) => return self.refused(key, &format!("bad frame from server: {e}")),
        };
        match step.event {
            Some(Event::Message {
                opcode,
                payload,
                compressed: true,
            }) => {
                let deflate = self.deflate.as_mut().expect("compressed only where agreed");
                match deflate.inflate(key, window, (opcode, &payload, MAX_MESSAGE)) {
                    Ok(inflated) => self.on_message(key, &inflated, now),
                    Err(e) => {
                        return self
                            .refused(key, &format!("bad compressed message from server: {e}"))
                    }
                }
            }
            Some(Event::Message { payload, .. }) => self.on_message(key, &payload, now),
            Some(Event::Ping(data)) => {
                let pong = client_frame(OpCode::Pong, data, self.next_mask());
                let _ = self.send_to(key, &pong);
            }
            Some(Event::Close { code, .. }) => {
                // Answered with its code, as RFC 6455 §5.5.1 asks.
                let (how, answer) = match code {
                    Some(code) => (code.to_string(), code.to_be_bytes().to_vec()),
                    None => ("no code".to_string(), Vec::new()),
                };
                let answer = client_frame(OpCode::Close, &answer, self.next_mask());
                self.server_closed(key, &how, &answer);
                return Parsed::Closed;
            }
            Some(Event::Pong(_)) | None => {}
        }
        Parsed::Used(step.consumed)
    }

    /// The server ended or refused the connection: count it by `cause`.
    fn refused(&mut self, key: usize, cause: &str) -> Parsed {
        self.fail_client(key, cause);
        Parsed::Closed
    }
}

/// What one parsing step did with a client's input.
enum Parsed {
    NeedMore,
    Used(usize),
    Closed,
}
