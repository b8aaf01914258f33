//! One TLS connection, sans-io, for the server's shards and the load
//! generator's alike: ciphertext in, plaintext and records to send out.
//! rustls's unbuffered connection runs the handshake (it owns no buffers;
//! the bytes of a record that is not whole yet wait in this connection's
//! `incoming`). Once established, the connection is either kept as rustls
//! made it (`--tls-state rustls`, the reference) or reduced to the record
//! layer alone (`--tls-state compact`, [`super::record`]): the two traffic
//! secrets, the keys derived from them and two sequence numbers. A server
//! reduces itself at once; a client once its upgrade is answered
//! ([`TlsConn::compact`]), when the session tickets that came before the
//! answer are in rustls's session cache.

use std::cell::RefCell;
use std::sync::Arc;

use ring::aead::LessSafeKey;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};
use rustls::{
    CommonState, ConnectionTrafficSecrets, ExtractedSecrets, HandshakeKind, ServerConfig,
};

use super::record::{self, Direction, OpenError, Suite};
use super::Failure;

/// What the connection keeps once its handshake is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// Secrets, keys and sequence numbers only (about 250 B).
    Compact,
    /// rustls's own connection, as a stock rustls server keeps it.
    Rustls,
}

/// How a shard's TLS connections start and what they keep.
#[derive(Debug)]
pub struct TlsSetup {
    pub config: Arc<ServerConfig>,
    pub state: StateKind,
    /// What the kernel said when asked for kernel TLS.
    pub kernel: super::kernel::KernelTls,
}

/// What differs between the two ends of a connection.
pub trait Side: Sized {
    type Data;
    /// A server checks the first bytes for plain HTTP.
    const IS_SERVER: bool;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn state(&self) -> &CommonState;
    fn into_secrets(self) -> Result<ExtractedSecrets, rustls::Error>;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    const IS_SERVER: bool = true;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn state(&self) -> &CommonState {
        self
    }
    fn into_secrets(self) -> Result<ExtractedSecrets, rustls::Error> {
        Ok(self.dangerous_into_kernel_connection()?.0)
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    const IS_SERVER: bool = false;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn state(&self) -> &CommonState {
        self
    }
    fn into_secrets(self) -> Result<ExtractedSecrets, rustls::Error> {
        Ok(self.dangerous_into_kernel_connection()?.0)
    }
}

/// A TLS connection of either side.
pub struct TlsConn<C>(State<C>);

/// The server's end (the shard core's connections).
pub type ServerTls = TlsConn<UnbufferedServerConnection>;
/// The client's end (the load generator's connections).
pub type ClientTls = TlsConn<UnbufferedClientConnection>;

enum State<C> {
    Handshaking(Box<Handshaking<C>>),
    Rustls(Box<Rustls<C>>),
    Compact(Box<Compact>),
    Over,
}

struct Handshaking<C> {
    conn: C,
    incoming: Vec<u8>,
    secrets: Captured,
    /// Some bytes arrived already (only the first are checked for plain HTTP).
    started: bool,
}

struct Rustls<C> {
    conn: C,
    incoming: Vec<u8>,
    /// The traffic secrets, for a client that reduces itself later.
    secrets: Captured,
}

struct Compact {
    rx: Direction,
    tx: Direction,
    /// A client accepts NewSessionTicket; a server refuses it.
    is_server: bool,
    /// A received record that is not whole yet.
    partial: Vec<u8>,
    peer_closed: bool,
}

/// What one batch of received bytes produced, in the shard's scratch.
#[derive(Default)]
pub struct Flow {
    /// Application bytes received, decrypted.
    pub plain: Vec<u8>,
    /// Records (or, to a plain-HTTP client, a response) to send now.
    pub wire: Vec<u8>,
    /// The handshake finished during this batch.
    pub established: bool,
    /// ... and it was a resumption (a session ticket).
    pub resumed: bool,
    /// The peer sent close_notify.
    pub peer_closed: bool,
    /// KeyUpdates received.
    pub key_updates: u32,
}

impl Flow {
    pub fn clear(&mut self) {
        self.plain.clear();
        self.wire.clear();
        (
            self.established,
            self.resumed,
            self.peer_closed,
            self.key_updates,
        ) = (false, false, false, 0);
    }
}

impl ServerTls {
    pub fn new(setup: &TlsSetup) -> ServerTls {
        let conn = UnbufferedServerConnection::new(setup.config.clone())
            .expect("a server config rustls accepted when it was built");
        TlsConn::handshaking(conn)
    }
}

impl ClientTls {
    /// A client connection; its ClientHello comes out of the first
    /// [`TlsConn::receive`] (with no bytes).
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<ClientTls, rustls::Error> {
        Ok(TlsConn::handshaking(UnbufferedClientConnection::new(
            config, name,
        )?))
    }
}

impl<C: Side> TlsConn<C> {
    fn handshaking(conn: C) -> TlsConn<C> {
        TlsConn(State::Handshaking(Box::new(Handshaking {
            conn,
            incoming: Vec::new(),
            secrets: Captured::default(),
            started: false,
        })))
    }

    pub fn is_handshaking(&self) -> bool {
        matches!(self.0, State::Handshaking(_))
    }

    /// Take `data` from the peer. On failure, `flow.wire` holds the alert
    /// (or HTTP response) to send before closing. rustls parses what a
    /// stranger sent: should it ever panic, that one connection fails
    /// (`tls_internal_errors`) and the shard with its other connections
    /// carries on.
    pub fn receive(
        &mut self,
        state: StateKind,
        data: &mut [u8],
        flow: &mut Flow,
    ) -> Result<(), Failure> {
        let receive = std::panic::AssertUnwindSafe(|| self.receive_unguarded(state, data, flow));
        let result = std::panic::catch_unwind(receive).unwrap_or(Err(Failure::Internal));
        if result.is_err() {
            self.0 = State::Over;
        }
        result
    }

    fn receive_unguarded(
        &mut self,
        state: StateKind,
        data: &mut [u8],
        flow: &mut Flow,
    ) -> Result<(), Failure> {
        match &mut self.0 {
            State::Handshaking(hs) => match hs.receive(data, flow)? {
                false => Ok(()),
                true => self.establish(state, flow),
            },
            State::Rustls(conn) => conn.receive(data, flow),
            State::Compact(conn) => conn.receive(data, flow),
            State::Over => Ok(()),
        }
    }

    /// The handshake just finished: a server keeps what `state` says, a
    /// client rustls's state until [`TlsConn::compact`]; then read what
    /// followed the handshake in the same batch.
    fn establish(&mut self, state: StateKind, flow: &mut Flow) -> Result<(), Failure> {
        let State::Handshaking(hs) = std::mem::replace(&mut self.0, State::Over) else {
            unreachable!("establish follows a handshake");
        };
        let Handshaking {
            conn,
            mut incoming,
            secrets,
            ..
        } = *hs;
        flow.established = true;
        flow.resumed = conn.state().handshake_kind() == Some(HandshakeKind::Resumed);
        if C::IS_SERVER && state == StateKind::Compact {
            let mut compact = Box::new(Compact::from_rustls(conn, secrets)?);
            let result = compact.receive(&mut incoming, flow);
            self.0 = State::Compact(compact);
            return result;
        }
        let mut rustls = Box::new(Rustls {
            conn,
            incoming: Vec::new(),
            secrets,
        });
        let result = rustls.receive(&incoming, flow);
        self.0 = State::Rustls(rustls);
        result
    }

    /// Keep only the record layer from now on (a client, once its upgrade
    /// is answered). Nothing changes unless the connection is established
    /// in rustls's state with no record half read.
    pub fn compact(&mut self) -> Result<(), Failure> {
        let ready = matches!(&self.0, State::Rustls(rustls) if rustls.incoming.is_empty());
        if !ready {
            return Ok(());
        }
        let State::Rustls(rustls) = std::mem::replace(&mut self.0, State::Over) else {
            unreachable!("checked above");
        };
        let Rustls { conn, secrets, .. } = *rustls;
        self.0 = State::Compact(Box::new(Compact::from_rustls(conn, secrets)?));
        Ok(())
    }

    /// Append to `out` the records carrying `parts` as application data.
    /// Only once established (callers send nothing during the handshake).
    pub fn seal<T: AsRef<[u8]>>(&mut self, parts: &[T], out: &mut Vec<u8>) {
        match &mut self.0 {
            State::Compact(conn) => conn.tx.seal(record::APPLICATION_DATA, parts, out),
            State::Rustls(conn) => conn.seal(parts, out),
            State::Handshaking(_) | State::Over => {}
        }
    }

    /// Append our close_notify to `out` (nothing during the handshake).
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        match &mut self.0 {
            State::Compact(conn) => conn.tx.seal(record::ALERT, &[[1u8, 0]], out),
            State::Rustls(conn) => conn.close_notify(out),
            State::Handshaking(_) | State::Over => {}
        }
    }
}

impl<C: Side> Handshaking<C> {
    /// Returns whether the handshake is now complete.
    fn receive(&mut self, data: &[u8], flow: &mut Flow) -> Result<bool, Failure> {
        if C::IS_SERVER && !self.started && !data.is_empty() {
            self.started = true;
            if let Some(failure) = not_tls(data, &mut flow.wire) {
                return Err(failure);
            }
        }
        self.incoming.extend_from_slice(data);
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process(&mut self.incoming);
            let done = match state {
                Err(error) => Some(Err(Failure::of(&error))),
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut flow.wire);
                    None
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Ok(false)),
                Ok(ConnectionState::WriteTraffic(_)) => Some(Ok(true)),
                Ok(ConnectionState::ReadTraffic(mut read)) => {
                    // Application data right behind the client's Finished.
                    while let Some(Ok(record)) = read.next_record() {
                        flow.plain.extend_from_slice(record.payload);
                    }
                    None
                }
                Ok(_) => Some(Ok(false)),
            };
            self.secrets.take_from_this_thread();
            self.incoming.drain(..discard);
            match done {
                None => {}
                Some(Err(failure)) => {
                    collect_alert(&mut self.conn, &mut self.incoming, &mut flow.wire);
                    return Err(failure);
                }
                Some(Ok(established)) => return Ok(established),
            }
        }
    }
}

impl<C: Side> Rustls<C> {
    fn receive(&mut self, data: &[u8], flow: &mut Flow) -> Result<(), Failure> {
        self.incoming.extend_from_slice(data);
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process(&mut self.incoming);
            let next = match state {
                Err(error) => Next::Failed(Failure::of(&error)),
                Ok(ConnectionState::ReadTraffic(mut read)) => {
                    while let Some(Ok(record)) = read.next_record() {
                        flow.plain.extend_from_slice(record.payload);
                    }
                    Next::More
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut flow.wire);
                    Next::More
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Next::More
                }
                Ok(ConnectionState::PeerClosed) => {
                    flow.peer_closed = true;
                    Next::More
                }
                Ok(_) => Next::Done,
            };
            self.incoming.drain(..discard);
            match next {
                Next::More => {}
                Next::Done => return Ok(()),
                Next::Failed(failure) => {
                    collect_alert(&mut self.conn, &mut self.incoming, &mut flow.wire);
                    return Err(failure);
                }
            }
        }
    }

    fn seal<T: AsRef<[u8]>>(&mut self, parts: &[T], out: &mut Vec<u8>) {
        let plaintext: Vec<u8> = parts
            .iter()
            .flat_map(|p| p.as_ref().iter().copied())
            .collect();
        self.with_write_traffic(out, |traffic, buf| traffic.encrypt(&plaintext, buf));
    }

    fn close_notify(&mut self, out: &mut Vec<u8>) {
        self.with_write_traffic(out, |traffic, buf| traffic.queue_close_notify(buf));
    }

    /// Run `write` on rustls's WriteTraffic state into the end of `out`,
    /// growing it to the size rustls asks for.
    fn with_write_traffic(
        &mut self,
        out: &mut Vec<u8>,
        mut write: impl FnMut(
            &mut rustls::unbuffered::WriteTraffic<'_, C::Data>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
    ) {
        let start = out.len();
        let UnbufferedStatus { state, .. } = self.conn.process(&mut self.incoming);
        let Ok(ConnectionState::WriteTraffic(mut traffic)) = state else {
            return;
        };
        loop {
            match write(&mut traffic, &mut out[start..]) {
                Ok(written) => return out.truncate(start + written),
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    out.resize(start + required_size, 0)
                }
                Err(_) => return out.truncate(start),
            }
        }
    }
}

/// What to do after one state of rustls's connection.
enum Next {
    More,
    Done,
    Failed(Failure),
}

impl Compact {
    /// The record layer of an established rustls connection, checked
    /// against what rustls derived (the secrets came from its key log).
    fn from_rustls<C: Side>(conn: C, secrets: Captured) -> Result<Compact, Failure> {
        let suite = conn
            .state()
            .negotiated_cipher_suite()
            .and_then(|suite| Suite::from_rustls(suite.suite()))
            .ok_or(Failure::Internal)?;
        let (Some(client), Some(server)) = (secrets.client, secrets.server) else {
            return Err(Failure::Internal);
        };
        let (ours, theirs) = match C::IS_SERVER {
            true => (server, client),
            false => (client, server),
        };
        let extracted = conn.into_secrets().map_err(|_| Failure::Internal)?;
        let rx = Direction::new(suite, theirs.bytes(), extracted.rx.0);
        let tx = Direction::new(suite, ours.bytes(), extracted.tx.0);
        if !same_keys(&rx, &extracted.rx.1) || !same_keys(&tx, &extracted.tx.1) {
            return Err(Failure::Internal);
        }
        Ok(Compact {
            rx,
            tx,
            is_server: C::IS_SERVER,
            partial: Vec::new(),
            peer_closed: false,
        })
    }

    fn receive(&mut self, data: &mut [u8], flow: &mut Flow) -> Result<(), Failure> {
        if self.peer_closed {
            return Ok(()); // nothing counts after close_notify
        }
        if self.partial.is_empty() {
            let used = self.open_records(data, flow)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(data);
            let used = self.open_records(&mut joined, flow)?;
            joined.drain(..used);
            self.partial = joined;
        }
        if self.partial.is_empty() {
            self.partial = Vec::new(); // give back the capacity: an idle connection holds nothing
        }
        Ok(())
    }

    /// Open every whole record at the front of `data`; returns the bytes used.
    fn open_records(&mut self, data: &mut [u8], flow: &mut Flow) -> Result<usize, Failure> {
        let mut used = 0;
        let mut key: Option<LessSafeKey> = None;
        while !self.peer_closed {
            let opened = match self.rx.open(&mut key, &mut data[used..]) {
                Ok(Some(opened)) => opened,
                Ok(None) => break,
                Err(error) => {
                    let (alert, failure) = match error {
                        OpenError::Malformed => (DECODE_ERROR, Failure::BadRecord),
                        OpenError::Decrypt => (BAD_RECORD_MAC, Failure::Decrypt),
                    };
                    self.alert(alert, &mut flow.wire);
                    return Err(failure);
                }
            };
            let plaintext = &data[used..][opened.plaintext.clone()];
            match opened.content_type {
                record::APPLICATION_DATA => flow.plain.extend_from_slice(plaintext),
                record::ALERT => self.on_alert(plaintext, flow)?,
                record::HANDSHAKE => {
                    let updates = self.on_handshake(plaintext, flow)?;
                    if updates > 0 {
                        key = None; // the receiving keys changed
                    }
                }
                _ => {
                    self.alert(UNEXPECTED_MESSAGE, &mut flow.wire);
                    return Err(Failure::BadRecord);
                }
            }
            used += opened.wire_len;
        }
        Ok(used)
    }

    fn on_alert(&mut self, alert: &[u8], flow: &mut Flow) -> Result<(), Failure> {
        match alert {
            [_, CLOSE_NOTIFY] => {
                self.peer_closed = true;
                flow.peer_closed = true;
                Ok(())
            }
            [1, USER_CANCELED] => Ok(()), // a warning; close_notify follows
            _ => Err(Failure::PeerAlert),
        }
    }

    /// Post-handshake messages (RFC 8446 § 4.6): KeyUpdate, and from a
    /// server NewSessionTicket (the compact client keeps no more tickets:
    /// the ones before the upgrade's answer are in rustls's cache); returns
    /// how many KeyUpdates there were.
    fn on_handshake(&mut self, mut messages: &[u8], flow: &mut Flow) -> Result<u32, Failure> {
        let mut updates = 0;
        while !messages.is_empty() {
            match messages {
                [NEW_SESSION_TICKET, a, b, c, rest @ ..] if !self.is_server => {
                    let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
                    let Some(rest) = rest.get(len..) else {
                        self.alert(DECODE_ERROR, &mut flow.wire);
                        return Err(Failure::BadRecord);
                    };
                    messages = rest;
                }
                [KEY_UPDATE, 0, 0, 1, request, rest @ ..] if *request <= 1 => {
                    self.rx.update();
                    if *request == 1 {
                        // Answer with ours, under the old key, then switch.
                        let answer = [KEY_UPDATE, 0, 0, 1, 0];
                        self.tx.seal(record::HANDSHAKE, &[answer], &mut flow.wire);
                        self.tx.update();
                    }
                    updates += 1;
                    messages = rest;
                }
                _ => {
                    self.alert(UNEXPECTED_MESSAGE, &mut flow.wire);
                    return Err(Failure::BadRecord);
                }
            }
        }
        flow.key_updates += updates;
        Ok(updates)
    }

    fn alert(&mut self, description: u8, wire: &mut Vec<u8>) {
        self.tx.seal(record::ALERT, &[[2u8, description]], wire);
    }
}

const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const DECODE_ERROR: u8 = 50;
const USER_CANCELED: u8 = 90;
const KEY_UPDATE: u8 = 24;
const NEW_SESSION_TICKET: u8 = 4;

fn same_keys(ours: &Direction, theirs: &ConnectionTrafficSecrets) -> bool {
    let (key, iv) = match theirs {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key.as_ref(), iv.as_ref()),
        _ => return false,
    };
    ours.key_and_iv() == (key, iv)
}

/// Copy one encoded handshake record (or alert) to the end of `wire`.
fn encode_into<Data>(encode: &mut EncodeTlsData<'_, Data>, wire: &mut Vec<u8>) {
    let start = wire.len();
    loop {
        match encode.encode(&mut wire[start..]) {
            Ok(written) => return wire.truncate(start + written),
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                wire.resize(start + required_size, 0)
            }
            Err(_) => return wire.truncate(start),
        }
    }
}

/// After rustls failed: the alert it queued, if any, to the end of `wire`.
fn collect_alert<C: Side>(conn: &mut C, incoming: &mut [u8], wire: &mut Vec<u8>) {
    loop {
        let UnbufferedStatus { state, .. } = conn.process(incoming);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => encode_into(&mut encode, wire),
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            _ => return,
        }
    }
}

/// The first bytes of a connection that is not speaking TLS: plain HTTP
/// (a `ws://` client or a browser at the wrong scheme) gets a 400 that
/// says why; anything else that is not a handshake record, an alert.
pub fn not_tls(first: &[u8], wire: &mut Vec<u8>) -> Option<Failure> {
    const HANDSHAKE_RECORD: u8 = 22;
    match first.first() {
        None | Some(&HANDSHAKE_RECORD) => None,
        Some(_) if looks_like_http(first) => {
            wire.extend_from_slice(PLAIN_HTTP_RESPONSE.as_bytes());
            Some(Failure::PlainHttp)
        }
        Some(_) => {
            // A fatal decode_error alert in the clear (RFC 8446 § 6).
            wire.extend_from_slice(&[record::ALERT, 3, 3, 0, 2, 2, DECODE_ERROR]);
            Some(Failure::NotTls)
        }
    }
}

fn looks_like_http(first: &[u8]) -> bool {
    let word = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=7).contains(&word) && first.get(word) == Some(&b' ')
}

const PLAIN_HTTP_RESPONSE: &str = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 47\r\nConnection: close\r\n\r\nThis port speaks TLS: use wss:// or https://.\r\n";

/// A traffic secret, up to SHA-384's 48 bytes.
#[derive(Clone, Copy)]
struct Secret {
    bytes: [u8; 48],
    len: u8,
}

impl Secret {
    fn new(secret: &[u8]) -> Secret {
        let mut bytes = [0; 48];
        bytes[..secret.len()].copy_from_slice(secret);
        Secret {
            bytes,
            len: secret.len() as u8,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The two application traffic secrets of one handshake.
#[derive(Clone, Copy, Default)]
struct Captured {
    client: Option<Secret>,
    server: Option<Secret>,
}

thread_local! {
    /// What [`SecretCapture`] heard during the current call into rustls on
    /// this thread: a shard drives one connection at a time, so whatever
    /// rustls logged during that call belongs to that connection.
    static HEARD: RefCell<Captured> = RefCell::default();
}

impl Captured {
    /// Move what rustls logged on this thread into this handshake.
    fn take_from_this_thread(&mut self) {
        HEARD.with_borrow_mut(|heard| {
            self.client = heard.client.take().or(self.client);
            self.server = heard.server.take().or(self.server);
        });
    }
}

/// rustls's key log, used to learn a connection's application traffic
/// secrets (the compact state keeps them for KeyUpdates; rustls exports
/// only the keys derived from them). Nothing is written anywhere.
#[derive(Debug)]
pub struct SecretCapture;

impl rustls::KeyLog for SecretCapture {
    fn will_log(&self, label: &str) -> bool {
        // Both labels are the same on either side of a connection.
        matches!(label, "CLIENT_TRAFFIC_SECRET_0" | "SERVER_TRAFFIC_SECRET_0")
    }

    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        HEARD.with_borrow_mut(|heard| match label {
            "CLIENT_TRAFFIC_SECRET_0" => heard.client = Some(Secret::new(secret)),
            "SERVER_TRAFFIC_SECRET_0" => heard.server = Some(Secret::new(secret)),
            _ => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{server_config, Identity, KeyKind};
    use std::io::{Read, Write};

    fn client_for(identity: &Identity) -> rustls::ClientConnection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.chain[0].clone()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap()
    }

    /// Carry the client's records to the server; returns what the server
    /// produced (its records already handed back to the client).
    fn exchange(
        client: &mut rustls::ClientConnection,
        server: &mut ServerTls,
        setup: &TlsSetup,
    ) -> Flow {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut flow = Flow::default();
        server.receive(setup.state, &mut wire, &mut flow).unwrap();
        client.read_tls(&mut &flow.wire[..]).unwrap();
        client.process_new_packets().unwrap();
        flow
    }

    fn read_all(client: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut got = vec![0; 1 << 16];
        let n = client.reader().read(&mut got).unwrap_or(0);
        got.truncate(n);
        got
    }

    /// What the client sees, over a whole conversation: handshake, data
    /// both ways, a KeyUpdate it asks the server to answer, then
    /// close_notify.
    fn conversation(state: StateKind) -> Vec<Vec<u8>> {
        let identity = Identity::self_signed(KeyKind::EcdsaP256).unwrap();
        let mut client = client_for(&identity);
        let config = server_config(identity_clone(&identity), &[], state).unwrap();
        let setup = TlsSetup {
            config,
            state,
            kernel: crate::tls::kernel::KernelTls::Unavailable,
        };
        let mut server = ServerTls::new(&setup);
        let mut established = false;
        for _ in 0..4 {
            established |= exchange(&mut client, &mut server, &setup).established;
        }
        assert!(established && !client.is_handshaking());
        let mut seen = Vec::new();
        client.writer().write_all(b"hello").unwrap();
        seen.push(exchange(&mut client, &mut server, &setup).plain);
        let mut out = Vec::new();
        server.seal(&[&b"wor"[..], b"ld"], &mut out);
        client.read_tls(&mut &out[..]).unwrap();
        client.process_new_packets().unwrap();
        seen.push(read_all(&mut client));
        client.refresh_traffic_keys().unwrap();
        client.writer().write_all(b"after the update").unwrap();
        let flow = exchange(&mut client, &mut server, &setup);
        seen.push(flow.plain);
        let mut out = Vec::new();
        server.seal(&[b"still readable"], &mut out);
        client.read_tls(&mut &out[..]).unwrap();
        client.process_new_packets().unwrap();
        seen.push(read_all(&mut client));
        client.send_close_notify();
        let flow = exchange(&mut client, &mut server, &setup);
        assert!(flow.peer_closed);
        seen
    }

    fn identity_clone(identity: &Identity) -> Identity {
        Identity {
            chain: identity.chain.clone(),
            key: identity.key.clone_key(),
        }
    }

    #[test]
    fn compact_and_rustls_state_carry_the_same_conversation() {
        let compact = conversation(StateKind::Compact);
        assert_eq!(compact, conversation(StateKind::Rustls));
        let expected: [&[u8]; 4] = [b"hello", b"world", b"after the update", b"still readable"];
        assert_eq!(compact, expected.map(<[u8]>::to_vec));
    }

    #[test]
    fn plain_http_gets_a_400_and_garbage_an_alert() {
        let config = server_config(
            Identity::self_signed(KeyKind::EcdsaP256).unwrap(),
            &[],
            StateKind::Compact,
        )
        .unwrap();
        let setup = TlsSetup {
            config,
            state: StateKind::Compact,
            kernel: crate::tls::kernel::KernelTls::Unavailable,
        };
        let mut flow = Flow::default();
        let mut http = b"GET /echo HTTP/1.1\r\n\r\n".to_vec();
        assert_eq!(
            ServerTls::new(&setup).receive(setup.state, &mut http, &mut flow),
            Err(Failure::PlainHttp)
        );
        assert!(flow.wire.starts_with(b"HTTP/1.1 400"));
        flow.clear();
        assert_eq!(
            ServerTls::new(&setup).receive(setup.state, &mut [0xff; 8], &mut flow),
            Err(Failure::NotTls)
        );
        assert_eq!(flow.wire[0], record::ALERT);
    }
}
