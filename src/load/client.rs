//! One client connection: a non-blocking connect from a chosen source
//! address, the upgrade (or TCP hello), then frames. Like the server's, an
//! idle connection holds no buffer: a partial frame, a fragmented message
//! or bytes the socket would not take are kept only while they exist.

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

/// Bytes one client connection takes in its shard's slab.
pub const SLOT_BYTES: usize = crate::chunked_slab::ChunkedSlab::<Client>::slot_bytes();

/// One connection's state: 40 bytes while it is idle (pinned by a test).
/// What it needs only now and then lives in a [`Spill`], allocated when
/// needed and freed as soon as it is empty.
pub struct Client {
    pub socket: TcpStream,
    pub phase: Phase,
    /// Storm: which reconnect attempt this is (0: not a reconnect).
    pub attempt: u8,
    /// Which --url it went to.
    pub server: u8,
    /// The window it compresses with when it agreed on permessage-deflate
    /// (0: it did not); the codec, if it keeps one, is the shard's
    /// (`load::shard::deflate`).
    pub deflate_window: u8,
    /// When the connect started (CLOCK_MONOTONIC ns).
    pub started_ns: u64,
    /// Broadcast: which messages arrived.
    pub deliveries: Deliveries,
    /// Echo: messages sent (the next payload's sequence number).
    pub sent: u64,
    spill: Option<Box<Spill>>,
}

/// What a connection holds only while it needs it; an idle open connection
/// holds none of it.
#[derive(Default)]
struct Spill {
    /// The Sec-WebSocket-Key sent, until the response is checked.
    key: Option<Box<str>>,
    /// The start of a frame (or response) that straddles two reads.
    partial: Vec<u8>,
    /// A fragmented message being put together.
    fragments: Option<Box<Fragments>>,
    /// Bytes the socket would not take yet.
    unsent: Vec<u8>,
}

impl Spill {
    fn is_empty(&self) -> bool {
        self.key.is_none()
            && self.partial.is_empty()
            && self.fragments.is_none()
            && self.unsent.is_empty()
    }
}

impl Client {
    pub fn new(socket: TcpStream, started_ns: u64) -> Client {
        Client {
            socket,
            phase: Phase::Connecting,
            attempt: 0,
            server: 0,
            deflate_window: 0,
            started_ns,
            deliveries: Deliveries::default(),
            sent: 0,
            spill: None,
        }
    }

    fn spill(&mut self) -> &mut Spill {
        self.spill.get_or_insert_with(Box::default)
    }

    /// Free the spill once nothing is left in it.
    fn tidy(&mut self) {
        if self.spill.as_ref().is_some_and(|spill| spill.is_empty()) {
            self.spill = None;
        }
    }

    /// The Sec-WebSocket-Key sent ("" when none is waiting for its answer).
    pub fn key(&self) -> &str {
        self.spill
            .as_ref()
            .and_then(|spill| spill.key.as_deref())
            .unwrap_or("")
    }

    pub fn set_key(&mut self, key: Option<Box<str>>) {
        self.spill().key = key;
        self.tidy();
    }

    /// The start of a frame kept from earlier reads (empty when none).
    pub fn take_partial(&mut self) -> Vec<u8> {
        let partial = self
            .spill
            .as_mut()
            .map(|spill| std::mem::take(&mut spill.partial))
            .unwrap_or_default();
        self.tidy();
        partial
    }

    /// Keep `rest`, the start of a frame not yet whole, for the next read.
    pub fn keep_partial(&mut self, rest: &[u8]) {
        if !rest.is_empty() {
            self.spill().partial.extend_from_slice(rest);
        }
    }

    pub fn take_fragments(&mut self) -> Option<Box<Fragments>> {
        let fragments = self.spill.as_mut()?.fragments.take();
        self.tidy();
        fragments
    }

    pub fn keep_fragments(&mut self, fragments: Option<Box<Fragments>>) {
        if fragments.is_some() {
            self.spill().fragments = fragments;
        }
    }

    /// Write `bytes`, queueing what the socket will not take.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(spill) = self.spill.as_mut().filter(|s| !s.unsent.is_empty()) {
            spill.unsent.extend_from_slice(bytes);
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
        if written < bytes.len() {
            self.spill().unsent.extend_from_slice(&bytes[written..]);
        }
        Ok(())
    }

    /// Write queued bytes; called when the socket turns writable.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut spill.unsent);
        self.tidy();
        self.send(&pending)
    }

    /// Abortive close: RST instead of FIN, so no TIME_WAIT is left behind.
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.socket).set_linger(Some(std::time::Duration::ZERO));
    }
}

/// One data message in the connection's protocol, as bytes to send.
pub fn message_bytes(wire: Wire, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    match wire {
        Wire::Ws => client_frame(OpCode::Binary, payload, mask),
        Wire::Tcp | Wire::Bare => tcp::encode(payload),
    }
}

/// Start a non-blocking connect from `source` (port chosen at connect time:
/// IP_BIND_ADDRESS_NO_PORT) to `server`.
pub fn connect(source: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
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
    start_connect(socket, server)
}

/// Start a non-blocking connect from `source`:`port`, a port fanout chose
/// (see `load::ports`). SO_REUSEADDR lets it share the port with sockets in
/// TIME_WAIT on the same address; the connect fails with EADDRNOTAVAIL
/// when the whole 4-tuple is taken.
pub fn connect_from_port(source: Ipv4Addr, port: u16, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, port)).into())?;
    start_connect(socket, server)
}

fn start_connect(socket: Socket, server: SocketAddr) -> io::Result<TcpStream> {
    socket.set_nonblocking(true)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked_slab::ChunkedSlab;

    #[test]
    fn an_idle_client_is_40_bytes_in_its_slab() {
        assert_eq!(std::mem::size_of::<Client>(), 40);
        assert_eq!(ChunkedSlab::<Client>::slot_bytes(), 40);
        assert_eq!(SLOT_BYTES, 40);
    }

    fn connected_pair() -> (Client, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        socket.set_nonblocking(true).unwrap();
        let (peer, _) = listener.accept().unwrap();
        (Client::new(socket, 0), peer)
    }

    #[test]
    fn the_spill_exists_only_while_it_holds_something() {
        let (mut client, _peer) = connected_pair();
        assert!(client.spill.is_none());
        client.set_key(Some("abc".into()));
        assert_eq!(client.key(), "abc");
        client.keep_partial(b"12");
        client.set_key(None);
        assert!(client.spill.is_some(), "the partial frame is still there");
        client.keep_partial(b"3");
        assert_eq!(client.take_partial(), b"123");
        assert!(client.spill.is_none(), "freed once empty");
        client.keep_partial(b"");
        assert!(client.spill.is_none(), "nothing kept, nothing allocated");
        assert!(client.take_fragments().is_none());
        assert!(client.spill.is_none());
    }

    #[test]
    fn bytes_the_socket_will_not_take_wait_and_leave_on_flush() {
        let (mut client, mut peer) = connected_pair();
        let chunk = vec![7u8; 1 << 20];
        let mut offered = 0;
        while client.spill.is_none() && offered < 256 << 20 {
            client.send(&chunk).unwrap();
            offered += chunk.len();
        }
        assert!(client.spill.is_some(), "the socket filled up");
        client.send(b"tail").unwrap();
        peer.set_nonblocking(true).unwrap();
        let mut received = 0;
        let mut buf = vec![0u8; 1 << 20];
        let mut last = 0u8;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while received < offered + 4 && std::time::Instant::now() < deadline {
            client.flush().unwrap();
            match std::io::Read::read(&mut peer, &mut buf) {
                Ok(n) => {
                    received += n;
                    if n > 0 {
                        last = buf[n - 1];
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(received, offered + 4, "every byte arrived, in one piece");
        assert_eq!(last, b'l');
        assert!(client.spill.is_none(), "nothing left waiting");
    }
}
