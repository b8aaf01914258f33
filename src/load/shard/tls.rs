//! TLS on the load generator's connections (wss://, tls://), with the same
//! connection type as the server (`tls::conn`): the handshake right after
//! the TCP connect, then the upgrade request sealed, the answer and the
//! frames opened; once the upgrade is answered a compact client keeps only
//! the record layer. The states live beside the slab, so a plain client
//! stays 40 bytes.

use std::io;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::Shard;
use crate::tls::conn::Flow;
use crate::tls::slots::Slots;
use crate::tls::{ClientSetup, ClientTls, StateKind};
use rustls::client::UnbufferedClientConnection;

/// A shard's TLS client connections and how they start.
pub(super) struct TlsClients {
    setup: Arc<ClientSetup>,
    /// The name each target's certificate is checked against.
    names: Vec<ServerName<'static>>,
    slots: Slots<UnbufferedClientConnection>,
    /// Handshakes completed, and of those resumed from a ticket.
    pub handshakes: u64,
    pub resumed: u64,
}

impl TlsClients {
    pub fn new(setup: Arc<ClientSetup>, names: Vec<ServerName<'static>>) -> TlsClients {
        TlsClients {
            setup,
            names,
            slots: Slots::default(),
            handshakes: 0,
            resumed: 0,
        }
    }

    pub fn end(&mut self, key: usize) {
        self.slots.end(key);
    }
}

impl Shard {
    /// The TCP connect finished: start the TLS handshake (the ClientHello
    /// goes out now; the request once the handshake is done).
    pub(super) fn tls_start(&mut self, key: usize) -> Result<(), String> {
        let server = self.clients[key].server as usize;
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        let conn = ClientTls::new(tls.setup.config.clone(), tls.names[server].clone())
            .map_err(|e| format!("tls: {e}"))?;
        tls.slots.put(key, conn);
        self.tls_bytes(key, &mut []);
        Ok(())
    }

    /// Ciphertext from the server: records TLS answers with go out, the
    /// plaintext to the parser. Returns whether the client is still open.
    pub(super) fn tls_bytes(&mut self, key: usize, data: &mut [u8]) -> bool {
        let Some(tls) = self.tls.as_mut() else {
            return false;
        };
        let state_kind = tls.setup.state;
        let mut flow = std::mem::take(&mut tls.slots.flow);
        flow.clear();
        let result = match tls.slots.get_mut(key) {
            Some(conn) => conn.receive(state_kind, data, &mut flow),
            None => return false,
        };
        if flow.established {
            tls.handshakes += 1;
            tls.resumed += u64::from(flow.resumed);
        }
        let open = self.after_tls_input(key, result, &mut flow);
        if let Some(tls) = self.tls.as_mut() {
            tls.slots.flow = flow;
        }
        open
    }

    fn after_tls_input(
        &mut self,
        key: usize,
        result: Result<(), crate::tls::Failure>,
        flow: &mut Flow,
    ) -> bool {
        if !flow.wire.is_empty() {
            if let Err(e) = self.clients[key].send(&flow.wire) {
                self.fail_client(key, &crate::load::client::failure_cause(&e));
                return false;
            }
        }
        if let Err(failure) = result {
            self.fail_client(key, &format!("tls: {failure:?}"));
            return false;
        }
        if flow.established && self.send_request(key).is_err() {
            return false;
        }
        if !flow.plain.is_empty() && !self.on_bytes(key, &mut flow.plain) {
            return false;
        }
        if flow.peer_closed && self.clients.contains(key) {
            self.server_closed(key, "tls close_notify", &[]);
            return false;
        }
        self.clients.contains(key)
    }

    /// Write `bytes` to the client: sealed first if it speaks TLS.
    pub(super) fn send_to(&mut self, key: usize, bytes: &[u8]) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return self.clients[key].send(bytes);
        };
        let Some((conn, sealed)) = tls.slots.with_scratch(key) else {
            return self.clients[key].send(bytes);
        };
        sealed.clear();
        conn.seal(&[bytes], sealed);
        self.clients[key].send(sealed)
    }

    /// The upgrade is answered: a compact client keeps only the record
    /// layer from now on.
    pub(super) fn tls_opened(&mut self, key: usize) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        if tls.setup.state != StateKind::Compact {
            return;
        }
        if let Some(conn) = tls.slots.get_mut(key) {
            // A failure leaves rustls's state in place: still correct, larger.
            let _ = conn.compact();
        }
    }
}
