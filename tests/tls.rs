//! wss:// and TLS raw TCP on every backend, checked with independent
//! clients: Python's ssl and websockets (tests/python/wss_client.py),
//! `openssl s_client`, and tungstenite over a rustls client; and every bad
//! input a TLS port meets, each with its outcome and its counter, while a
//! healthy connection on the same server carries on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use common::{python_websockets_or_skip, Backend, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tungstenite::Message;

/// A certificate and key made by openssl (not by fanout), for localhost
/// and 127.0.0.1, once per test binary.
struct Pki {
    cert: PathBuf,
    key: PathBuf,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .args(["-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            // A leaf, not a CA: webpki refuses a CA certificate as a server's.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs (.ci/run installs it)");
        assert!(made.success(), "openssl made the certificate");
        Pki { cert, key }
    })
}

fn tls_server(backend: Backend, extra: &[&str]) -> Server {
    let pki = pki();
    let mut args = vec![
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(backend, &args)
}

/// Run tests/python/wss_client.py against `server`; its transcript.
fn python_client(server: &Server) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/wss_client.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(server.addr.port().to_string())
        .arg(&pki().cert)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success() && stdout.ends_with("ok\n"),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let cert = CertificateDer::from_pem_file(&pki().cert).unwrap();
    roots.add(cert).unwrap();
    #[allow(deprecated)] // ring's provider: see src/tls/mod.rs
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A rustls client connection to `server`, handshake done.
fn rustls_connect(server: &Server) -> TlsStream {
    let tcp = common::tcp_connect(server.addr);
    let name = "localhost".try_into().unwrap();
    let conn =
        rustls::ClientConnection::new(client_config(&[&rustls::version::TLS13]), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    stream
}

/// tungstenite over a rustls client: a healthy wss:// connection.
fn wss_connect(server: &Server, path: &str) -> tungstenite::WebSocket<TlsStream> {
    let url = format!("wss://localhost:{}{path}", server.addr.port());
    let (ws, response) = tungstenite::client(url, rustls_connect(server)).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

fn assert_wss_echo(ws: &mut tungstenite::WebSocket<TlsStream>, message: Message) {
    ws.send(message.clone()).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Pong(_) => continue,
            reply => return assert_eq!(reply, message),
        }
    }
}

/// Read until the server closes (EOF or reset); what it sent meanwhile.
fn read_until_closed(mut stream: &TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

every_backend! {
    fn python_echoes_1_byte_to_70_kb_and_the_room_delivers_once_over_wss(backend: Backend) {
        if !python_websockets_or_skip("python_echoes_over_wss") {
            return;
        }
        let server = tls_server(backend, &[]);
        assert!(server.tls_line().is_some_and(|line| line.contains("sha256")));
        python_client(&server);
        let stats = server.wait_for_stats("the Python client's connections closed", |s| s.open == 0);
        assert_eq!(stats.totals.tls_handshakes, 5, "one echo connection and four members");
        assert_eq!(stats.totals.tls_internal_errors, 0);
    }

    fn openssl_s_client_echoes_raw_tcp_over_tls(backend: Backend) {
        let server = tls_server(backend, &["--proto", "tcp"]);
        let mut client = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-servername", "localhost"])
            .arg("-connect")
            .arg(server.addr.to_string())
            .arg("-CAfile")
            .arg(&pki().cert)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs");
        let encode = fanout::protocol::tcp::encode;
        let big = vec![7u8; 70_000];
        let mut input = encode(b"/echo");
        input.extend(encode(b"hello"));
        input.extend(encode(&big));
        client.stdin.as_mut().unwrap().write_all(&input).unwrap();
        let mut expected = encode(b"ok");
        expected.extend(encode(b"hello"));
        expected.extend(encode(&big));
        let mut got = vec![0u8; expected.len()];
        let read = client.stdout.as_mut().unwrap().read_exact(&mut got);
        client.kill().unwrap();
        client.wait().unwrap();
        read.expect("the echo came back");
        assert!(got == expected, "the echo differs");
    }

    fn bad_tls_input_gets_its_outcome_and_its_counter_and_harms_nobody(backend: Backend) {
        let server = tls_server(backend, &["--handshake-timeout", "1s"]);
        let mut healthy = wss_connect(&server, "/echo");
        assert_wss_echo(&mut healthy, Message::Text("before".into()));

        // A plain ws:// upgrade to the TLS port: 400 that says why.
        let mut plain = common::tcp_connect(server.addr);
        plain.write_all(common::upgrade_request("/echo").as_bytes()).unwrap();
        let answer = String::from_utf8_lossy(&read_until_closed(&plain)).to_string();
        assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains("TLS"), "{answer}");

        // Bytes that are no TLS record: a decode_error alert in the clear.
        let mut garbage = common::tcp_connect(server.addr);
        garbage.write_all(&[0x00, 0x01, 0x02, 0x03, 0x04, 0x05]).unwrap();
        assert_eq!(read_until_closed(&garbage), [21, 3, 3, 0, 2, 2, 50]);

        // A whole record holding no valid ClientHello: closed.
        let mut truncated = common::tcp_connect(server.addr);
        truncated.write_all(&[22, 3, 1, 0, 5, b'h', b'e', b'l', b'l', b'o']).unwrap();
        read_until_closed(&truncated);

        // The first bytes of a ClientHello, then nothing: the deadline.
        let stalled = common::tcp_connect(server.addr);
        (&stalled).write_all(&[22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3]).unwrap();
        read_until_closed(&stalled);

        // The same, then the client hangs up.
        let vanishing = common::tcp_connect(server.addr);
        (&vanishing).write_all(&[22, 3, 1, 0, 200, 1, 0]).unwrap();
        drop(vanishing);

        // A client that speaks only TLS 1.2: a protocol_version alert.
        let name = "localhost".try_into().unwrap();
        let conn = rustls::ClientConnection::new(client_config(&[&rustls::version::TLS12]), name).unwrap();
        let mut old = rustls::StreamOwned::new(conn, common::tcp_connect(server.addr));
        let error = loop {
            match old.conn.complete_io(&mut old.sock) {
                Ok(_) if old.conn.is_handshaking() => continue,
                Ok(_) => panic!("a TLS 1.2 handshake completed"),
                Err(error) => break error.to_string(),
            }
        };
        assert!(error.contains("ProtocolVersion"), "{error}");

        // After the handshake, a record that fails to decrypt: bad_record_mac.
        let mut forged = rustls_connect(&server);
        forged.sock.write_all(&[23, 3, 3, 0, 20]).unwrap();
        forged.sock.write_all(&[0x5a; 20]).unwrap();
        let error = loop {
            match forged.conn.complete_io(&mut forged.sock) {
                Ok((0, 0)) => break "closed without an alert".to_string(),
                Ok(_) => continue,
                Err(error) => break error.to_string(),
            }
        };
        assert!(error.contains("BadRecordMac"), "{error}");

        let stats = server.wait_for_stats("every bad connection closed and counted", |s| {
            s.open == 1 && s.totals.tls_handshakes_vanished >= 1 && s.totals.tls_handshake_stalls == 1
        });
        let t = &stats.totals;
        assert_eq!((t.tls_plain_http, t.tls_not_tls, t.tls_incompatible, t.tls_decrypt_errors), (1, 1, 1, 1));
        assert!(t.tls_bad_records + t.tls_handshakes_vanished >= 2, "the truncated hello: {t:?}");
        assert_eq!(t.tls_internal_errors, 0);
        assert_wss_echo(&mut healthy, Message::Binary(vec![9u8; 70_000].into()));

        // Kernel TLS: the server asked the kernel, said what it found, and
        // (here, where the kernel refuses the `tls` ULP) sealed in user space.
        let kernel = fanout::tls::kernel::probe().kernel;
        assert_eq!(stats.tls_kernel, Some(kernel));
        let line = server.tls_line().unwrap();
        let expected = match kernel {
            fanout::tls::kernel::KernelTls::Unavailable => "records sealed in user space (kernel TLS unavailable: TCP_ULP \"tls\" refused",
            fanout::tls::kernel::KernelTls::OfferedUnused => "this kernel offers kernel TLS",
        };
        assert!(line.contains(expected), "{line}");
    }
}

/// The same Python conversation against the compact state and against
/// rustls's own: the same transcript, byte for byte.
#[test]
fn compact_state_and_rustls_state_give_the_same_conversation() {
    if !python_websockets_or_skip("compact_state_and_rustls_state_give_the_same_conversation") {
        return;
    }
    let transcripts: Vec<String> = ["compact", "rustls"]
        .into_iter()
        .map(|state| python_client(&tls_server(Backend::Epoll, &["--tls-state", state])))
        .collect();
    assert_eq!(transcripts[0], transcripts[1]);
}

/// --tls-self-signed: the fingerprint printed is the SHA-256 of the
/// certificate written with --tls-write-cert.
#[test]
fn the_self_signed_fingerprint_is_the_written_certificates_sha256() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("self-signed-{}.pem", std::process::id()));
    let server = Server::start(
        Backend::Epoll,
        &[
            "--tls-self-signed",
            "--tls-write-cert",
            path.to_str().unwrap(),
        ],
    );
    let cert = CertificateDer::from_pem_file(&path).unwrap();
    let line = server.tls_line().unwrap();
    assert!(
        line.contains(&fanout::tls::certs::fingerprint(&cert)),
        "{line}"
    );
    std::fs::remove_file(path).unwrap();
}

/// `fanout load ARGS`, which must succeed; its report.
fn load(args: &[&str]) -> fanout::load::report::Report {
    common::load_report(args).0
}

/// fanout's own client over wss:// (compact and rustls state, pinned and
/// by CA) and tls://: every member gets every broadcast, every echo comes
/// back, each connection did one handshake.
#[test]
fn fanout_load_speaks_wss_and_tls_raw_tcp_in_either_state() {
    let server = tls_server(Backend::Epoll, &[]);
    let url = format!("wss://127.0.0.1:{}", server.addr.port());
    let ca = pki().cert.to_str().unwrap();
    for state in ["compact", "rustls"] {
        let report = load(&[
            "broadcast",
            "--url",
            &url,
            "--tls-ca",
            ca,
            "--tls-state",
            state,
            "--conns",
            "300",
            "--count",
            "5",
        ]);
        let tally = report
            .broadcast
            .as_ref()
            .expect("a broadcast section")
            .tally;
        assert_eq!((tally.delivered, tally.missing), (1500, 0), "{tally:?}");
        assert_eq!(report.connect.tls_handshakes, 300);
    }
    let cert = CertificateDer::from_pem_file(&pki().cert).unwrap();
    let pin = fanout::tls::certs::fingerprint(&cert);
    let report = load(&[
        "echo",
        "--url",
        &url,
        "--tls-pin",
        &pin,
        "--conns",
        "20",
        "--duration",
        "1s",
        "--size",
        "20000",
    ]);
    assert!(echoed(&report) > 0);
    assert_eq!(report.connect.failed, 0);

    let tcp = tls_server(Backend::Epoll, &["--proto", "tcp"]);
    let url = format!("tls://127.0.0.1:{}", tcp.addr.port());
    let report = load(&[
        "echo",
        "--url",
        &url,
        "--tls-ca",
        ca,
        "--conns",
        "20",
        "--duration",
        "1s",
    ]);
    assert!(echoed(&report) > 0);
}

fn echoed(report: &fanout::load::report::Report) -> u64 {
    report.echo.as_ref().expect("an echo section").messages
}

/// A storm brought back with tickets: the reconnects resume; with
/// --tls-resume off none does.
#[test]
fn reconnects_resume_from_tickets_unless_told_not_to() {
    let server = tls_server(Backend::Uring, &[]);
    let url = format!("wss://127.0.0.1:{}", server.addr.port());
    let ca = pki().cert.to_str().unwrap();
    let storm = [
        "storm",
        "--url",
        &url,
        "--tls-ca",
        ca,
        "--conns",
        "200",
        "--duration",
        "5s",
    ];
    let resumed = load(&storm);
    let connect = &resumed.connect;
    assert_eq!(connect.tls_handshakes, 400);
    assert!(
        connect.tls_resumed >= 200,
        "every reconnect resumed: {connect:?}"
    );
    let full = load(&[&storm[..], &["--tls-resume", "off"]].concat());
    assert_eq!(full.connect.tls_resumed, 0);
    assert_eq!(server.stats().totals.tls_resumed, connect.tls_resumed);
}

/// fanout's client against an independent wss:// server (Python's ssl and
/// websockets): the handshake, the upgrade and echoes of up to 70 KB.
#[test]
fn fanout_load_against_pythons_wss_server() {
    if !python_websockets_or_skip("fanout_load_against_pythons_wss_server") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/wss_server.py");
    let mut python = Command::new("python3")
        .arg(script)
        .arg(&pki().cert)
        .arg(&pki().key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(python.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line
        .trim()
        .strip_prefix("ready ")
        .expect("ready PORT")
        .to_string();
    let url = format!("wss://127.0.0.1:{port}/echo");
    let ca = pki().cert.to_str().unwrap();
    let report = load(&[
        "echo",
        "--url",
        &url,
        "--tls-ca",
        ca,
        "--conns",
        "10",
        "--duration",
        "1s",
        "--size",
        "70000",
    ]);
    drop(python.stdin.take()); // it exits when its input closes
    python.wait().unwrap();
    assert_eq!(report.connect.failed, 0, "{:?}", report.connect.failures);
    assert!(echoed(&report) > 0);
}

/// wss:// without a way to trust the server, or with the wrong pin.
#[test]
fn load_over_tls_without_trust_is_a_usage_error_and_a_wrong_pin_fails_each_connection() {
    let server = tls_server(Backend::Epoll, &[]);
    let url = format!("wss://127.0.0.1:{}", server.addr.port());
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args([
            "load",
            "hold",
            "--url",
            &url,
            "--conns",
            "1",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-pin"));
    let wrong = "00".repeat(32);
    let report = load(&[
        "hold",
        "--url",
        &url,
        "--tls-pin",
        &wrong,
        "--conns",
        "5",
        "--duration",
        "1s",
    ]);
    assert_eq!(report.connect.opened, 0);
    let failures = &report.connect.failures;
    assert!(
        failures.keys().all(|cause| cause.starts_with("tls")),
        "{failures:?}"
    );
}
