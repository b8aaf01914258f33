//! permessage-deflate negotiation (RFC 7692 §7): what a client offers in
//! `Sec-WebSocket-Extensions`, and what the server answers. Pure functions
//! over header values; an offer the server cannot honour is declined (the
//! connection goes on uncompressed), and the answer never carries a
//! parameter the offer did not allow.

use std::fmt::Write;

/// The extension's token.
pub const NAME: &str = "permessage-deflate";
/// LZ77 window sizes a peer may ask for (RFC 7692 §7.1.2).
pub const WINDOW_BITS: std::ops::RangeInclusive<u8> = 8..=15;
/// The smallest window zlib compresses with: a raw deflate stream asked for
/// with 8 bits is made with 9, so an offer that limits the server to 8 is
/// declined rather than broken.
pub const SMALLEST_SERVER_WINDOW: u8 = 9;

/// What the server does with permessage-deflate (`--deflate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeflateMode {
    /// Decline every offer: frames go uncompressed.
    Off,
    /// No context takeover either way: a room message is compressed once
    /// per shard and the same frame goes to every member that negotiated
    /// it; an idle connection keeps no compressor or inflater.
    Shared,
    /// Context takeover both ways (what most servers do): a compressor and
    /// an inflater per connection, kept while it lives.
    PerConnection,
}

/// The client's `client_max_window_bits`: absent, present without a value
/// (the client can honour any limit the server sets), or with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientBits {
    Absent,
    Any,
    AtMost(u8),
}

/// One offer's parameters, each at most once and each valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: ClientBits,
}

/// Why an offer was declined.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Declined {
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),
    #[error("parameter `{0}` given twice")]
    DuplicateParameter(String),
    #[error("parameter `{0}` has an invalid value")]
    InvalidValue(String),
    #[error("server_max_window_bits {0}: zlib cannot compress with a window under 2^9")]
    WindowTooSmall(u8),
}

/// What both ends agreed on: the server's answer, and how each side
/// compresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window, bits (the answer says so when under 15).
    pub server_window_bits: u8,
    /// The client's LZ77 window, bits: what the server must inflate with.
    pub client_window_bits: u8,
    /// Whether the answer names `client_max_window_bits` (only when the
    /// offer had it).
    client_bits_in_answer: bool,
}

/// What the server is willing to do, beside its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateLimits {
    /// The largest LZ77 window the server compresses with (9–15).
    pub server_max_window_bits: u8,
    /// The largest window the server asks clients to limit theirs to, when
    /// they offer to be limited (8–15): the inflater a connection keeps
    /// under context takeover is 2^this bytes.
    pub client_max_window_bits: u8,
}

impl Default for DeflateLimits {
    fn default() -> DeflateLimits {
        DeflateLimits {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// The offers of permessage-deflate in a request's
/// `Sec-WebSocket-Extensions` values, in order: each offer parsed, or why
/// it cannot be accepted. Other extensions are skipped.
pub fn offers<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Result<Offer, Declined>> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .filter_map(|extension| {
            let mut parts = extension.split(';').map(str::trim);
            let name = parts.next()?;
            name.eq_ignore_ascii_case(NAME).then(|| parse_offer(parts))
        })
        .collect()
}

/// What a client offers: permessage-deflate, letting the server limit the
/// client's window (what browsers send).
pub const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The client's reading of the server's answer to [`CLIENT_OFFER`]: what
/// both agreed, or why the answer is not one the offer allowed (the client
/// must then fail the connection, RFC 7692 §7.1.1).
pub fn parse_answer(value: &str) -> Result<Agreed, Declined> {
    let mut extensions = offers([value]);
    if extensions.len() != 1 {
        return Err(Declined::InvalidValue(value.to_string()));
    }
    let answer = extensions.remove(0)?;
    let client_window_bits = match answer.client_max_window_bits {
        ClientBits::Absent => 15,
        ClientBits::AtMost(bits) => bits,
        // An answer must give the client's window a value.
        ClientBits::Any => return Err(Declined::InvalidValue("client_max_window_bits".into())),
    };
    Ok(Agreed {
        server_no_context_takeover: answer.server_no_context_takeover,
        client_no_context_takeover: answer.client_no_context_takeover,
        server_window_bits: answer.server_max_window_bits.unwrap_or(15),
        client_window_bits,
        client_bits_in_answer: answer.client_max_window_bits != ClientBits::Absent,
    })
}

fn parse_offer<'a>(params: impl Iterator<Item = &'a str>) -> Result<Offer, Declined> {
    let mut offer = Offer {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: None,
        client_max_window_bits: ClientBits::Absent,
    };
    let mut seen: Vec<String> = Vec::new();
    for param in params.filter(|p| !p.is_empty()) {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim()))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return Err(Declined::DuplicateParameter(name));
        }
        let invalid = || Declined::InvalidValue(name.clone());
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => offer.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => offer.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => {
                offer.server_max_window_bits = Some(window_bits(v).ok_or_else(invalid)?);
            }
            ("client_max_window_bits", None) => offer.client_max_window_bits = ClientBits::Any,
            ("client_max_window_bits", Some(v)) => {
                offer.client_max_window_bits =
                    ClientBits::AtMost(window_bits(v).ok_or_else(invalid)?);
            }
            ("server_no_context_takeover" | "client_no_context_takeover", Some(_))
            | ("server_max_window_bits", None) => return Err(invalid()),
            _ => return Err(Declined::UnknownParameter(name)),
        }
        seen.push(name);
    }
    Ok(offer)
}

/// A quoted-string's content (RFC 6455 §9.1 allows `x="10"`); a token as is.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// 8–15 written as 1*DIGIT with no leading zero (RFC 7692 §7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    WINDOW_BITS.contains(&bits).then_some(bits)
}

/// The server's choice: the first offer it can accept in `mode` within
/// `limits`, or none. The reasons each earlier offer was declined come
/// back too (for the stats).
pub fn choose(
    offers: &[Result<Offer, Declined>],
    mode: DeflateMode,
    limits: DeflateLimits,
) -> (Option<Agreed>, Vec<Declined>) {
    let mut declined = Vec::new();
    if mode == DeflateMode::Off {
        return (None, declined);
    }
    for offer in offers {
        match offer.clone().and_then(|offer| accept(&offer, mode, limits)) {
            Ok(agreed) => return (Some(agreed), declined),
            Err(why) => declined.push(why),
        }
    }
    (None, declined)
}

fn accept(offer: &Offer, mode: DeflateMode, limits: DeflateLimits) -> Result<Agreed, Declined> {
    let shared = mode == DeflateMode::Shared;
    let server_window_bits = match offer.server_max_window_bits {
        Some(bits) if bits < SMALLEST_SERVER_WINDOW => return Err(Declined::WindowTooSmall(bits)),
        Some(bits) => bits.min(limits.server_max_window_bits),
        None => limits.server_max_window_bits,
    };
    let (client_window_bits, client_bits_in_answer) = match offer.client_max_window_bits {
        // The client did not offer to be limited: it may use 15, and the
        // answer must not name the parameter.
        ClientBits::Absent => (15, false),
        ClientBits::Any => (limits.client_max_window_bits, true),
        ClientBits::AtMost(bits) => (bits.min(limits.client_max_window_bits), true),
    };
    Ok(Agreed {
        // The server may always give up its own context (§7.1.1.1), and
        // may ask the client to give up its (§7.1.1.2).
        server_no_context_takeover: shared || offer.server_no_context_takeover,
        client_no_context_takeover: shared || offer.client_no_context_takeover,
        server_window_bits,
        client_window_bits,
        client_bits_in_answer,
    })
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the server's answer.
    pub fn answer(&self) -> String {
        let mut answer = NAME.to_string();
        if self.server_no_context_takeover {
            answer.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if self.server_window_bits < 15 {
            let _ = write!(
                answer,
                "; server_max_window_bits={}",
                self.server_window_bits
            );
        }
        if self.client_bits_in_answer && self.client_window_bits < 15 {
            let _ = write!(
                answer,
                "; client_max_window_bits={}",
                self.client_window_bits
            );
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose_for(header: &str, mode: DeflateMode) -> (Option<Agreed>, Vec<Declined>) {
        choose(&offers([header]), mode, DeflateLimits::default())
    }

    #[test]
    fn what_browsers_offer_is_accepted_and_answered_within_it() {
        // Chrome and Firefox: the extension with client_max_window_bits.
        let (agreed, declined) = choose_for(
            "permessage-deflate; client_max_window_bits",
            DeflateMode::PerConnection,
        );
        let agreed = agreed.unwrap();
        assert!(declined.is_empty());
        assert_eq!(agreed.answer(), "permessage-deflate");
        assert_eq!(
            (agreed.server_window_bits, agreed.client_window_bits),
            (15, 15)
        );
        // Shared: no context takeover either way, which the server may ask.
        let (agreed, _) = choose_for("permessage-deflate", DeflateMode::Shared);
        assert_eq!(
            agreed.unwrap().answer(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn window_limits_are_honoured_and_never_named_unasked() {
        let limits = DeflateLimits {
            server_max_window_bits: 12,
            client_max_window_bits: 10,
        };
        let agree = |header: &str| choose(&offers([header]), DeflateMode::PerConnection, limits);
        // No client_max_window_bits offered: the answer must not name it,
        // and the server inflates with a 15-bit window.
        let agreed = agree("permessage-deflate").0.unwrap();
        assert_eq!(
            agreed.answer(),
            "permessage-deflate; server_max_window_bits=12"
        );
        assert_eq!(agreed.client_window_bits, 15);
        // Offered without a value: the server sets its limit.
        let agreed = agree("permessage-deflate; client_max_window_bits")
            .0
            .unwrap();
        assert_eq!(
            agreed.answer(),
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"
        );
        // The client's own limits are kept when smaller than the server's.
        let agreed =
            agree("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9")
                .0
                .unwrap();
        assert_eq!(
            (agreed.server_window_bits, agreed.client_window_bits),
            (10, 9)
        );
        // A quoted value is the same value.
        let agreed = agree("permessage-deflate; server_max_window_bits=\"11\"")
            .0
            .unwrap();
        assert_eq!(agreed.server_window_bits, 11);
    }

    #[test]
    fn bad_offers_are_declined_with_the_reason_and_the_next_offer_tried() {
        let cases = [
            (
                "permessage-deflate; client_max_window_bits=16",
                "invalid value",
            ),
            (
                "permessage-deflate; client_max_window_bits=7",
                "invalid value",
            ),
            (
                "permessage-deflate; client_max_window_bits=010",
                "invalid value",
            ),
            (
                "permessage-deflate; server_max_window_bits",
                "invalid value",
            ),
            (
                "permessage-deflate; server_no_context_takeover=1",
                "invalid value",
            ),
            ("permessage-deflate; x_custom", "unknown parameter"),
            (
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
                "twice",
            ),
            ("permessage-deflate; server_max_window_bits=8", "under 2^9"),
        ];
        for (header, why) in cases {
            let (agreed, declined) = choose_for(header, DeflateMode::PerConnection);
            assert_eq!(agreed, None, "{header}");
            assert_eq!(declined.len(), 1, "{header}");
            assert!(
                declined[0].to_string().contains(why),
                "{header}: {}",
                declined[0]
            );
        }
        // Two offers in one header, the first bad: the second is taken.
        let (agreed, declined) = choose_for(
            "permessage-deflate; client_max_window_bits=99, permessage-deflate",
            DeflateMode::PerConnection,
        );
        assert!(agreed.is_some());
        assert_eq!(declined.len(), 1);
    }

    #[test]
    fn other_extensions_and_off_leave_the_connection_uncompressed() {
        assert_eq!(offers(["x-webkit-deflate-frame", "foo; bar=1"]), vec![]);
        let (agreed, declined) = choose_for("permessage-deflate", DeflateMode::Off);
        assert_eq!((agreed, declined.len()), (None, 0));
        // Offers spread over two header lines are all seen.
        assert_eq!(
            offers(["foo", "permessage-deflate, permessage-deflate"]).len(),
            2
        );
    }

    #[test]
    fn a_client_reads_every_answer_the_server_gives() {
        for (mode, offer) in [
            (DeflateMode::Shared, CLIENT_OFFER),
            (DeflateMode::PerConnection, CLIENT_OFFER),
            (
                DeflateMode::PerConnection,
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            ),
        ] {
            let (agreed, _) = choose(&offers([offer]), mode, DeflateLimits::default());
            let agreed = agreed.unwrap();
            let read = parse_answer(&agreed.answer()).unwrap();
            let terms = |a: Agreed| {
                let Agreed {
                    server_no_context_takeover: s,
                    client_no_context_takeover: c,
                    ..
                } = a;
                (s, c, a.server_window_bits, a.client_window_bits)
            };
            assert_eq!(terms(read), terms(agreed), "{offer}");
        }
        assert!(parse_answer("permessage-deflate; client_max_window_bits").is_err());
        assert!(parse_answer("permessage-deflate; server_max_window_bits=16").is_err());
        assert!(parse_answer("permessage-deflate, permessage-deflate").is_err());
        assert!(parse_answer("x-other").is_err());
    }
}
