//! Connection state that grows by the connection: a slab made of fixed-size
//! chunks, so that memory follows the connections held instead of the next
//! power of two above them.
//!
//! The `slab` crate keeps one `Vec` that doubles (and copies every slot) as
//! it fills: 100K connections of 24 B sit in 196,608 slots, 47 B each. Here a
//! chunk of [`CHUNK_SLOTS`] slots is allocated when the others are full and
//! freed when its last connection leaves, and nothing ever moves: a slot's
//! address is stable while its connection lives. A chunk's `Vec` is reserved
//! whole but filled slot by slot, so its untouched tail costs no resident
//! memory. Keys are `chunk * CHUNK_SLOTS + slot`.
//!
//! Inserting fills the lowest chunk with a free slot first, so connections
//! gather in the low chunks and a high chunk empties out and is freed as
//! the count falls. One empty chunk is kept when no other has room, so a
//! count that goes back and forth across a chunk's edge does not allocate
//! and free it every time.

use std::collections::BTreeSet;

/// Slots in one chunk. 4,096 slots of 24 B are 96 KiB: one of jemalloc's
/// large size classes, so a chunk wastes nothing to rounding.
pub const CHUNK_SLOTS: usize = 4096;

enum Slot<T> {
    /// Free; the next free slot of this chunk (`CHUNK_SLOTS` ends the list,
    /// and so does the chunk's filled length).
    Vacant(u32),
    Occupied(T),
}

struct Chunk<T> {
    /// Reserved for `CHUNK_SLOTS` at creation and never grown past it, so it
    /// never reallocates.
    slots: Vec<Slot<T>>,
    /// Occupied slots.
    len: usize,
    /// The first free slot of the list, or `slots.len()` when the list is
    /// empty (the next insert then pushes).
    next_vacant: usize,
}

impl<T> Chunk<T> {
    fn new() -> Chunk<T> {
        Chunk {
            slots: Vec::with_capacity(CHUNK_SLOTS),
            len: 0,
            next_vacant: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == CHUNK_SLOTS
    }

    fn insert(&mut self, value: T) -> usize {
        let slot = self.next_vacant;
        if slot == self.slots.len() {
            debug_assert!(slot < CHUNK_SLOTS, "insert into a full chunk");
            self.slots.push(Slot::Occupied(value));
            self.next_vacant = self.slots.len();
        } else {
            let Slot::Vacant(next) =
                std::mem::replace(&mut self.slots[slot], Slot::Occupied(value))
            else {
                unreachable!("the free list points at an occupied slot");
            };
            self.next_vacant = next as usize;
        }
        self.len += 1;
        slot
    }

    fn remove(&mut self, slot: usize) -> Option<T> {
        let entry = self.slots.get_mut(slot)?;
        if matches!(entry, Slot::Vacant(_)) {
            return None;
        }
        let next = self.next_vacant as u32;
        let Slot::Occupied(value) = std::mem::replace(entry, Slot::Vacant(next)) else {
            unreachable!("checked occupied above");
        };
        self.next_vacant = slot;
        self.len -= 1;
        Some(value)
    }
}

/// A slab of `T` in fixed-size chunks: O(1) insert, remove and lookup by
/// key, stable slot addresses, iteration in key order.
pub struct ChunkedSlab<T> {
    /// `None` where a chunk was freed; its keys come back with the next
    /// chunk allocated.
    chunks: Vec<Option<Chunk<T>>>,
    /// Allocated chunks with a free slot, lowest first.
    with_room: BTreeSet<usize>,
    len: usize,
}

impl<T> Default for ChunkedSlab<T> {
    fn default() -> Self {
        ChunkedSlab::new()
    }
}

impl<T> ChunkedSlab<T> {
    pub fn new() -> ChunkedSlab<T> {
        ChunkedSlab {
            chunks: Vec::new(),
            with_room: BTreeSet::new(),
            len: 0,
        }
    }

    /// Bytes one slot takes, for the memory report.
    pub const fn slot_bytes() -> usize {
        std::mem::size_of::<Slot<T>>()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated: the chunks held × [`CHUNK_SLOTS`].
    pub fn capacity(&self) -> usize {
        self.chunk_count() * CHUNK_SLOTS
    }

    /// Chunks allocated now.
    pub fn chunk_count(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_some()).count()
    }

    /// One past the highest key any value may have now.
    pub fn key_bound(&self) -> usize {
        self.chunks.len() * CHUNK_SLOTS
    }

    /// The key the next [`ChunkedSlab::insert`] will return.
    pub fn vacant_key(&self) -> usize {
        match self.with_room.first() {
            Some(&index) => {
                let chunk = self.chunks[index]
                    .as_ref()
                    .expect("a chunk with room exists");
                index * CHUNK_SLOTS + chunk.next_vacant
            }
            None => self.index_for_new_chunk() * CHUNK_SLOTS,
        }
    }

    pub fn insert(&mut self, value: T) -> usize {
        let index = match self.with_room.first() {
            Some(&index) => index,
            None => self.allocate_chunk(),
        };
        let chunk = self.chunks[index]
            .as_mut()
            .expect("a chunk with room exists");
        let slot = chunk.insert(value);
        if chunk.is_full() {
            self.with_room.remove(&index);
        }
        self.len += 1;
        index * CHUNK_SLOTS + slot
    }

    pub fn get(&self, key: usize) -> Option<&T> {
        let chunk = self.chunks.get(key / CHUNK_SLOTS)?.as_ref()?;
        match chunk.slots.get(key % CHUNK_SLOTS)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        let chunk = self.chunks.get_mut(key / CHUNK_SLOTS)?.as_mut()?;
        match chunk.slots.get_mut(key % CHUNK_SLOTS)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    pub fn contains(&self, key: usize) -> bool {
        self.get(key).is_some()
    }

    /// Take the value out, if `key` holds one; frees its chunk when that
    /// was the chunk's last value and another chunk has room.
    pub fn try_remove(&mut self, key: usize) -> Option<T> {
        let index = key / CHUNK_SLOTS;
        let chunk = self.chunks.get_mut(index)?.as_mut()?;
        let was_full = chunk.is_full();
        let value = chunk.remove(key % CHUNK_SLOTS)?;
        let now_empty = chunk.len == 0;
        self.len -= 1;
        if was_full {
            self.with_room.insert(index);
        }
        if now_empty && self.with_room.len() > 1 {
            self.with_room.remove(&index);
            self.chunks[index] = None;
            while matches!(self.chunks.last(), Some(None)) {
                self.chunks.pop();
            }
        }
        Some(value)
    }

    /// The values with their keys, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(index, chunk)| Some((index, chunk.as_ref()?)))
            .flat_map(|(index, chunk)| {
                chunk
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(slot, entry)| match entry {
                        Slot::Occupied(value) => Some((index * CHUNK_SLOTS + slot, value)),
                        Slot::Vacant(_) => None,
                    })
            })
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.chunks
            .iter_mut()
            .enumerate()
            .filter_map(|(index, chunk)| Some((index, chunk.as_mut()?)))
            .flat_map(|(index, chunk)| {
                chunk
                    .slots
                    .iter_mut()
                    .enumerate()
                    .filter_map(move |(slot, entry)| match entry {
                        Slot::Occupied(value) => Some((index * CHUNK_SLOTS + slot, value)),
                        Slot::Vacant(_) => None,
                    })
            })
    }

    /// Take every value out, in key order, and free every chunk.
    pub fn drain(&mut self) -> impl Iterator<Item = T> {
        self.with_room.clear();
        self.len = 0;
        std::mem::take(&mut self.chunks)
            .into_iter()
            .flatten()
            .flat_map(|chunk| chunk.slots)
            .filter_map(|slot| match slot {
                Slot::Occupied(value) => Some(value),
                Slot::Vacant(_) => None,
            })
    }

    /// Where the next chunk goes: the lowest freed index, else a new one.
    fn index_for_new_chunk(&self) -> usize {
        self.chunks
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.chunks.len())
    }

    fn allocate_chunk(&mut self) -> usize {
        let index = self.index_for_new_chunk();
        if index == self.chunks.len() {
            self.chunks.push(None);
        }
        self.chunks[index] = Some(Chunk::new());
        self.with_room.insert(index);
        index
    }
}

impl<T> std::ops::Index<usize> for ChunkedSlab<T> {
    type Output = T;

    fn index(&self, key: usize) -> &T {
        self.get(key).expect("no value at this key")
    }
}

impl<T> std::ops::IndexMut<usize> for ChunkedSlab<T> {
    fn index_mut(&mut self, key: usize) -> &mut T {
        self.get_mut(key).expect("no value at this key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn keys_fill_one_chunk_before_the_next_and_vacant_key_predicts_them() {
        let mut slab = ChunkedSlab::new();
        for i in 0..CHUNK_SLOTS + 3 {
            let predicted = slab.vacant_key();
            assert_eq!(slab.insert(i), predicted);
            assert_eq!(predicted, i);
        }
        assert_eq!(slab.chunk_count(), 2);
        assert_eq!(slab.capacity(), 2 * CHUNK_SLOTS);
        assert_eq!(slab.len(), CHUNK_SLOTS + 3);
    }

    #[test]
    fn a_freed_slot_is_reused_and_lookups_miss_it_meanwhile() {
        let mut slab = ChunkedSlab::new();
        let keys: Vec<usize> = (0..10).map(|i| slab.insert(i)).collect();
        assert_eq!(slab.try_remove(keys[4]), Some(4));
        assert_eq!(slab.try_remove(keys[4]), None);
        assert!(slab.get(keys[4]).is_none());
        assert!(!slab.contains(keys[4]));
        assert_eq!(slab.vacant_key(), keys[4]);
        assert_eq!(slab.insert(99), keys[4]);
        assert_eq!(slab[keys[4]], 99);
        assert_eq!(slab.get(1_000_000), None);
    }

    #[test]
    fn an_emptied_chunk_is_freed_unless_it_is_the_only_one_with_room() {
        let mut slab = ChunkedSlab::new();
        let keys: Vec<usize> = (0..3 * CHUNK_SLOTS).map(|i| slab.insert(i)).collect();
        assert_eq!(slab.chunk_count(), 3);
        // Empty the middle chunk: while it has the only free slots it stays.
        for &key in &keys[CHUNK_SLOTS..2 * CHUNK_SLOTS] {
            slab.try_remove(key);
        }
        assert_eq!(slab.chunk_count(), 3, "the one chunk with room is kept");
        // A free slot in the first chunk: the next chunk to empty is freed.
        slab.try_remove(keys[0]);
        slab.try_remove(keys[2 * CHUNK_SLOTS]);
        for &key in &keys[2 * CHUNK_SLOTS + 1..] {
            slab.try_remove(key);
        }
        assert_eq!(slab.chunk_count(), 2, "the last chunk, emptied, is freed");
        assert_eq!(
            slab.key_bound(),
            2 * CHUNK_SLOTS,
            "trailing freed chunks trimmed"
        );
        // The lowest chunk with room fills first.
        assert_eq!(slab.insert(7), keys[0]);
        assert_eq!(slab.insert(8), CHUNK_SLOTS + CHUNK_SLOTS - 1);
    }

    #[test]
    fn a_freed_chunk_index_is_reused_before_a_new_one() {
        let mut slab = ChunkedSlab::new();
        let keys: Vec<usize> = (0..3 * CHUNK_SLOTS).map(|i| slab.insert(i)).collect();
        slab.try_remove(keys[2 * CHUNK_SLOTS]); // room in the last chunk
        for &key in &keys[..CHUNK_SLOTS] {
            slab.try_remove(key);
        }
        assert_eq!(slab.chunk_count(), 2, "the first chunk is freed");
        assert_eq!(slab.insert(0), 2 * CHUNK_SLOTS, "the chunk with room first");
        assert_eq!(slab.vacant_key(), 0, "then the freed index");
        assert_eq!(slab.insert(1), 0);
        assert_eq!(slab.chunk_count(), 3);
    }

    #[test]
    fn a_count_crossing_a_chunk_edge_does_not_reallocate_each_time() {
        let mut slab = ChunkedSlab::new();
        for i in 0..CHUNK_SLOTS {
            slab.insert(i);
        }
        for _ in 0..100 {
            let key = slab.insert(0);
            assert_eq!(slab.chunk_count(), 2);
            slab.try_remove(key);
            assert_eq!(slab.chunk_count(), 2, "the spare chunk is kept");
        }
    }

    #[test]
    fn slot_addresses_stay_put_while_the_slab_grows() {
        let mut slab = ChunkedSlab::new();
        let first = slab.insert(1u64);
        let address = &slab[first] as *const u64;
        for i in 0..10 * CHUNK_SLOTS as u64 {
            slab.insert(i);
        }
        assert_eq!(&slab[first] as *const u64, address);
    }

    /// Against a map as the model, through a seeded mix of inserts and
    /// removes that grows past several chunks and shrinks again.
    #[test]
    fn matches_a_map_through_random_inserts_and_removes() {
        let mut slab = ChunkedSlab::new();
        let mut model = BTreeMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..200_000u64 {
            let growing = (step / 50_000) % 2 == 0;
            let insert = next() % 100 < if growing { 70 } else { 30 };
            if insert || model.is_empty() {
                let predicted = slab.vacant_key();
                let key = slab.insert(step);
                assert_eq!(key, predicted);
                assert!(model.insert(key, step).is_none(), "key {key} given twice");
            } else {
                let nth = (next() as usize) % model.len();
                let key = *model.keys().nth(nth).unwrap();
                assert_eq!(slab.try_remove(key), model.remove(&key));
            }
            assert_eq!(slab.len(), model.len());
        }
        let listed: Vec<(usize, u64)> = slab.iter().map(|(k, v)| (k, *v)).collect();
        let expected: Vec<(usize, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(listed, expected);
        for (_, value) in slab.iter_mut() {
            *value += 1;
        }
        assert!(model.iter().all(|(k, v)| slab[*k] == v + 1));
        let occupied: std::collections::BTreeSet<usize> =
            model.keys().map(|key| key / CHUNK_SLOTS).collect();
        assert!(
            slab.chunk_count() <= occupied.len() + 1,
            "one empty chunk at most is kept"
        );
        assert!(slab.key_bound() > model.keys().last().copied().unwrap_or(0));
        let drained: Vec<u64> = slab.drain().collect();
        assert_eq!(drained, model.values().map(|v| v + 1).collect::<Vec<_>>());
        assert!(slab.is_empty());
        assert_eq!(slab.chunk_count(), 0);
        assert_eq!(slab.insert(5), 0);
    }

    #[test]
    fn removing_everything_leaves_one_chunk_at_most() {
        let mut slab = ChunkedSlab::new();
        let keys: Vec<usize> = (0..5 * CHUNK_SLOTS).map(|i| slab.insert(i)).collect();
        for key in keys.into_iter().rev() {
            slab.try_remove(key);
        }
        assert!(slab.is_empty());
        assert_eq!(slab.chunk_count(), 1);
        assert_eq!(slab.iter().count(), 0);
    }
}
