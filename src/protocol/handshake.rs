//! The HTTP/1.1 upgrade that opens a WebSocket (RFC 6455 §4): the server
//! side (parse a request, decide between `101 Switching Protocols` and the
//! precise 4xx, build the response) and the client side the load generator
//! uses (build a request, check the response).

use super::deflate::negotiate::{self, Declined, Offer};
use super::Route;

/// Most headers we parse in a request; more is answered with 431.
const MAX_HEADERS: usize = 32;

/// A request the server accepts.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    pub route: Route,
    /// The `Sec-WebSocket-Accept` value for the response.
    pub accept_key: String,
    /// The permessage-deflate offers among its `Sec-WebSocket-Extensions`
    /// headers, each parsed or declined (see `protocol::deflate`).
    pub deflate_offers: Vec<Result<Offer, Declined>>,
}

/// Why a request was refused; each maps to one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request headers larger than the limit")]
    HeadersTooLarge,
    #[error("method is not GET")]
    MethodNotAllowed,
    #[error("HTTP version below 1.1")]
    HttpVersion,
    #[error("no such path")]
    NotFound,
    #[error("no `Upgrade: websocket` header")]
    NotAnUpgrade,
    #[error("`Connection` header lacks the `Upgrade` token")]
    MissingConnectionUpgrade,
    #[error("missing or unsupported Sec-WebSocket-Version (only 13 is spoken)")]
    UnsupportedVersion,
    #[error("missing or malformed Sec-WebSocket-Key")]
    BadKey,
    #[error("handshake not completed in time")]
    Timeout,
}

impl Rejection {
    /// The HTTP status line's code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Rejection::Malformed(_) | Rejection::MissingConnectionUpgrade | Rejection::BadKey => {
                (400, "Bad Request")
            }
            Rejection::NotFound => (404, "Not Found"),
            Rejection::MethodNotAllowed => (405, "Method Not Allowed"),
            Rejection::Timeout => (408, "Request Timeout"),
            Rejection::NotAnUpgrade | Rejection::UnsupportedVersion => (426, "Upgrade Required"),
            Rejection::HeadersTooLarge => (431, "Request Header Fields Too Large"),
            Rejection::HttpVersion => (505, "HTTP Version Not Supported"),
        }
    }

    /// Headers this status requires (RFC 9110 §15.5.6, RFC 6455 §4.4).
    fn extra_headers(self) -> &'static str {
        match self {
            Rejection::MethodNotAllowed => "Allow: GET\r\n",
            Rejection::NotAnUpgrade => "Upgrade: websocket\r\nConnection: Upgrade\r\n",
            Rejection::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
            _ => "",
        }
    }

    /// The whole response, with a one-line plain-text body saying why.
    pub fn response(self) -> Vec<u8> {
        let (code, phrase) = self.status();
        let body = format!("{self}\n");
        format!(
            "HTTP/1.1 {code} {phrase}\r\n{}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.extra_headers(),
            body.len()
        )
        .into_bytes()
    }
}

/// The outcome of parsing what has arrived so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The request is not complete yet.
    Partial,
    /// A valid upgrade request of `len` bytes; bytes after it are frames.
    Upgrade { upgrade: Upgrade, len: usize },
}

/// Parse an upgrade request from the front of `buf`. A request (complete or
/// not) longer than `max_len` bytes is refused with 431.
pub fn parse_request(buf: &[u8], max_len: usize) -> Result<Parsed, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let status = request.parse(buf).map_err(|error| match error {
        httparse::Error::TooManyHeaders => Rejection::HeadersTooLarge,
        _ => Rejection::Malformed("not an HTTP/1.x request"),
    })?;
    let len = match status {
        httparse::Status::Partial if buf.len() > max_len => return Err(Rejection::HeadersTooLarge),
        httparse::Status::Partial => return Ok(Parsed::Partial),
        httparse::Status::Complete(len) if len > max_len => return Err(Rejection::HeadersTooLarge),
        httparse::Status::Complete(len) => len,
    };
    let upgrade = check_request(&request)?;
    Ok(Parsed::Upgrade { upgrade, len })
}

fn check_request(request: &httparse::Request) -> Result<Upgrade, Rejection> {
    if request.method != Some("GET") {
        return Err(Rejection::MethodNotAllowed);
    }
    if request.version != Some(1) {
        return Err(Rejection::HttpVersion);
    }
    let route = request
        .path
        .and_then(Route::from_path)
        .ok_or(Rejection::NotFound)?;
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if !header("Upgrade").is_some_and(|v| has_token(v, "websocket")) {
        return Err(Rejection::NotAnUpgrade);
    }
    if !header("Connection").is_some_and(|v| has_token(v, "upgrade")) {
        return Err(Rejection::MissingConnectionUpgrade);
    }
    if header("Sec-WebSocket-Version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Rejection::UnsupportedVersion);
    }
    let key = header("Sec-WebSocket-Key")
        .map(<[u8]>::trim_ascii)
        .filter(|key| is_base64_of_16_bytes(key))
        .ok_or(Rejection::BadKey)?;
    let accept_key = tungstenite::handshake::derive_accept_key(key);
    let extensions = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .filter_map(|h| std::str::from_utf8(h.value).ok());
    Ok(Upgrade {
        route,
        accept_key,
        deflate_offers: negotiate::offers(extensions),
    })
}

/// Does a comma-separated header value contain `token` (case-insensitive)?
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The key must be 16 random bytes in base64 (§4.1): 22 symbols then `==`.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    let symbol = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key[..22].iter().all(symbol) && &key[22..] == b"=="
}

/// The `101 Switching Protocols` response for an accepted upgrade, with the
/// extension the server agreed to (`Sec-WebSocket-Extensions`), if any.
pub fn accept_response(upgrade: &Upgrade, extension: Option<&str>) -> Vec<u8> {
    let extension = extension
        .map(|value| format!("Sec-WebSocket-Extensions: {value}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extension}\r\n",
        upgrade.accept_key
    )
    .into_bytes()
}

/// A fresh random `Sec-WebSocket-Key` (16 random bytes, base64).
pub fn client_key() -> String {
    tungstenite::handshake::client::generate_key()
}

/// The upgrade request a client sends for `path` on `host`, offering
/// `extensions` (a `Sec-WebSocket-Extensions` value) if any.
pub fn client_request(host: &str, path: &str, key: &str, extensions: Option<&str>) -> Vec<u8> {
    let extensions = extensions
        .map(|value| format!("Sec-WebSocket-Extensions: {value}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extensions}\r\n"
    )
    .into_bytes()
}

/// A server's `101`, checked: its length (bytes after it are already
/// frames) and the extension it agreed to, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub len: usize,
    pub extensions: Option<String>,
}

/// Why a server's answer to our upgrade request is not a WebSocket.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("HTTP {0} instead of 101")]
    Status(u16),
    #[error("response is not HTTP")]
    Malformed,
    #[error("Sec-WebSocket-Accept does not match the key")]
    BadAccept,
}

/// Check the response to a request made with `key`.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<Accepted>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ResponseError::Malformed),
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(ResponseError::Status(status));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Accept"))
        .map(|h| h.value.trim_ascii());
    if accept != Some(expected.as_bytes()) {
        return Err(ResponseError::BadAccept);
    }
    let extensions = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .map(|h| String::from_utf8_lossy(h.value.trim_ascii()).into_owned());
    Ok(Some(Accepted { len, extensions }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut text = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }

    fn good_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", KEY),
        ]
    }

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        good_headers().into_iter().filter(|h| h.0 != name).collect()
    }

    fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut headers = without(name);
        headers.push((name, value));
        headers
    }

    #[test]
    fn accepts_the_rfc_example_with_its_accept_key() {
        let buf = request("GET", "/echo", &good_headers());
        let parsed = parse_request(&buf, 8192).unwrap();
        let Parsed::Upgrade { upgrade, len } = parsed else {
            panic!("not accepted: {parsed:?}")
        };
        assert_eq!(len, buf.len());
        assert_eq!(upgrade.route, Route::Echo);
        // RFC 6455 §1.3's worked example.
        assert_eq!(upgrade.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(upgrade.deflate_offers, vec![]);
    }

    #[test]
    fn deflate_offers_are_read_from_every_extensions_header_and_answered() {
        let mut headers = good_headers();
        headers.push((
            "Sec-WebSocket-Extensions",
            "foo, permessage-deflate; client_max_window_bits",
        ));
        headers.push(("sec-websocket-extensions", "permessage-deflate; bogus"));
        let buf = request("GET", "/room", &headers);
        let Ok(Parsed::Upgrade { upgrade, .. }) = parse_request(&buf, 8192) else {
            panic!("not accepted")
        };
        assert_eq!(upgrade.deflate_offers.len(), 2);
        assert!(upgrade.deflate_offers[0].is_ok());
        assert_eq!(
            upgrade.deflate_offers[1],
            Err(Declined::UnknownParameter("bogus".into()))
        );
        let response = accept_response(&upgrade, Some("permessage-deflate"));
        let text = String::from_utf8(response).unwrap();
        assert!(
            text.ends_with("\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn partial_requests_wait_and_long_ones_are_refused() {
        let buf = request("GET", "/room", &good_headers());
        for cut in 0..buf.len() {
            assert_eq!(parse_request(&buf[..cut], 8192), Ok(Parsed::Partial));
        }
        assert_eq!(
            parse_request(&buf[..buf.len() - 1], 20),
            Err(Rejection::HeadersTooLarge)
        );
        assert_eq!(parse_request(&buf, 20), Err(Rejection::HeadersTooLarge));
    }

    #[test]
    fn each_bad_request_gets_its_status() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (request("POST", "/echo", &good_headers()), 405),
            (request("GET", "/nope", &good_headers()), 404),
            (request("GET", "/echo", &without("Upgrade")), 426),
            (request("GET", "/echo", &with("Upgrade", "h2c")), 426),
            (request("GET", "/echo", &without("Connection")), 400),
            (
                request("GET", "/echo", &without("Sec-WebSocket-Version")),
                426,
            ),
            (
                request("GET", "/echo", &with("Sec-WebSocket-Version", "8")),
                426,
            ),
            (request("GET", "/echo", &without("Sec-WebSocket-Key")), 400),
            (
                request("GET", "/echo", &with("Sec-WebSocket-Key", "short")),
                400,
            ),
            (b"GET /echo HTTP/1.0\r\n\r\n".to_vec(), 505),
            (b"\x16\x03\x01 not http\r\n\r\n".to_vec(), 400),
        ];
        for (buf, status) in cases {
            let rejection = parse_request(&buf, 8192).unwrap_err();
            assert_eq!(
                rejection.status().0,
                status,
                "{}",
                String::from_utf8_lossy(&buf)
            );
        }
    }

    #[test]
    fn rejection_responses_carry_required_headers() {
        let text = String::from_utf8(Rejection::UnsupportedVersion.response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        let text = String::from_utf8(Rejection::MethodNotAllowed.response()).unwrap();
        assert!(text.contains("\r\nAllow: GET\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn client_request_is_accepted_and_its_response_verified() {
        let key = client_key();
        let request = client_request("127.0.0.1:9001", "/room", &key, None);
        let Ok(Parsed::Upgrade { upgrade, .. }) = parse_request(&request, 8192) else {
            panic!("our own request refused")
        };
        let mut response = accept_response(&upgrade, None);
        let len = response.len();
        response.extend_from_slice(b"\x81\x00");
        let accepted = Accepted {
            len,
            extensions: None,
        };
        assert_eq!(parse_response(&response, &key), Ok(Some(accepted)));
        assert_eq!(parse_response(&response[..len - 1], &key), Ok(None));
        assert_eq!(
            parse_response(&response, &client_key()),
            Err(ResponseError::BadAccept)
        );
        let refused = Rejection::NotFound.response();
        assert_eq!(
            parse_response(&refused, &key),
            Err(ResponseError::Status(404))
        );
        assert_eq!(
            parse_response(b"\x00\x01garbage\r\n\r\n", &key),
            Err(ResponseError::Malformed)
        );
    }
}
