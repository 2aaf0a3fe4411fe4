//! A map from the ids a proxy hands out (context ids, call tokens) to values, for the lookup
//! every callback makes.
//!
//! Proxies number contexts and tokens from 1 up, so the ids alive at once are a few thousand
//! mostly consecutive numbers. Fibonacci hashing (one multiplication, one shift) spreads such
//! runs evenly over a power-of-two table, and linear probing then finds nearly every id in its
//! first slot: a lookup costs a handful of instructions, where a general-purpose hash map pays
//! for a hasher and group probing. Removal shifts the following entries back (no tombstones),
//! so a table that sees millions of ids over its life stays as short as the ids alive.
//!
//! ```
//! use proxy_async_executor::IdMap;
//!
//! let mut streams = IdMap::new();
//! streams.insert(2, "first stream");
//! streams.insert(3, "second stream");
//! assert_eq!(streams.get(3), Some(&"second stream"));
//! assert_eq!(streams.remove(2), Some("first stream"));
//! assert_eq!(streams.get(2), None);
//! assert_eq!(streams.len(), 1);
//! ```

/// A map from `u32` ids to `V`, fastest for ids handed out in increasing order.
pub struct IdMap<V> {
    slots: Vec<Option<(u32, V)>>,
    len: usize,
    // `32 - log2(slots.len())`: the hash's top bits index the table.
    shift: u32,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// 2^32 divided by the golden ratio, odd: multiplying by it spreads consecutive ids.
const FIBONACCI: u32 = 0x9E37_79B9;

impl<V> IdMap<V> {
    /// An empty map; it allocates at its first insert.
    pub const fn new() -> Self {
        IdMap {
            slots: Vec::new(),
            len: 0,
            shift: 32,
        }
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    #[inline]
    fn home(&self, id: u32) -> usize {
        // `shift` is 32 only while the table is empty: the shift then wraps to 0, and any
        // index it gives is past the empty table, where a probe ends at once.
        id.wrapping_mul(FIBONACCI).wrapping_shr(self.shift) as usize
    }

    /// The slot holding `id` and its value, if any: one probe, for `find` and `get`.
    #[inline]
    fn entry(&self, id: u32) -> Option<(usize, &V)> {
        let mask = self.mask();
        let mut index = self.home(id);
        // At most three quarters of the slots are full, so the probe meets an empty one.
        loop {
            match self.slots.get(index)? {
                Some((key, value)) if *key == id => return Some((index, value)),
                Some(_) => index = (index + 1) & mask,
                None => return None,
            }
        }
    }

    /// The slot holding `id`, if any.
    #[inline]
    fn find(&self, id: u32) -> Option<usize> {
        self.entry(id).map(|(index, _)| index)
    }

    /// The value of `id`.
    #[inline]
    pub fn get(&self, id: u32) -> Option<&V> {
        self.entry(id).map(|(_, value)| value)
    }

    /// The value of `id`, to change.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut V> {
        let index = self.find(id)?;
        self.slots.get_mut(index)?.as_mut().map(|(_, value)| value)
    }

    /// Whether `id` has a value.
    pub fn contains_key(&self, id: u32) -> bool {
        self.find(id).is_some()
    }

    /// Sets the value of `id`; the value it replaces, if any.
    pub fn insert(&mut self, id: u32, value: V) -> Option<V> {
        // One probe: to `id`'s slot, or to the free slot it goes in while the table has room.
        let mask = self.mask();
        let has_room = (self.len + 1) * 4 <= self.slots.len() * 3;
        let mut index = self.home(id);
        while let Some(slot) = self.slots.get_mut(index) {
            match slot {
                Some((key, old)) if *key == id => return Some(std::mem::replace(old, value)),
                Some(_) => index = (index + 1) & mask,
                None => {
                    if has_room {
                        *slot = Some((id, value));
                        self.len += 1;
                        return None;
                    }
                    break;
                }
            }
        }
        self.grow();
        self.place(id, value);
        self.len += 1;
        None
    }

    /// Puts an id known to be absent into the first free slot of its probe.
    fn place(&mut self, id: u32, value: V) {
        let mask = self.mask();
        let mut index = self.home(id);
        while let Some(Some(_)) = self.slots.get(index) {
            index = (index + 1) & mask;
        }
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Some((id, value));
        }
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(
            &mut self.slots,
            std::iter::repeat_with(|| None).take(capacity).collect(),
        );
        self.shift = 32 - capacity.trailing_zeros();
        for (id, value) in old.into_iter().flatten() {
            self.place(id, value);
        }
    }

    /// Removes `id`; its value, if it had one.
    pub fn remove(&mut self, id: u32) -> Option<V> {
        let mut hole = self.find(id)?;
        let (_, removed) = self.slots.get_mut(hole)?.take()?;
        self.len -= 1;
        // Shift back the entries after the hole that probed past it, so every entry stays
        // reachable from its home slot without tombstones.
        let mask = self.mask();
        let mut index = hole;
        loop {
            index = (index + 1) & mask;
            let home = match self.slots.get(index) {
                Some(Some((key, _))) => self.home(*key),
                _ => break,
            };
            // The entry at `index` may move to the hole unless its home lies cyclically in
            // (hole, index]: then the hole is not on its probe path.
            let stays = if hole <= index {
                hole < home && home <= index
            } else {
                hole < home || home <= index
            };
            if !stays {
                self.slots.swap(hole, index);
                hole = index;
            }
        }
        Some(removed)
    }

    /// The values, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().flatten().map(|(_, value)| value)
    }

    /// Empties the map, yielding its entries.
    pub fn drain(&mut self) -> impl Iterator<Item = (u32, V)> {
        self.len = 0;
        std::mem::take(&mut self.slots).into_iter().flatten()
    }
}

impl<V> std::fmt::Debug for IdMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdMap").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::IdMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u16),
        Remove(u32),
        Get(u32),
    }

    fn op(ids: impl Strategy<Value = u32> + Clone) -> impl Strategy<Value = Op> {
        prop_oneof![
            (ids.clone(), any::<u16>()).prop_map(|(id, value)| Op::Insert(id, value)),
            ids.clone().prop_map(Op::Remove),
            ids.prop_map(Op::Get),
        ]
    }

    fn check(ops: &[Op]) {
        let mut map = IdMap::new();
        let mut model = HashMap::new();
        for op in ops {
            match *op {
                Op::Insert(id, value) => assert_eq!(map.insert(id, value), model.insert(id, value)),
                Op::Remove(id) => assert_eq!(map.remove(id), model.remove(&id)),
                Op::Get(id) => assert_eq!(map.get(id), model.get(&id)),
            }
            assert_eq!(map.len(), model.len());
        }
        for (id, value) in &model {
            assert_eq!(map.get(*id), Some(value), "id {id} lost");
        }
        let mut values: Vec<u16> = map.values().copied().collect();
        let mut expected: Vec<u16> = model.values().copied().collect();
        values.sort_unstable();
        expected.sort_unstable();
        assert_eq!(values, expected);
    }

    proptest! {
        // Under Miri: a few cases, and no regression file (Miri's isolation has no file
        // system).
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: if cfg!(miri) {
                None
            } else {
                ProptestConfig::default().failure_persistence
            },
            ..ProptestConfig::default()
        })]

        // Few distinct ids: many collisions, removals in the middle of probe runs.
        #[test]
        fn behaves_as_a_hash_map_on_a_few_ids(ops in proptest::collection::vec(op(0u32..40), 0..300)) {
            check(&ops);
        }

        // Any ids, the extremes included.
        #[test]
        fn behaves_as_a_hash_map_on_any_ids(ops in proptest::collection::vec(op(any::<u32>()), 0..200)) {
            check(&ops);
        }
    }

    #[test]
    fn a_long_run_of_streams_keeps_the_table_as_small_as_the_live_ones() {
        let mut map = IdMap::new();
        // Ten streams alive at a time, a million over the map's life (fewer under Miri).
        let last = if cfg!(miri) { 2_000 } else { 1_000_000u32 };
        for id in 1..=last {
            map.insert(id, id);
            if id > 10 {
                assert_eq!(map.remove(id - 10), Some(id - 10));
            }
        }
        assert_eq!(map.len(), 10);
        assert!(map.slots.len() <= 16, "{} slots", map.slots.len());
        assert_eq!(map.drain().count(), 10);
        assert!(map.is_empty());
    }
}
