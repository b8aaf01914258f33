//! One client connection: a non-blocking connect from a chosen source
//! address, the upgrade (or TCP hello), then frames. Writes that the socket
//! will not take wait in a small per-connection buffer.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};

use super::accounting::Deliveries;
use super::target::Wire;
use crate::protocol::frame::{client_frame, OpCode};
use crate::protocol::message::Fragments;
use crate::protocol::tcp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    /// Request (or hello) sent; waiting for 101 (or `ok`, or the greeting).
    Handshaking,
    Open,
}

pub struct Client {
    pub socket: TcpStream,
    pub phase: Phase,
    /// When the connect started (CLOCK_MONOTONIC ns).
    pub started_ns: u64,
    /// The Sec-WebSocket-Key sent, until the response is checked.
    pub key: Option<Box<str>>,
    pub inbuf: Vec<u8>,
    pub fragments: Option<Box<Fragments>>,
    outbuf: Vec<u8>,
    /// Broadcast: which messages arrived.
    pub deliveries: Deliveries,
    /// Echo: messages sent (the next payload's sequence number).
    pub sent: u64,
    /// Storm: which reconnect attempt this is (0: not a reconnect).
    pub attempt: u8,
    /// Which --url it went to.
    pub server: u8,
}

impl Client {
    pub fn new(socket: TcpStream, started_ns: u64) -> Client {
        Client {
            socket,
            phase: Phase::Connecting,
            started_ns,
            key: None,
            inbuf: Vec::new(),
            fragments: None,
            outbuf: Vec::new(),
            deliveries: Deliveries::default(),
            sent: 0,
            attempt: 0,
            server: 0,
        }
    }

    /// Write `bytes`, queueing what the socket will not take.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if !self.outbuf.is_empty() {
            self.outbuf.extend_from_slice(bytes);
            return Ok(());
        }
        let mut written = 0;
        while written < bytes.len() {
            match self.socket.write(&bytes[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outbuf.extend_from_slice(&bytes[written..]);
        Ok(())
    }

    /// Write queued bytes; called when the socket turns writable.
    pub fn flush(&mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.outbuf);
        self.send(&pending)
    }

    /// Send one data message in the connection's protocol.
    pub fn send_message(&mut self, wire: Wire, payload: &[u8], mask: [u8; 4]) -> io::Result<()> {
        match wire {
            Wire::Ws => self.send(&client_frame(OpCode::Binary, payload, mask)),
            Wire::Tcp | Wire::Bare => self.send(&tcp::encode(payload)),
        }
    }

    /// Abortive close: RST instead of FIN, so no TIME_WAIT is left behind.
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.socket).set_linger(Some(std::time::Duration::ZERO));
    }
}

/// Start a non-blocking connect from `source` (port chosen at connect time:
/// IP_BIND_ADDRESS_NO_PORT) to `server`.
pub fn connect(source: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    let one: libc::c_int = 1;
    // SAFETY (via syscall!): a valid socket fd, an int option of the right size.
    syscall!(setsockopt(
        socket.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        &one as *const libc::c_int as *const libc::c_void,
        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
    match socket.connect(&server.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A short name for why a connection failed, for the report.
pub fn failure_cause(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ECONNREFUSED) => "refused".into(),
        Some(libc::ETIMEDOUT) => "connect timeout".into(),
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => "reset".into(),
        Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => "no free source port".into(),
        Some(libc::EMFILE) => "fd limit".into(),
        Some(libc::ENFILE) => "file-max".into(),
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => "out of memory".into(),
        _ => match error.kind() {
            io::ErrorKind::UnexpectedEof => "closed by server".into(),
            _ => format!("{error}"),
        },
    }
}
