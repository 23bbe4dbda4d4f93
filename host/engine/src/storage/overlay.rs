//! An overlay: writes held in memory, in key order, ahead of a store that
//! commits them later in one batch.
//!
//! The file backend answers non-durable writes (session-cache puts and
//! deletes) here instead of with a redb transaction each, and commits the
//! whole overlay at the next flush. Reads consult the overlay first: a value
//! written here is returned, a key deleted here (a tombstone) reads as
//! absent, and anything else falls through to the store. [`Overlay::scan`]
//! merges the overlay's range with the store's so that `scan` keeps its
//! contract: keys in ascending order, each once, tombstones hidden.
//!
//! This module knows nothing of redb or of durability: it is the ordered
//! map and the merge, kept apart so that both are tested on their own.
//!
//! # Security
//!
//! Holds values (sealed, in the daemon) until they are committed; dropped
//! without zeroizing, like redb's own page cache.
//!
//! # Limitations
//!
//! Bounded only by its user: [`Overlay::bytes`] says how much it holds, and
//! the file backend commits before it grows past its limit.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::Entry;

/// What the overlay knows of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known<'a> {
    /// Written here with this value.
    Value(&'a [u8]),
    /// Deleted here.
    Deleted,
    /// Not touched here: ask the store.
    Unknown,
}

/// Pending writes per table: a value, or `None` for a delete.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Writes not yet committed, by table and key.
#[derive(Default, Clone)]
pub struct Overlay {
    tables: BTreeMap<String, Writes>,
    /// Keys and values held, for the owner's limit.
    bytes: usize,
    /// Deletes held, for the owner's limit: each is a key a scan of the
    /// store must step over.
    deletes: usize,
}

impl Overlay {
    /// What the overlay holds for `key`.
    pub fn get(&self, table: &str, key: &[u8]) -> Known<'_> {
        match self.tables.get(table).and_then(|t| t.get(key)) {
            Some(Some(value)) => Known::Value(value),
            Some(None) => Known::Deleted,
            None => Known::Unknown,
        }
    }

    /// Hold `value` under `key`, replacing what the overlay held.
    pub fn put(&mut self, table: &str, key: &[u8], value: &[u8]) {
        self.set(table, key, Some(value.to_vec()));
    }

    /// Hold a delete of `key`.
    pub fn delete(&mut self, table: &str, key: &[u8]) {
        self.set(table, key, None);
    }

    fn set(&mut self, table: &str, key: &[u8], write: Option<Vec<u8>>) {
        let added = key.len() + write.as_ref().map_or(0, Vec::len);
        // `entry` with an owned key would allocate the table name on every
        // write; look it up first.
        let writes = match self.tables.get_mut(table) {
            Some(writes) => writes,
            None => self.tables.entry(table.to_owned()).or_default(),
        };
        let deleting = write.is_none();
        if let Some(old) = writes.insert(key.to_vec(), write) {
            self.bytes -= key.len() + old.as_ref().map_or(0, Vec::len);
            self.deletes -= usize::from(old.is_none());
        }
        self.bytes += added;
        self.deletes += usize::from(deleting);
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Deletes held. A scan walks the store past every key deleted here
    /// (a sweep deletes from the front of the range it scans next), so
    /// their number bounds a scan's wasted work.
    pub fn deletes(&self) -> usize {
        self.deletes
    }

    /// Every held write, table by table in key order, for a commit.
    pub fn tables(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = (&[u8], Option<&[u8]>)>)> {
        self.tables
            .iter()
            .map(|(name, writes)| (name.as_str(), writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))))
    }

    /// Forget everything held (after a commit).
    pub fn clear(&mut self) {
        self.tables.clear();
        self.bytes = 0;
        self.deletes = 0;
    }

    /// Up to `limit` entries of `table` strictly after `after`, in key
    /// order: `store`'s entries over the same range (ascending, as the store
    /// scans them) with the overlay's writes applied. `store` is read only
    /// as far as needed.
    ///
    /// # Errors
    ///
    /// The first error `store` yields.
    pub fn scan<E>(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
        store: impl Iterator<Item = Result<Entry, E>>,
    ) -> Result<Vec<Entry>, E> {
        self.merge(table, after, store).take(limit).collect()
    }

    /// The entries of `table` strictly after `after`, lazily: `store`'s
    /// (ascending over the same range) with the overlay's writes applied,
    /// ending at `store`'s first error. Overlays stack: the merge of one is
    /// the `store` of the next, newest outermost.
    pub fn merge<'a, E, I>(
        &'a self,
        table: &str,
        after: Option<&[u8]>,
        store: I,
    ) -> impl Iterator<Item = Result<Entry, E>> + use<'a, E, I>
    where
        I: Iterator<Item = Result<Entry, E>>,
    {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        // The range is taken now, so the iterator does not borrow `after`.
        let mut held = self
            .tables
            .get(table)
            .map(|t| t.range::<[u8], _>((lower, Bound::Unbounded)))
            .into_iter()
            .flatten()
            .peekable();
        let mut store = store.fuse();
        // The store's next entry, read ahead to compare with the overlay's.
        let mut stored: Option<Entry> = None;
        let mut failed = false;
        std::iter::from_fn(move || {
            loop {
                if failed {
                    return None;
                }
                if stored.is_none() {
                    match store.next() {
                        Some(Ok(entry)) => stored = Some(entry),
                        Some(Err(e)) => {
                            failed = true;
                            return Some(Err(e));
                        }
                        None => {}
                    }
                }
                let held_first = match (held.peek(), &stored) {
                    (None, None) => return None,
                    (None, Some(_)) => false,
                    (Some(_), None) => true,
                    (Some((key, _)), Some((stored_key, _))) => key.as_slice() <= stored_key.as_slice(),
                };
                if !held_first {
                    // The store's key comes first: it stands.
                    return stored.take().map(Ok);
                }
                // `held_first` is only true when `peek` found an entry.
                let (key, write) = held.next()?;
                if stored.as_ref().is_some_and(|(stored_key, _)| stored_key == key) {
                    // The same key: the overlay's write replaces the store's.
                    stored = None;
                }
                if let Some(value) = write {
                    return Some(Ok((key.clone(), value.clone())));
                }
                // A tombstone hides the key; look further.
            }
        })
    }

    /// Take back the writes of `older`, an overlay that was to be committed
    /// before this one and was not: each key this overlay has not written
    /// since gets `older`'s write again.
    pub fn absorb_under(&mut self, older: Overlay) {
        for (table, writes) in older.tables {
            for (key, write) in writes {
                let newer = self.tables.get(&table).is_some_and(|t| t.contains_key(&key));
                if !newer {
                    self.set(&table, &key, write);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn stored(keys: &[&[u8]]) -> Vec<Entry> {
        keys.iter().map(|k| (k.to_vec(), [b"s:", *k].concat())).collect()
    }

    fn scan(o: &Overlay, store: &[Entry], after: Option<&[u8]>, limit: usize) -> Vec<Entry> {
        let from = store.iter().filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a)).cloned().map(Ok);
        o.scan::<Infallible>("t", after, limit, from).unwrap()
    }

    #[test]
    fn reads_see_values_tombstones_and_fall_through() {
        let mut o = Overlay::default();
        assert_eq!(o.get("t", b"a"), Known::Unknown);
        o.put("t", b"a", b"1");
        o.delete("t", b"b");
        assert_eq!(o.get("t", b"a"), Known::Value(b"1"));
        assert_eq!(o.get("t", b"b"), Known::Deleted);
        assert_eq!(o.get("other", b"a"), Known::Unknown);
        o.put("t", b"b", b"22");
        assert_eq!(o.get("t", b"b"), Known::Value(b"22"));
    }

    #[test]
    fn bytes_follow_replacements_and_clear() {
        let mut o = Overlay::default();
        o.put("t", b"key", b"12345");
        assert_eq!(o.bytes(), 8);
        o.put("t", b"key", b"1");
        assert_eq!(o.bytes(), 4);
        o.delete("t", b"key");
        assert_eq!(o.bytes(), 3);
        assert_eq!(o.deletes(), 1);
        o.delete("t", b"key");
        assert_eq!(o.deletes(), 1);
        o.put("u", b"k", b"v");
        assert_eq!(o.bytes(), 5);
        o.put("t", b"key", b"back");
        assert_eq!(o.deletes(), 0);
        o.delete("t", b"gone");
        o.clear();
        assert!(o.is_empty());
        assert_eq!((o.bytes(), o.deletes()), (0, 0));
    }

    #[test]
    fn scan_merges_in_order_with_the_overlay_winning() {
        let store = stored(&[b"a", b"c", b"e", b"g"]);
        let mut o = Overlay::default();
        o.put("t", b"b", b"new b");
        o.put("t", b"c", b"new c");
        o.delete("t", b"e");
        o.delete("t", b"f"); // a tombstone for a key the store lacks
        o.put("t", b"h", b"new h");
        o.put("other", b"d", b"elsewhere");
        let all = scan(&o, &store, None, 100);
        let expected: Vec<Entry> = vec![
            (b"a".to_vec(), b"s:a".to_vec()),
            (b"b".to_vec(), b"new b".to_vec()),
            (b"c".to_vec(), b"new c".to_vec()),
            (b"g".to_vec(), b"s:g".to_vec()),
            (b"h".to_vec(), b"new h".to_vec()),
        ];
        assert_eq!(all, expected);
        // Paged, with an exclusive lower bound, it is the same sequence.
        let mut paged: Vec<Entry> = Vec::new();
        loop {
            let page = scan(&o, &store, paged.last().map(|(k, _)| k.as_slice()), 2);
            assert!(page.len() <= 2);
            if page.is_empty() {
                break;
            }
            paged.extend(page);
        }
        assert_eq!(paged, expected);
    }

    #[test]
    fn tombstones_do_not_use_up_the_limit() {
        let store = stored(&[b"a", b"b", b"c", b"d"]);
        let mut o = Overlay::default();
        for k in [b"a", b"b", b"c"] {
            o.delete("t", k);
        }
        assert_eq!(scan(&o, &store, None, 1), vec![(b"d".to_vec(), b"s:d".to_vec())]);
    }

    #[test]
    fn scan_reads_the_store_lazily_and_passes_its_errors_on() {
        let o = Overlay::default();
        let mut pulled = 0;
        let store = (0u8..).map(|i| {
            pulled += 1;
            Ok::<_, Infallible>((vec![i], vec![]))
        });
        assert_eq!(o.scan("t", None, 3, store).unwrap().len(), 3);
        assert!(pulled <= 4, "pulled {pulled}");
        let failing = [Ok((b"a".to_vec(), vec![])), Err("disk")].into_iter();
        assert_eq!(o.scan("t", None, 5, failing), Err("disk"));
    }

    #[test]
    fn absorb_under_keeps_the_newer_writes() {
        let mut older = Overlay::default();
        older.put("t", b"a", b"old a");
        older.delete("t", b"b");
        older.put("t", b"c", b"old c");
        older.put("u", b"x", b"old x");
        let mut newer = Overlay::default();
        newer.put("t", b"a", b"new a");
        newer.delete("t", b"c");
        newer.absorb_under(older);
        assert_eq!(newer.get("t", b"a"), Known::Value(b"new a"));
        assert_eq!(newer.get("t", b"b"), Known::Deleted);
        assert_eq!(newer.get("t", b"c"), Known::Deleted);
        assert_eq!(newer.get("u", b"x"), Known::Value(b"old x"));
        // The counters are those of the merged writes.
        assert_eq!(newer.deletes(), 2);
        assert_eq!(newer.bytes(), 1 + 5 + 1 + 1 + 1 + 5);
    }

    /// Two stacked overlays (an older one being committed, a newer one
    /// taking writes meanwhile) agree with applying both, in order, to a
    /// map; and absorbing the older under the newer gives the same view.
    #[test]
    fn stacked_overlays_match_a_model() {
        use proptest::prelude::*;
        let key = || proptest::collection::vec(0u8..6, 0..3);
        let writes = || proptest::collection::vec((key(), proptest::option::of(key())), 0..16);
        let store = proptest::collection::btree_map(key(), key(), 0..16);
        proptest!(|(store in store, old in writes(), new in writes(), after in proptest::option::of(key()), limit in 0usize..8)| {
            let mut model = store.clone();
            let mut apply = |writes: &[(Vec<u8>, Option<Vec<u8>>)]| {
                let mut o = Overlay::default();
                for (k, w) in writes {
                    match w {
                        Some(v) => { o.put("t", k, v); model.insert(k.clone(), v.clone()); }
                        None => { o.delete("t", k); model.remove(k); }
                    }
                }
                o
            };
            let older = apply(&old);
            let mut newer = apply(&new);
            let want: Vec<Entry> = model
                .into_iter()
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
                .take(limit)
                .collect();
            let entries: Vec<Entry> = store.into_iter().collect();
            let from = || entries.iter().filter(|(k, _)| after.as_ref().is_none_or(|a| k > a)).cloned().map(Ok::<_, Infallible>);
            let got = newer.scan("t", after.as_deref(), limit, older.merge("t", after.as_deref(), from())).unwrap();
            prop_assert_eq!(&got, &want);
            newer.absorb_under(older);
            prop_assert_eq!(&newer.scan("t", after.as_deref(), limit, from()).unwrap(), &want);
        });
    }

    /// The merge agrees with applying the overlay to a map, for random
    /// stores, overlays, bounds and limits.
    #[test]
    fn scan_matches_a_model() {
        use proptest::prelude::*;
        let key = || proptest::collection::vec(0u8..6, 0..3);
        let writes = proptest::collection::vec((key(), proptest::option::of(key())), 0..20);
        let store = proptest::collection::btree_map(key(), key(), 0..20);
        proptest!(|(store in store, writes in writes, after in proptest::option::of(key()), limit in 0usize..8)| {
            let mut o = Overlay::default();
            let mut model = store.clone();
            for (k, w) in &writes {
                match w {
                    Some(v) => { o.put("t", k, v); model.insert(k.clone(), v.clone()); }
                    None => { o.delete("t", k); model.remove(k); }
                }
            }
            let entries: Vec<Entry> = store.into_iter().collect();
            let got = scan(&o, &entries, after.as_deref(), limit);
            let want: Vec<Entry> = model
                .into_iter()
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
                .take(limit)
                .collect();
            prop_assert_eq!(got, want);
        });
    }
}
