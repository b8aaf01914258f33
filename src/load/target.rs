//! What the load generator connects to: `ws://HOST:PORT/PATH` or
//! `tcp://HOST:PORT/PATH`, with the path defaulting to the one the scenario
//! needs.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::server::config::Proto;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// HOST:PORT as written, for the Host header.
    pub host: String,
    pub path: String,
}

impl Target {
    /// Parse `url`; `default_path` is used when the URL has none.
    pub fn parse(url: &str, default_path: &str) -> Result<Target, String> {
        let (proto, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (Proto::Ws, rest)
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            (Proto::Tcp, rest)
        } else if url.starts_with("wss://") {
            return Err("wss:// (TLS) is not supported yet; use ws://".into());
        } else {
            return Err(format!("`{url}` must start with ws:// or tcp://"));
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
            proto,
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
            (t.proto, t.addr.port(), t.path.as_str()),
            (Proto::Ws, 9001, "/room")
        );
        let t = Target::parse("tcp://127.0.0.1:9002", "/echo").unwrap();
        assert_eq!((t.proto, t.path.as_str()), (Proto::Tcp, "/echo"));
        assert!(Target::parse("http://127.0.0.1:1/", "/").is_err());
        assert!(Target::parse("wss://127.0.0.1:1/", "/")
            .unwrap_err()
            .contains("TLS"));
        assert!(Target::parse("ws://10.0.0.1:80/", "/")
            .unwrap_err()
            .contains("loopback"));
    }
}
