//! The load generator's session-ticket store. rustls's own keeps 8 tickets
//! per server, so of many connections to one server few could resume; this
//! one keeps up to [`TICKETS_PER_SERVER`] (each used once, as TLS 1.3
//! asks), a fixed bound so the client's memory per connection does not
//! grow with tickets.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// Tickets kept per server name (a few hundred bytes each); the oldest go first.
pub const TICKETS_PER_SERVER: usize = 8192;

#[derive(Debug, Default)]
pub struct TicketStore {
    servers: Mutex<HashMap<ServerName<'static>, Kept>>,
}

#[derive(Debug, Default)]
struct Kept {
    kx_hint: Option<NamedGroup>,
    tickets: VecDeque<Tls13ClientSessionValue>,
}

impl TicketStore {
    fn with<T>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut Kept) -> T) -> T {
        let mut servers = self.servers.lock().unwrap();
        f(servers.entry(name.to_owned()).or_default())
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.with(&name, |kept| kept.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(name, |kept| kept.kx_hint)
    }

    // TLS 1.2 is never negotiated (the client offers TLS 1.3 only).
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.with(&name, |kept| {
            if kept.tickets.len() == TICKETS_PER_SERVER {
                kept.tickets.pop_front();
            }
            kept.tickets.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.with(name, |kept| kept.tickets.pop_back())
    }
}
