//! Test helpers: run the real `fanout` binary as a child process, talk to it
//! with tungstenite (an independent WebSocket implementation) or with raw
//! bytes, and read its `stats` lines. Every server is killed on drop.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fanout::process::ServerProcess;
use fanout::server::stats::Snapshot;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Longest a test waits for any single thing before failing (not a speed
/// threshold: only a guard so a broken server fails the test instead of hanging it).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The backends every server test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Epoll,
    Uring,
    Tokio,
    TokioTpc,
    TokioUring,
}

impl Backend {
    pub fn kind(self) -> fanout::backend::BackendKind {
        use fanout::backend::BackendKind;
        match self {
            Backend::Epoll => BackendKind::Epoll,
            Backend::Uring => BackendKind::Uring,
            Backend::Tokio => BackendKind::Tokio,
            Backend::TokioTpc => BackendKind::TokioTpc,
            Backend::TokioUring => BackendKind::TokioUring,
        }
    }

    pub fn name(self) -> &'static str {
        self.kind().name()
    }

    /// The backend, if this kernel has everything it needs; otherwise say
    /// why `test` is skipped (never silently) and return `None`.
    pub fn available_or_skip(self, test: &str) -> Option<Backend> {
        match fanout::backend::probe(self.kind()) {
            Ok(()) => Some(self),
            Err(missing) => {
                eprintln!("SKIPPED {test} on {}: {missing}", self.name());
                None
            }
        }
    }
}

/// Generate each test once per backend, as `epoll::NAME`, `uring::NAME`,
/// `tokio::NAME`, `tokio_tpc::NAME` and `tokio_uring::NAME` (the monoio
/// way): write `fn NAME(backend: Backend) { ... }` and start the server
/// with `Server::start(backend, ...)`.
#[macro_export]
macro_rules! every_backend {
    ($( $(#[$meta:meta])* fn $name:ident($backend:ident: Backend) $body:block )*) => {
        $crate::every_backend!(@one epoll, Epoll; $( $(#[$meta])* fn $name($backend) $body )*);
        $crate::every_backend!(@one uring, Uring; $( $(#[$meta])* fn $name($backend) $body )*);
        $crate::every_backend!(@one tokio, Tokio; $( $(#[$meta])* fn $name($backend) $body )*);
        $crate::every_backend!(@one tokio_tpc, TokioTpc; $( $(#[$meta])* fn $name($backend) $body )*);
        $crate::every_backend!(@one tokio_uring, TokioUring; $( $(#[$meta])* fn $name($backend) $body )*);
    };
    (@one $module:ident, $variant:ident; $( $(#[$meta:meta])* fn $name:ident($backend:ident) $body:block )*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    let Some($backend) = Backend::$variant.available_or_skip(stringify!($name)) else {
                        return;
                    };
                    $body
                }
            )*
        }
    };
}

pub struct Server {
    inner: ServerProcess,
    pub addr: SocketAddr,
    /// The plan line printed before `ready`.
    pub plan: String,
}

impl Server {
    /// Start `fanout serve --backend B --listen 127.0.0.1:0 ARGS` and wait
    /// for `ready`.
    pub fn start(backend: Backend, args: &[&str]) -> Server {
        Server::start_with(backend, args, |_| {})
    }

    /// Like [`Server::start`], letting the caller adjust the command first.
    pub fn start_with(
        backend: Backend,
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
        command
            .args([
                "serve",
                "--backend",
                backend.name(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .stderr(Stdio::inherit());
        adjust(&mut command);
        let inner = ServerProcess::spawn(command, PATIENCE).expect("fanout serve starts");
        Server {
            addr: inner.addr,
            plan: inner.plan.clone(),
            inner,
        }
    }

    pub fn pid(&self) -> i32 {
        self.inner.pid()
    }

    /// Its `tls` line, if it speaks TLS.
    pub fn tls_line(&self) -> Option<&str> {
        self.inner.tls.as_deref()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Where it serves metrics (started with `--metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.inner.metrics.expect("started with --metrics")
    }

    /// Ask for a `stats` line (SIGUSR1) and parse it.
    pub fn stats(&self) -> Snapshot {
        self.inner.stats().expect("a stats line")
    }

    /// Poll stats until `done` holds, failing after [`PATIENCE`].
    pub fn wait_for_stats(&self, what: &str, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let start = Instant::now();
        loop {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "gave up waiting for {what}: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait for exit, return the final stats and the exit status.
    pub fn stop(self) -> (Snapshot, std::process::ExitStatus) {
        self.inner.stop().expect("the server stops")
    }

    /// SIGTERM without waiting (the server starts its drain).
    pub fn terminate(&self) {
        self.inner.terminate();
    }

    /// Wait for the exit: the final stats, the lines after them, the status.
    pub fn wait_for_exit(self) -> (Snapshot, Vec<String>, std::process::ExitStatus) {
        self.inner.wait_for_exit().expect("the server exits")
    }
}

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// A tungstenite client connected to `path`, with read and write timeouts.
pub fn ws_connect(server: &Server, path: &str) -> Ws {
    let stream = tcp_connect(server.addr);
    let (socket, response) =
        tungstenite::client(server.url(path), MaybeTlsStream::Plain(stream)).expect("handshake");
    assert_eq!(response.status(), 101);
    socket
}

pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Send a message and check the identical message comes back.
pub fn assert_echo(ws: &mut Ws, message: Message) {
    ws.send(message.clone()).expect("send");
    let reply = read_data(ws);
    assert_eq!(reply, message);
}

/// Read the next data message, answering nothing and skipping pongs.
pub fn read_data(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("read") {
            Message::Pong(_) => continue,
            message => return message,
        }
    }
}

/// A raw client: does the WebSocket handshake by hand, then lets the test
/// write arbitrary bytes (legal or not) and read what comes back.
pub struct RawWs {
    pub stream: TcpStream,
    pub buffered: Vec<u8>,
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn upgrade_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n")
}

impl RawWs {
    pub fn connect(server: &Server, path: &str) -> RawWs {
        let mut stream = tcp_connect(server.addr);
        stream.write_all(upgrade_request(path).as_bytes()).unwrap();
        let mut raw = RawWs {
            stream,
            buffered: Vec::new(),
        };
        let head = raw.read_http_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        raw
    }

    /// A connection whose upgrade request was already sent.
    pub fn from_stream(stream: TcpStream) -> RawWs {
        RawWs {
            stream,
            buffered: Vec::new(),
        }
    }

    /// Read up to the blank line ending an HTTP response head.
    pub fn read_http_head(&mut self) -> String {
        loop {
            if let Some(end) = find(&self.buffered, b"\r\n\r\n") {
                let head: Vec<u8> = self.buffered.drain(..end + 4).collect();
                return String::from_utf8(head).unwrap();
            }
            assert!(
                self.fill() > 0,
                "connection closed before the response head"
            );
        }
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read");
        self.buffered.extend_from_slice(&chunk[..n]);
        n
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Read one server frame: (opcode, payload).
    pub fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        self.read_frame_with_first_byte()
            .map(|(first, payload)| (first & 0x0F, payload))
    }

    /// Read one server frame (RSV1 allowed: a compressed message): its
    /// first byte (FIN, RSV1 and opcode) and its payload.
    pub fn read_frame_with_first_byte(&mut self) -> Option<(u8, Vec<u8>)> {
        use fanout::protocol::frame::{decode_header_allowing, Role};
        loop {
            let max = usize::MAX >> 1;
            if let Some((header, len)) =
                decode_header_allowing(&self.buffered, Role::Client, max, true)
                    .expect("legal frame")
            {
                if self.buffered.len() >= len + header.payload_len {
                    let frame: Vec<u8> = self.buffered.drain(..len + header.payload_len).collect();
                    return Some((frame[0], frame[len..].to_vec()));
                }
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// Read frames until a close frame; return its code, and check the
    /// server then ends the connection.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self.read_frame().expect("a close frame before EOF");
            if opcode == 0x8 {
                assert!(payload.len() >= 2, "close frame carries a code");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                self.expect_eof();
                return code;
            }
        }
    }

    /// The server closes the connection: read returns 0.
    pub fn expect_eof(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected the server to close: {e}"),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Send a raw request to `addr` and read the response until the server
/// hangs up.
pub fn http_response(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tcp_connect(addr);
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).to_string()
}

/// Send a raw HTTP request and return the status code of the response.
pub fn http_status(server: &Server, request: &[u8]) -> (u16, String) {
    let text = http_response(server.addr, request);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

/// A masked client frame with explicit FIN/RSV/opcode byte.
pub fn raw_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![first_byte];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// Run `body` on a thread of its own in a new network namespace with its
/// loopback up; the children it starts live there too. None (and a SKIPPED
/// line) when this machine does not allow it.
pub fn in_new_netns<T: Send + 'static>(
    test: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let entered = std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which is ours and runs
        // nothing else; the network namespace is what we ask to be new.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
        Ok(body())
    })
    .join()
    .expect("the namespace thread does not panic");
    match entered {
        Ok(value) => Some(value),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// `ip link set lo up`, without needing iproute2.
pub fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own;
    // ifru_flags is the union member these two requests use.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(fd) };
    result
}

/// Run `fanout load ARGS --json FILE`; it must succeed and print its text
/// report. The parsed JSON report and the text.
pub fn load_report(args: &[&str]) -> (fanout::load::report::Report, String) {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let json = std::env::temp_dir().join(format!("fanout-load-{}-{call}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("load")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.starts_with("fanout load "),
        "text report printed: {text}"
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(json).unwrap();
    (report, text)
}

/// A redis-server of the test's own (free loopback port, no persistence,
/// killed when dropped), or None and a SKIPPED line when redis-server is
/// not installed (.ci/run installs it).
pub fn redis_or_skip(test: &str) -> Option<fanout::backplane::redis_server::RedisServer> {
    match fanout::backplane::redis_server::RedisServer::start() {
        Ok(redis) => Some(redis),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED {test}: redis-server is not installed (Debian: apt-get install redis-server)");
            None
        }
        Err(e) => panic!("redis-server: {e}"),
    }
}

/// Whether Python with the websockets library is here; if not, say so.
pub fn python_websockets_or_skip(test: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", "import websockets"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("SKIPPED {test}: python3 with websockets is missing (pip install websockets; .ci/run does)");
    }
    found
}
