//! The few pieces of Redis's wire protocol (RESP2) the backplane speaks:
//! commands written as arrays of bulk strings, and the replies and pushed
//! messages read back (`+OK`, `-ERR`, `:1`, `$5 hello`, `*3 …`).
//! Small enough to write than to take a client library with its own
//! runtime into a server that has none.

use std::io;

/// A reply or a pushed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Integer(i64),
    /// A bulk string; `None` is RESP's null.
    Bulk(Option<Vec<u8>>),
    Array(Vec<Value>),
}

/// Longest bulk string accepted (Redis's own limit is 512 MB; a room
/// message is far smaller).
pub const MAX_BULK: usize = 64 * 1024 * 1024;

/// Append `args` as one command.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parse one value from the front of `input`: the value and the bytes it
/// took, `Ok(None)` if more bytes are needed, an error if it is not RESP.
pub fn parse(input: &[u8]) -> io::Result<Option<(Value, usize)>> {
    let Some(line_end) = find_crlf(input) else {
        return Ok(None);
    };
    let line = &input[1..line_end];
    let after = line_end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    let Some(&kind) = input.first() else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((Value::Simple(text()), after))),
        b'-' => Ok(Some((Value::Error(text()), after))),
        b':' => Ok(Some((Value::Integer(number(line)?), after))),
        b'$' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Some((Value::Bulk(None), after)));
            }
            let len = usize::try_from(len).map_err(|_| bad("bulk length"))?;
            if len > MAX_BULK {
                return Err(bad("bulk string over 64 MiB"));
            }
            if input.len() < after + len + 2 {
                return Ok(None);
            }
            if &input[after + len..after + len + 2] != b"\r\n" {
                return Err(bad("bulk string without its CRLF"));
            }
            let bytes = input[after..after + len].to_vec();
            Ok(Some((Value::Bulk(Some(bytes)), after + len + 2)))
        }
        b'*' => {
            let count = number(line)?;
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..count.max(0) {
                match parse(&input[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(items), at)))
        }
        other => Err(bad(&format!("unknown type byte {other:#04x}"))),
    }
}

fn find_crlf(input: &[u8]) -> Option<usize> {
    input.windows(2).position(|w| w == b"\r\n")
}

fn number(line: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("a number expected"))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not RESP: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"room", b"hi\r\n"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$4\r\nhi\r\n\r\n"
        );
    }

    #[test]
    fn every_reply_kind_parses_and_a_partial_one_waits() {
        let pushed = b"*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$5\r\nhello\r\n:2\r\n";
        let (value, used) = parse(pushed).unwrap().unwrap();
        assert_eq!(
            value,
            Value::Array(vec![
                Value::Bulk(Some(b"message".to_vec())),
                Value::Bulk(Some(b"room".to_vec())),
                Value::Bulk(Some(b"hello".to_vec())),
            ])
        );
        assert_eq!(
            parse(&pushed[used..]).unwrap(),
            Some((Value::Integer(2), 4))
        );
        for cut in 0..used {
            assert_eq!(parse(&pushed[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            parse(b"+OK\r\n").unwrap(),
            Some((Value::Simple("OK".into()), 5))
        );
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap(),
            Some((Value::Error("ERR no".into()), 9))
        );
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Value::Bulk(None), 5)));
    }

    #[test]
    fn what_is_not_resp_is_an_error() {
        assert!(parse(b"hello\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err());
        assert!(parse(b"$999999999999\r\n").is_err());
    }
}
