//! Raw TCP framing (`--proto tcp`), documented in `docs/tcp-framing.md`:
//! every message is a 4-byte big-endian length, then that many bytes. The
//! first message a client sends names its route (`/echo` or `/room`); the
//! server answers `ok` or an error message and closes.

use super::Route;

pub const HEADER_LEN: usize = 4;
/// The server's answer to an accepted hello.
pub const HELLO_OK: &[u8] = b"ok";
/// The server's answer to a hello naming no known route, before it closes.
pub const HELLO_NOT_FOUND: &[u8] = b"error: unknown route";
/// The server's answer to a hello it will not admit now (over --max-conns
/// or --accept-rate), before it closes: the client may try again later.
pub const HELLO_BUSY: &[u8] = b"error: try again later";

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("message of {len} bytes is larger than the limit")]
pub struct TooBig {
    pub len: usize,
}

/// The length prefix for a payload of `len` bytes.
pub fn header(len: usize) -> [u8; HEADER_LEN] {
    (len as u32).to_be_bytes()
}

/// One whole message: prefix and payload.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(HEADER_LEN + payload.len());
    message.extend_from_slice(&header(payload.len()));
    message.extend_from_slice(payload);
    message
}

/// Read one message from the front of `buf`: its payload and the bytes it
/// used, or `None` until it has fully arrived. A length over `max_message`
/// fails as soon as the prefix is read.
pub fn decode(buf: &[u8], max_message: usize) -> Result<Option<(&[u8], usize)>, TooBig> {
    let Some(prefix) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
    if len > max_message {
        return Err(TooBig { len });
    }
    let end = HEADER_LEN + len;
    Ok(buf.get(HEADER_LEN..end).map(|payload| (payload, end)))
}

/// The route a hello payload asks for.
pub fn parse_hello(payload: &[u8]) -> Option<Route> {
    std::str::from_utf8(payload).ok().and_then(Route::from_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_partial() {
        for len in [0, 1, 255, 256, 65536] {
            let payload = vec![7u8; len];
            let message = encode(&payload);
            assert_eq!(message.len(), HEADER_LEN + len);
            assert_eq!(
                decode(&message, 1 << 20),
                Ok(Some((&payload[..], message.len())))
            );
            for cut in 0..message.len() {
                assert_eq!(decode(&message[..cut], 1 << 20), Ok(None));
            }
        }
    }

    #[test]
    fn header_is_big_endian() {
        assert_eq!(encode(b"hi"), b"\x00\x00\x00\x02hi");
        assert_eq!(header(0x01020304), [1, 2, 3, 4]);
    }

    #[test]
    fn too_big_is_refused_from_the_prefix_alone() {
        assert_eq!(decode(&header(11), 10), Err(TooBig { len: 11 }));
    }

    #[test]
    fn hello_routes() {
        assert_eq!(parse_hello(b"/echo"), Some(Route::Echo));
        assert_eq!(parse_hello(b"/room"), Some(Route::Room));
        assert_eq!(parse_hello(b"/other"), None);
        assert_eq!(parse_hello(b"\xff"), None);
    }
}
