//! What the load generator connects to: `ws://HOST:PORT/PATH`,
//! `tcp://HOST:PORT/PATH`, their TLS forms `wss://` and `tls://`, or
//! `bare://HOST:PORT` (a floor server), with the
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
    /// Over TLS (wss://, tls://).
    pub tls: bool,
    pub addr: SocketAddr,
    /// HOST:PORT as written, for the Host header.
    pub host: String,
    pub path: String,
}

impl Target {
    /// Parse `url`; `default_path` is used when the URL has none.
    pub fn parse(url: &str, default_path: &str) -> Result<Target, String> {
        let schemes = [
            ("ws://", Wire::Ws, false),
            ("wss://", Wire::Ws, true),
            ("tcp://", Wire::Tcp, false),
            ("tls://", Wire::Tcp, true),
            ("bare://", Wire::Bare, false),
        ];
        let Some((wire, tls, rest)) = schemes
            .iter()
            .find_map(|&(scheme, wire, tls)| Some((wire, tls, url.strip_prefix(scheme)?)))
        else {
            return Err(format!(
                "`{url}` must start with ws://, wss://, tcp://, tls:// (raw TCP over TLS) or bare:// (a `fanout bare` floor server)"
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
            tls,
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The scheme as written: the wire's, over TLS `wss` or `tls`.
    pub fn scheme(&self) -> &'static str {
        match (self.wire, self.tls) {
            (Wire::Ws, true) => "wss",
            (Wire::Tcp, true) => "tls",
            (wire, _) => wire.scheme(),
        }
    }

    /// The name the TLS client checks the certificate against: the host
    /// without its port (an IP address or a DNS name).
    pub fn server_name(&self) -> Result<rustls::pki_types::ServerName<'static>, String> {
        let host = match self.host.rsplit_once(':') {
            Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => &self.host,
        };
        rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| format!("`{host}` is not a name a certificate can be checked against"))
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
        let t = Target::parse("wss://127.0.0.1:9443/room", "/echo").unwrap();
        assert_eq!((t.wire, t.tls, t.path.as_str()), (Wire::Ws, true, "/room"));
        let t = Target::parse("tls://127.0.0.1:9443", "/echo").unwrap();
        assert_eq!((t.wire, t.tls), (Wire::Tcp, true));
        assert!(Target::parse("https://127.0.0.1:1/", "/")
            .unwrap_err()
            .contains("wss://"));
        assert!(Target::parse("ws://10.0.0.1:80/", "/")
            .unwrap_err()
            .contains("loopback"));
    }
}
