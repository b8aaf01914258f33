//! What the load generator connects to: `ws://HOST:PORT/PATH`,
//! `tcp://HOST:PORT/PATH` or `bare://HOST:PORT` (a floor server), with the
//! path defaulting to the one the scenario needs.

use std::net::{SocketAddr, ToSocketAddrs};

/// What the client speaks on its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// WebSocket: upgrade request, 101, masked frames out, frames in.
    Ws,
    /// Raw TCP (docs/tcp-framing.md): a hello naming the route, then
    /// length-prefixed messages.
    Tcp,
    /// A floor server (`fanout bare`): one greeting byte, then
    /// length-prefixed messages the server does not parse.
    Bare,
}

impl Wire {
    pub fn scheme(self) -> &'static str {
        match self {
            Wire::Ws => "ws",
            Wire::Tcp => "tcp",
            Wire::Bare => "bare",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub wire: Wire,
    pub addr: SocketAddr,
    /// HOST:PORT as written, for the Host header.
    pub host: String,
    pub path: String,
}

impl Target {
    /// Parse `url`; `default_path` is used when the URL has none.
    pub fn parse(url: &str, default_path: &str) -> Result<Target, String> {
        let (wire, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (Wire::Ws, rest)
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            (Wire::Tcp, rest)
        } else if let Some(rest) = url.strip_prefix("bare://") {
            (Wire::Bare, rest)
        } else if url.starts_with("wss://") {
            return Err("wss:// (TLS) is not supported yet; use ws://".into());
        } else {
            return Err(format!(
                "`{url}` must start with ws://, tcp:// or bare:// (a `fanout bare` floor server)"
            ));
        };
        let (host, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() || path == "/" {
            default_path
        } else {
            path
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| {
                format!("`{host}` has no IPv4 address (the load generator binds 127.0.0.x sources)")
            })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address; fanout load only targets this machine (127.0.0.0/8)"
            ));
        }
        Ok(Target {
            wire,
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scheme_host_and_path() {
        let t = Target::parse("ws://127.0.0.1:9001/room", "/echo").unwrap();
        assert_eq!(
            (t.wire, t.addr.port(), t.path.as_str()),
            (Wire::Ws, 9001, "/room")
        );
        let t = Target::parse("tcp://127.0.0.1:9002", "/echo").unwrap();
        assert_eq!((t.wire, t.path.as_str()), (Wire::Tcp, "/echo"));
        let t = Target::parse("bare://127.0.0.1:9003", "/room").unwrap();
        assert_eq!((t.wire, t.addr.port()), (Wire::Bare, 9003));
        assert!(Target::parse("http://127.0.0.1:1/", "/").is_err());
        assert!(Target::parse("wss://127.0.0.1:1/", "/")
            .unwrap_err()
            .contains("TLS"));
        assert!(Target::parse("ws://10.0.0.1:80/", "/")
            .unwrap_err()
            .contains("loopback"));
    }
}
