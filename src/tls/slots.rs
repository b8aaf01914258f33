//! The TLS states of a shard's connections, beside its connection slab and
//! indexed by the same key (so a plain connection pays nothing), and the
//! scratch their bytes pass through: the server's shard core and the load
//! generator's shards both keep one.

use super::conn::{Flow, TlsConn};
use crate::side_table::SideTable;

pub struct Slots<C> {
    states: SideTable<TlsConn<C>>,
    /// Decrypted input and records to send, for one read at a time.
    pub flow: Flow,
    /// Sealed output, for one send at a time.
    pub sealed: Vec<u8>,
}

impl<C> Default for Slots<C> {
    fn default() -> Self {
        Slots {
            states: SideTable::default(),
            flow: Flow::default(),
            sealed: Vec::new(),
        }
    }
}

impl<C> Slots<C> {
    /// `conn` is the state of connection `key` from now on.
    pub fn put(&mut self, key: usize, conn: TlsConn<C>) {
        self.states.put(key, conn);
    }

    pub fn get(&self, key: usize) -> Option<&TlsConn<C>> {
        self.states.get(key)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut TlsConn<C>> {
        self.states.get_mut(key)
    }

    /// Connection `key`'s state with the seal scratch beside it.
    pub fn with_scratch(&mut self, key: usize) -> Option<(&mut TlsConn<C>, &mut Vec<u8>)> {
        let conn = self.states.get_mut(key)?;
        Some((conn, &mut self.sealed))
    }

    /// Connection `key` is gone.
    pub fn end(&mut self, key: usize) {
        self.states.take(key);
    }
}
