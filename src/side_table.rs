//! State some connections have, kept beside a connection slab and indexed
//! by the same key, so the connections without it pay nothing in their
//! slot: TLS states, per-connection deflate codecs.

pub struct SideTable<T> {
    states: Vec<Option<T>>,
}

impl<T> Default for SideTable<T> {
    fn default() -> Self {
        SideTable { states: Vec::new() }
    }
}

impl<T> SideTable<T> {
    /// `state` belongs to connection `key` from now on.
    pub fn put(&mut self, key: usize, state: T) {
        if self.states.len() <= key {
            self.states.resize_with(key + 1, || None);
        }
        self.states[key] = Some(state);
    }

    pub fn get(&self, key: usize) -> Option<&T> {
        self.states.get(key)?.as_ref()
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.states.get_mut(key)?.as_mut()
    }

    /// Connection `key` is gone: its state, if it had one.
    pub fn take(&mut self, key: usize) -> Option<T> {
        self.states.get_mut(key)?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_kept_by_key_and_taken_once() {
        let mut table = SideTable::default();
        table.put(3, "c");
        assert_eq!(
            (table.get(3), table.get(1), table.get(99)),
            (Some(&"c"), None, None)
        );
        *table.get_mut(3).unwrap() = "d";
        assert_eq!(table.take(3), Some("d"));
        assert_eq!(table.take(3), None);
    }
}
