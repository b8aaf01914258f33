//! TLS in the shard core: a connection's ciphertext goes through its
//! [`ServerTls`] before the session sees it, and everything the core sends
//! an established connection is sealed on the way out — each member of the
//! room apart, since each has its own keys and sequence numbers. The TLS
//! states live beside the slab (indexed by the same key), so a plain
//! server's connections stay 24 bytes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{send_plain, Core, Flags, How, Io};
use crate::server::session::{AfterFlush, Phase};
use crate::server::stats::{bump, count_tls_failure};
use crate::tls::conn::Flow;
use crate::tls::slots::Slots;
use crate::tls::{Failure, ServerTls, TlsSetup};
use rustls::server::UnbufferedServerConnection;

/// A shard's TLS connections and how they start.
pub(super) struct TlsConns {
    setup: Arc<TlsSetup>,
    slots: Slots<UnbufferedServerConnection>,
}

/// What `send` needs to seal an established connection's bytes.
pub(super) struct Sealer<'a> {
    pub tls: &'a mut ServerTls,
    pub out: &'a mut Vec<u8>,
}

impl TlsConns {
    pub fn new(setup: Arc<TlsSetup>) -> TlsConns {
        TlsConns {
            setup,
            slots: Slots::default(),
        }
    }

    fn start(&mut self, key: usize) {
        self.slots.put(key, ServerTls::new(&self.setup));
    }

    /// The sealer of an established connection (None while it handshakes).
    pub fn sealer(&mut self, key: usize) -> Option<Sealer<'_>> {
        let (tls, out) = self.slots.with_scratch(key)?;
        (!tls.is_handshaking()).then_some(Sealer { tls, out })
    }

    pub fn handshaking(&self, key: usize) -> bool {
        self.slots.get(key).is_some_and(ServerTls::is_handshaking)
    }

    fn end(&mut self, key: usize) {
        self.slots.end(key);
    }
}

/// Seal for `key` if the server speaks TLS and the connection is established.
pub(super) fn sealer_for(tls: &mut Option<TlsConns>, key: usize) -> Option<Sealer<'_>> {
    tls.as_mut().and_then(|tls| tls.sealer(key))
}

impl<S> Core<S> {
    pub(super) fn start_tls(&mut self, key: usize) {
        if let Some(tls) = &mut self.tls {
            tls.start(key);
        }
    }

    pub(super) fn end_tls(&mut self, key: usize) {
        if let Some(tls) = &mut self.tls {
            tls.end(key);
        }
    }

    /// Whether `key` is a TLS connection still in its handshake.
    pub(super) fn tls_handshaking(&self, key: usize) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.handshaking(key))
    }

    /// Ciphertext from a TLS connection: records the TLS layer answers with
    /// go out as they are, decrypted bytes go to the session. Returns
    /// whether the connection is still open.
    pub(super) fn received_tls<I: Io<Socket = S>>(
        &mut self,
        io: &mut I,
        key: usize,
        data: &mut [u8],
    ) -> bool {
        let Some(tls) = self.tls.as_mut() else {
            return false;
        };
        let mut flow = std::mem::take(&mut tls.slots.flow);
        flow.clear();
        let Some(state) = tls.slots.get_mut(key) else {
            tls.slots.flow = flow;
            return false;
        };
        let result = state.receive(tls.setup.state, data, &mut flow);
        let open = self.after_tls_input(io, key, result, &mut flow);
        if let Some(tls) = self.tls.as_mut() {
            tls.slots.flow = flow;
        }
        open
    }

    fn after_tls_input<I: Io<Socket = S>>(
        &mut self,
        io: &mut I,
        key: usize,
        result: Result<(), Failure>,
        flow: &mut Flow,
    ) -> bool {
        let counters = self.hub.counters(self.id);
        if !flow.wire.is_empty() {
            let conn = &mut self.conns[key];
            if send_plain(conn, io, key, &[&flow.wire[..]], counters).is_err() {
                self.close(io, key, How::Cut);
                return false;
            }
        }
        if flow.established {
            bump(&counters.tls_handshakes);
            if flow.resumed {
                bump(&counters.tls_resumed);
            }
        }
        counters
            .tls_key_updates
            .fetch_add(flow.key_updates as u64, Relaxed);
        if let Err(failure) = result {
            count_tls_failure(counters, failure);
            return self.close_after_flush(io, key);
        }
        if !flow.plain.is_empty() && !self.run_session(io, key, &mut flow.plain) {
            return false;
        }
        if flow.peer_closed && self.conns.contains(key) {
            bump(&self.counters().tls_close_notifies);
            return self.close_after_flush(io, key);
        }
        self.conns.contains(key)
    }

    /// The TLS layer is done with this connection (a failure, or the
    /// peer's close_notify): close it once what is queued is written.
    fn close_after_flush<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) -> bool {
        let conn = &mut self.conns[key];
        let was = conn.phase;
        conn.phase = Phase::Closing(AfterFlush::HangUp);
        if was == Phase::Open(crate::protocol::Route::Room) {
            self.hub.leave_room(self.id);
        }
        self.start_closing(io, key);
        self.conns.contains(key)
    }

    /// Our close_notify, once, after the last bytes the session queued.
    pub(super) fn say_close_notify<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        let conn = &mut self.conns[key];
        if conn.flags.has(Flags::CLOSE_NOTIFY_SENT) {
            return;
        }
        let Some(sealer) = tls.sealer(key) else {
            return;
        };
        sealer.out.clear();
        sealer.tls.close_notify(sealer.out);
        conn.flags.set(Flags::CLOSE_NOTIFY_SENT, true);
        let counters = self.hub.counters(self.id);
        let _ = send_plain(conn, io, key, &[&sealer.out[..]], counters);
    }
}
