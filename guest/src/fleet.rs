//! Ticket keys shared by a fleet: one key per time slot, agreed through the
//! store that the fleet's cores share.
//!
//! Time is cut into slots of `half = T / 2` seconds (T the ticket cache's
//! timeout), slot `n` being `[n·half, (n+1)·half)`. Each slot has exactly one
//! key in the whole fleet:
//!
//! - it is **agreed** with `storage.put-if-absent` on the slot's record in
//!   the `tktslot` table: the first core to write wins, and every other core
//!   gets the winner's record back and adopts it. Cores that rotate in the
//!   same second still end with one key, without a lock or a leader;
//! - it is **published**, decrypt-only, by housekeeping at
//!   `start(n) − margin`, so every core can already open tickets under it
//!   when a core whose clock runs ahead begins to seal with it;
//! - it **encrypts** during slot `n` by each core's own clock (a Postfix
//!   process that fetched a published key by name to open a ticket may
//!   seal with it a little earlier: it keeps the key that expires last; the
//!   key opens everywhere by then);
//! - it **decrypts** from `start(n) − margin` until `start(n+2) + margin`:
//!   half a period after it stops encrypting, as in Postfix, widened by the
//!   margin on both sides for clocks that are behind or ahead.
//!
//! With clocks within `margin` of each other, a ticket sealed by any core
//! opens on every core for at least [`tickets::guaranteed_lifetime_secs`],
//! and two cores seal with different keys only within `margin` of a slot
//! boundary: the announced overlap.
//!
//! Each core keeps the keys it has seen in memory, so a ticket whose key it
//! knows never costs a storage read. An unknown name makes it re-read the
//! live slots, at most once per [`REFRESH_NANOS`]: a key another core agreed
//! a moment ago is found, and a stream of forged names costs one read a
//! second rather than one per handshake.
//!
//! A slot whose key cannot be agreed (the store unreachable when the slot
//! begins, and no key published before) is a slot without tickets: sealing
//! fails and clients fall back to session ids or full handshakes, rather
//! than get a ticket other cores cannot open. Housekeeping agrees the key as
//! soon as the store answers again.
//!
//! Every [`VERIFY_SECS`], housekeeping re-asserts every agreed key that
//! still opens with put-if-absent. If the store has lost them (a
//! Redis restarted empty), they are written back, so that cores starting
//! afterwards adopt them instead of minting rivals; if the store holds
//! another key for the slot (one a core minted in that gap), this core seals
//! with the store's key from then on and keeps its own for opening until its
//! window ends.
//!
//! Alternatives, rejected: a leader that mints keys and hands them out
//! (needs an election, and a fleet without its leader stops rotating); one
//! "current key" record changed by compare-and-swap (leaves open who rotates
//! when, and a lost race means a key some cores already sealed with is gone).
//! Fixed slots make every rotation a write to a fresh record, which
//! put-if-absent settles.
//!
//! # Security
//!
//! Holds the fleet's ticket keys ([`TicketKey`]: no key bytes in `Debug`,
//! zeroized on drop, names compared in constant time). Key material comes
//! only from the core's DRBG. Records read from the store are untrusted: one
//! in a format this core does not know is never used and never overwritten
//! (another core may be reading it); a slot whose record is unusable has no
//! tickets.
//!
//! # Limitations
//!
//! - Every core of a fleet must use the same T: T/2 is part of a record's
//!   key, so a core configured otherwise agrees keys with nobody.
//! - The guarantee holds for clocks within `margin`; a core whose clock is
//!   further off seals under keys the others do not accept yet, or any more.
//! - After the store loses its records, cores may seal with different keys
//!   for up to [`VERIFY_SECS`], until each re-asserts or adopts.

use alloc::format;
use alloc::vec::Vec;

use zeroize::{Zeroize, Zeroizing};

use crate::caps::{Capabilities, Level};
use crate::error::{Error, Result};
use crate::prng::Prng;
use crate::tickets::{HexName, NAME_LEN, SECRET_LEN, TicketKey, names_equal, secs};

/// The storage table of the fleet's keys, one record per slot.
pub const TABLE: &str = "tktslot";
/// Format version of stored records.
const RECORD_VERSION: u8 = 1;
/// Record: version ‖ name ‖ AES key ‖ HMAC key.
const RECORD_LEN: usize = 1 + NAME_LEN + 2 * SECRET_LEN;
/// Record key: half (u32 BE) ‖ slot (u64 BE).
const RECORD_KEY_LEN: usize = 4 + 8;
/// Records read per page while loading.
const LOAD_PAGE: u32 = 64;
/// Least time between two re-reads of the live slots for unknown names.
pub const REFRESH_NANOS: u64 = 1_000_000_000;
/// Seconds between two re-assertions of the agreed keys.
pub const VERIFY_SECS: i64 = 5;

/// A key this core has seen, with the slot it belongs to.
struct Seen {
    slot: i64,
    key: TicketKey,
    /// The key the store holds for its slot, as last read: the one to seal
    /// with. False for a key the store replaced, kept only to open.
    agreed: bool,
}

/// The slot arithmetic for one `half` and `margin`.
#[derive(Clone, Copy)]
struct Slots {
    half: i64,
    margin: i64,
}

impl Slots {
    fn at(self, now: i64) -> i64 {
        now.div_euclid(self.half)
    }

    fn start(self, slot: i64) -> i64 {
        slot.saturating_mul(self.half)
    }

    fn published(self, slot: i64) -> i64 {
        self.start(slot) - self.margin
    }

    /// First second at which the slot's key no longer decrypts.
    fn end(self, slot: i64) -> i64 {
        self.start(slot.saturating_add(2)).saturating_add(self.margin)
    }

    fn decrypts(self, slot: i64, now: i64) -> bool {
        self.published(slot) <= now && now < self.end(slot)
    }

    /// Every slot whose key decrypts at `now`, oldest first.
    fn live(self, now: i64) -> impl Iterator<Item = i64> {
        let slot = self.at(now);
        (slot.saturating_sub(2)..=slot.saturating_add(1)).filter(move |&s| self.decrypts(s, now))
    }

    fn record_key(self, slot: i64) -> [u8; RECORD_KEY_LEN] {
        let mut k = [0u8; RECORD_KEY_LEN];
        k[..4].copy_from_slice(&u32::try_from(self.half).unwrap_or(u32::MAX).to_be_bytes());
        k[4..].copy_from_slice(&u64::try_from(slot).unwrap_or(0).to_be_bytes());
        k
    }
}

/// Half and slot of a record key.
fn parse_record_key(k: &[u8]) -> Option<(i64, i64)> {
    let k: &[u8; RECORD_KEY_LEN] = k.try_into().ok()?;
    let half = u32::from_be_bytes(k[..4].try_into().ok()?);
    let slot = u64::from_be_bytes(k[4..].try_into().ok()?);
    Some((i64::from(half), i64::try_from(slot).ok()?))
}

fn to_record(key: &TicketKey) -> Zeroizing<[u8; RECORD_LEN]> {
    let mut r = Zeroizing::new([0u8; RECORD_LEN]);
    r[0] = RECORD_VERSION;
    r[1..1 + NAME_LEN].copy_from_slice(&key.name);
    r[1 + NAME_LEN..1 + NAME_LEN + SECRET_LEN].copy_from_slice(&key.cipher_key);
    r[1 + NAME_LEN + SECRET_LEN..].copy_from_slice(&key.hmac_key);
    r
}

/// The key a record holds, encrypting until `expires`; the record is wiped.
fn from_record(mut record: Vec<u8>, expires: i64) -> Option<TicketKey> {
    let key = (record.len() == RECORD_LEN && record[0] == RECORD_VERSION).then(|| {
        let mut key =
            TicketKey { name: [0; NAME_LEN], cipher_key: [0; SECRET_LEN], hmac_key: [0; SECRET_LEN], expires };
        key.name.copy_from_slice(&record[1..1 + NAME_LEN]);
        key.cipher_key.copy_from_slice(&record[1 + NAME_LEN..1 + NAME_LEN + SECRET_LEN]);
        key.hmac_key.copy_from_slice(&record[1 + NAME_LEN + SECRET_LEN..]);
        key
    });
    record.zeroize();
    key
}

/// The fleet's keys as this core knows them.
pub struct FleetRing {
    margin: i64,
    /// The half the seen keys belong to; a new T starts over.
    half: i64,
    seen: Vec<Seen>,
    loaded: bool,
    refreshed_at: Option<u64>,
    verified_at: Option<i64>,
    /// Slots below this one have had their records erased.
    erased_below: i64,
    minted: u64,
}

impl FleetRing {
    /// A ring with no keys yet; it loads the store's on first use.
    pub fn new(margin_secs: u32) -> Self {
        FleetRing {
            margin: i64::from(margin_secs),
            half: 0,
            seen: Vec::new(),
            loaded: false,
            refreshed_at: None,
            verified_at: None,
            erased_below: 0,
            minted: 0,
        }
    }

    /// Change the margin; the keys seen are kept.
    pub fn set_margin(&mut self, margin_secs: u32) {
        self.margin = i64::from(margin_secs);
    }

    /// The margin, in seconds.
    pub fn margin_secs(&self) -> u32 {
        u32::try_from(self.margin).unwrap_or(u32::MAX)
    }

    /// Keys this core minted (won a slot with) since it started.
    pub fn minted(&self) -> u64 {
        self.minted
    }

    fn slots(&self) -> Slots {
        Slots { half: self.half, margin: self.margin }
    }

    /// The key to seal with at `now`: the current slot's, agreed now if no
    /// key for it is known yet.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the slot's key cannot be agreed: no ticket is
    /// sealed under a key the fleet has not agreed on.
    pub fn encrypt_key(
        &mut self,
        caps: &mut impl Capabilities,
        prng: &mut Prng,
        now_nanos: u64,
        half: i64,
    ) -> Result<TicketKey> {
        let now = secs(now_nanos);
        self.sync(caps, now, half)?;
        let slot = self.slots().at(now);
        match self.agreed(slot) {
            Some(key) => Ok(key.clone()),
            None => self.agree(caps, prng, now_nanos, slot),
        }
    }

    /// The key named `name` if it decrypts at `now`; the live slots are
    /// re-read (at most once per [`REFRESH_NANOS`]) when the name is unknown.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the store cannot be read.
    pub fn decrypt_key(
        &mut self,
        caps: &mut impl Capabilities,
        now_nanos: u64,
        name: &[u8; NAME_LEN],
        half: i64,
    ) -> Result<Option<TicketKey>> {
        let now = secs(now_nanos);
        self.sync(caps, now, half)?;
        if let Some(key) = self.find(name, now) {
            return Ok(Some(key));
        }
        // A clock stepped back (below the last refresh) makes it due, rather
        // than wait for the clock to catch up.
        if self.refreshed_at.is_some_and(|t| t <= now_nanos && now_nanos < t.saturating_add(REFRESH_NANOS)) {
            return Ok(None);
        }
        self.refreshed_at = Some(now_nanos);
        let slots = self.slots();
        for slot in slots.live(now) {
            if let Some(record) = caps.get(TABLE, &slots.record_key(slot))? {
                // A record this core cannot read is reported when it tries
                // to seal with it; here it only means the name is unknown.
                let _ = self.adopt(caps, slot, record);
            }
        }
        Ok(self.find(name, now))
    }

    /// Housekeeping: forget keys past their window (erasing their records
    /// once no clock within the margin can still use them), agree the
    /// current slot's key and publish the next one when its time has come,
    /// and re-assert both every [`VERIFY_SECS`]. Returns when it wants to
    /// run again, in seconds since the epoch.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`]; what was done before the failure stands, and the
    /// rest is retried on the next call.
    pub fn maintain(
        &mut self,
        caps: &mut impl Capabilities,
        prng: &mut Prng,
        now_nanos: u64,
        half: i64,
    ) -> Result<i64> {
        let now = secs(now_nanos);
        self.sync(caps, now, half)?;
        let slots = self.slots();
        // Keys are forgotten at the end of their window; their records stay
        // one margin longer, for cores whose clocks are behind ours.
        self.seen.retain(|s| slots.decrypts(s.slot, now)); // zeroized on drop
        let slot = slots.at(now);
        for dead in self.erased_below.max(slot.saturating_sub(4))..slot.saturating_sub(1) {
            if slots.end(dead).saturating_add(slots.margin) > now {
                break;
            }
            caps.delete(TABLE, &slots.record_key(dead))?;
            self.erased_below = dead + 1;
        }

        let next_published = now >= slots.published(slot + 1);
        // Due as well when the clock stepped back below the last one.
        let verify = self.verified_at.is_none_or(|t| now < t || now >= t.saturating_add(VERIFY_SECS));
        for s in [slot, slot + 1] {
            if (s != slot + 1 || next_published) && self.agreed(s).is_none() {
                self.agree(caps, prng, now_nanos, s)?;
            }
        }
        if verify {
            // Every key that still opens, not only the sealing ones: a node
            // started after the store lost them must open their tickets too.
            let live: Vec<(i64, Zeroizing<[u8; RECORD_LEN]>)> =
                self.seen.iter().filter(|s| s.agreed).map(|s| (s.slot, to_record(&s.key))).collect();
            for (s, record) in live {
                self.reassert(caps, s, record.as_ref())?;
            }
            self.verified_at = Some(now);
        }

        let mut wake = if next_published { slots.start(slot + 1) } else { slots.published(slot + 1) };
        wake = wake.min(self.verified_at.unwrap_or(now).saturating_add(VERIFY_SECS));
        if let Some(end) = self.seen.iter().map(|s| slots.end(s.slot)).min() {
            wake = wake.min(end);
        }
        Ok(wake.max(now + 1))
    }

    /// Start over when T changed; load the store's live keys once.
    fn sync(&mut self, caps: &mut impl Capabilities, now: i64, half: i64) -> Result<()> {
        if half != self.half {
            self.half = half;
            self.seen.clear();
            self.loaded = false;
            self.refreshed_at = None;
            self.verified_at = None;
            self.erased_below = 0;
        }
        if self.loaded {
            return Ok(());
        }
        let slots = self.slots();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = caps.scan(TABLE, after.as_deref(), LOAD_PAGE)?;
            let full = page.len() == LOAD_PAGE as usize;
            for (k, record) in page {
                match parse_record_key(&k) {
                    Some((h, slot)) if h == half && slots.decrypts(slot, now) => {
                        let _ = self.adopt(caps, slot, record);
                    }
                    // Dead under its own T (ours or another's), for clocks
                    // one margin behind too: nobody can use it any more.
                    Some((h, slot))
                        if h > 0
                            && Slots { half: h, margin: slots.margin }.end(slot).saturating_add(slots.margin)
                                <= now =>
                    {
                        caps.delete(TABLE, &k)?;
                    }
                    Some(_) => {}
                    None => {
                        caps.log(Level::Warn, "malformed fleet ticket key record removed");
                        caps.delete(TABLE, &k)?;
                    }
                }
                after = Some(k);
            }
            if !full {
                break;
            }
        }
        self.loaded = true;
        Ok(())
    }

    /// The key the store holds for `slot`, as far as this core knows.
    fn agreed(&self, slot: i64) -> Option<&TicketKey> {
        self.seen.iter().find(|s| s.slot == slot && s.agreed).map(|s| &s.key)
    }

    fn find(&self, name: &[u8; NAME_LEN], now: i64) -> Option<TicketKey> {
        let slots = self.slots();
        self.seen.iter().find(|s| names_equal(&s.key.name, name) && slots.decrypts(s.slot, now)).map(|s| s.key.clone())
    }

    /// Mint a key for `slot` and offer it to the store; the store's answer
    /// is the slot's key, ours or the one another core wrote first.
    fn agree(&mut self, caps: &mut impl Capabilities, prng: &mut Prng, now_nanos: u64, slot: i64) -> Result<TicketKey> {
        let slots = self.slots();
        let mut key = TicketKey {
            name: [0; NAME_LEN],
            cipher_key: [0; SECRET_LEN],
            hmac_key: [0; SECRET_LEN],
            expires: slots.start(slot + 1),
        };
        prng.fill(caps, now_nanos, &mut key.name)?;
        prng.fill(caps, now_nanos, &mut key.cipher_key)?;
        prng.fill(caps, now_nanos, &mut key.hmac_key)?;
        match caps.put_if_absent(TABLE, &slots.record_key(slot), to_record(&key).as_ref())? {
            None => {
                self.minted += 1;
                caps.log(
                    Level::Info,
                    &format!(
                        "new fleet session ticket key {:?} seals from {} until {}, opens until {}",
                        HexName(&key.name),
                        slots.start(slot),
                        slots.start(slot + 1),
                        slots.end(slot)
                    ),
                );
                self.install(slot, key.clone());
                Ok(key)
            }
            Some(theirs) => self.adopt(caps, slot, theirs),
        }
    }

    /// Offer our key for `slot` again: written back if the store lost it,
    /// replaced by the store's if it holds another.
    fn reassert(&mut self, caps: &mut impl Capabilities, slot: i64, record: &[u8]) -> Result<()> {
        let slots = self.slots();
        match caps.put_if_absent(TABLE, &slots.record_key(slot), record)? {
            None => caps.log(
                Level::Warn,
                &format!(
                    "the fleet's ticket key for the slot from {} was missing from the store (was it emptied?); \
                     written back",
                    slots.start(slot)
                ),
            ),
            Some(theirs) => {
                let ours = self.agreed(slot).map(|k| k.name);
                let key = self.adopt(caps, slot, theirs)?;
                if ours.is_some_and(|n| !names_equal(&n, &key.name)) {
                    caps.log(
                        Level::Warn,
                        &format!(
                            "the store holds another fleet ticket key ({:?}) for the slot from {} than this core \
                             sealed with; sealing with the store's from now on",
                            HexName(&key.name),
                            slots.start(slot)
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Make the store's `record` the key of `slot`.
    fn adopt(&mut self, caps: &mut impl Capabilities, slot: i64, record: Vec<u8>) -> Result<TicketKey> {
        let expires = self.slots().start(slot + 1);
        let Some(key) = from_record(record, expires) else {
            caps.log(Level::Warn, "fleet ticket key record in an unknown format: that slot has no tickets");
            return Err(Error::Storage(format!(
                "the fleet's ticket key record for the slot from {} is in a format this core does not know \
                 (a newer tlskeeper on the same store?)",
                self.slots().start(slot)
            )));
        };
        self.install(slot, key.clone());
        Ok(key)
    }

    fn install(&mut self, slot: i64, key: TicketKey) {
        for s in self.seen.iter_mut().filter(|s| s.slot == slot) {
            s.agreed = false;
        }
        match self.seen.iter_mut().find(|s| names_equal(&s.key.name, &key.name)) {
            Some(s) => s.agreed = true,
            None => self.seen.push(Seen { slot, key, agreed: true }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::StorageError;
    use crate::testing::{FakeCaps, SECOND};
    use crate::tickets::guaranteed_lifetime_secs;
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use alloc::vec;

    /// T = 120, the shortest tlsmgr allows: slots of 60 s.
    const HALF: i64 = 60;
    const MARGIN: u32 = 10;
    const M: i64 = MARGIN as i64;
    /// The start of a slot.
    const T0: i64 = 1_700_000_040;

    type Tables = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

    /// One core of the fleet: its ring, its DRBG, its own clock offset.
    struct Node {
        ring: FleetRing,
        prng: Prng,
        caps: FakeCaps,
        offset: i64,
        /// When its housekeeping asked to run again, by its own clock.
        wake: i64,
    }

    impl Node {
        fn new(offset: i64, seed: u64) -> Node {
            Node { ring: FleetRing::new(MARGIN), prng: Prng::new(3600), caps: FakeCaps::new(0, seed), offset, wake: 0 }
        }
    }

    /// Cores on one store, on one true clock that the test moves.
    struct Fleet {
        nodes: Vec<Node>,
        store: Tables,
        store_down: bool,
        /// True time, seconds.
        now: i64,
        /// Keys minted by nodes that have since restarted.
        minted_before_restarts: u64,
        restarts: u64,
    }

    impl Fleet {
        fn new(offsets: &[i64]) -> Fleet {
            let nodes = offsets.iter().zip(1..).map(|(&o, seed)| Node::new(o, seed)).collect();
            Fleet { nodes, store: Tables::new(), store_down: false, now: T0, minted_before_restarts: 0, restarts: 0 }
        }

        /// Run `f` on node `i` at its clock, over the shared store.
        fn on<T>(&mut self, i: usize, f: impl FnOnce(&mut Node, u64) -> T) -> T {
            let node = &mut self.nodes[i];
            let clock = u64::try_from(self.now + node.offset).unwrap() * SECOND;
            node.caps.now = clock;
            node.caps.tables = core::mem::take(&mut self.store);
            node.caps.storage_fault = self.store_down.then(|| StorageError::Unavailable("down".into()));
            let result = f(node, clock);
            self.store = core::mem::take(&mut node.caps.tables);
            result
        }

        fn seal(&mut self, i: usize) -> Result<TicketKey> {
            self.on(i, |n, now| n.ring.encrypt_key(&mut n.caps, &mut n.prng, now, HALF))
        }

        fn sealing_name(&mut self, i: usize) -> [u8; NAME_LEN] {
            self.seal(i).unwrap_or_else(|e| panic!("node {i} at {}: {e}", self.now)).name
        }

        fn open(&mut self, i: usize, name: &[u8; NAME_LEN]) -> Result<Option<TicketKey>> {
            self.on(i, |n, now| n.ring.decrypt_key(&mut n.caps, now, name, HALF))
        }

        fn opens(&mut self, i: usize, name: &[u8; NAME_LEN]) -> bool {
            self.open(i, name).unwrap().is_some_and(|k| &k.name == name)
        }

        fn housekeeping(&mut self, i: usize) -> Result<i64> {
            self.on(i, |n, now| {
                let wake = n.ring.maintain(&mut n.caps, &mut n.prng, now, HALF)?;
                n.wake = wake;
                Ok(wake)
            })
        }

        /// Housekeeping on every node whose wake time has come.
        fn housekeeping_when_due(&mut self) {
            for i in 0..self.nodes.len() {
                if self.now + self.nodes[i].offset >= self.nodes[i].wake {
                    let _ = self.housekeeping(i);
                }
            }
        }

        /// Node `i` killed and started again: nothing in memory survives.
        fn restart(&mut self, i: usize) {
            self.minted_before_restarts += self.nodes[i].ring.minted();
            self.restarts += 1;
            let offset = self.nodes[i].offset;
            self.nodes[i] = Node::new(offset, 1000 + self.restarts);
        }

        fn minted(&self) -> u64 {
            self.minted_before_restarts + self.nodes.iter().map(|n| n.ring.minted()).sum::<u64>()
        }

        fn records(&self) -> usize {
            self.store.get(TABLE).map_or(0, BTreeMap::len)
        }

        fn logged(&self, i: usize, needle: &str) -> bool {
            self.nodes[i].caps.logged(needle)
        }
    }

    #[test]
    fn a_slot_key_is_published_before_it_seals_and_opens_one_margin_past_its_window() {
        let mut fleet = Fleet::new(&[0, 0]);
        let k0 = fleet.seal(0).unwrap();
        assert_eq!(k0.expires, T0 + HALF, "seals until the next slot begins");
        assert_eq!(fleet.sealing_name(1), k0.name, "the second node adopts the first one's key");
        assert_eq!((fleet.nodes[0].ring.minted(), fleet.nodes[1].ring.minted()), (1, 0));
        assert!(fleet.logged(0, &format!("seals from {T0} until {}, opens until {}", T0 + 60, T0 + 130)));

        // Published at start − margin, not a second before.
        fleet.now = T0 + HALF - M - 1;
        assert_eq!(fleet.housekeeping(1), Ok(T0 + HALF - M));
        assert_eq!(fleet.records(), 1);
        fleet.now = T0 + HALF - M;
        // Next: the re-assertion due 5 s after the last run's.
        assert_eq!(fleet.housekeeping(1), Ok(T0 + HALF - M - 1 + VERIFY_SECS));
        assert_eq!(fleet.records(), 2);
        let k1 = fleet.nodes[1].ring.agreed((T0 + HALF) / HALF).unwrap().clone();
        assert_eq!(fleet.nodes[1].ring.minted(), 1);

        // Decrypt-only until the slot begins, on both nodes.
        assert!(fleet.opens(0, &k1.name), "node 0 finds the published key in the store");
        fleet.now = T0 + HALF - 1;
        assert_eq!(fleet.sealing_name(0), k0.name);
        assert_eq!(fleet.sealing_name(1), k0.name);
        fleet.now = T0 + HALF;
        assert_eq!(fleet.sealing_name(0), k1.name);
        assert_eq!(fleet.sealing_name(1), k1.name);

        // K0 opens until start(n+2) + margin, exclusive.
        fleet.now = T0 + 2 * HALF + M - 1;
        assert!(fleet.opens(0, &k0.name) && fleet.opens(1, &k0.name));
        fleet.now = T0 + 2 * HALF + M;
        assert!(!fleet.opens(0, &k0.name) && !fleet.opens(1, &k0.name));
        assert!(fleet.opens(0, &k1.name));

        // Its record goes one margin later still, for clocks behind.
        fleet.housekeeping(0).unwrap();
        assert_eq!(fleet.records(), 3, "K0, K1 and K2 (published)");
        fleet.now = T0 + 2 * HALF + 2 * M;
        fleet.housekeeping(0).unwrap();
        assert_eq!(fleet.records(), 2);
        assert_eq!(fleet.minted(), 3);
    }

    #[test]
    fn five_nodes_rotating_in_the_same_second_agree_on_one_key() {
        let mut fleet = Fleet::new(&[0; 5]);
        for period in 0..4 {
            fleet.now = T0 + period * HALF;
            let names: Vec<_> = (0..5).map(|i| fleet.sealing_name(i)).collect();
            assert!(names.iter().all(|n| n == &names[0]), "period {period}: {} keys", names.len());
        }
        assert_eq!(fleet.minted(), 4, "one key per slot, whoever came first");
    }

    /// A deterministic stream of choices.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: usize) -> usize {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as usize % sides
        }
    }

    /// Many periods of five nodes, clocks up to 10 s apart (the margin),
    /// nodes restarted at random: every ticket opens on every node for its
    /// announced lifetime and no node opens it past its window; at no
    /// second do two nodes seal with different keys unless a slot boundary
    /// is within the margin; exactly one key is minted per slot.
    #[test]
    fn every_ticket_opens_everywhere_for_its_lifetime_with_skewed_clocks_and_restarts() {
        let offsets = [-5, -2, 0, 3, 5];
        let mut fleet = Fleet::new(&offsets);
        let mut dice = Dice(7);
        let lifetime = i64::from(guaranteed_lifetime_secs(HALF));
        // (name, slot, true time sealed)
        let mut tickets: Vec<([u8; NAME_LEN], i64, i64)> = Vec::new();
        let periods = 25;
        for t in T0..T0 + periods * HALF {
            fleet.now = t;
            if dice.roll(40) == 0 {
                let victim = dice.roll(5);
                fleet.restart(victim);
            }
            fleet.housekeeping_when_due();

            let mut sealing: Vec<[u8; NAME_LEN]> = Vec::new();
            for (i, offset) in offsets.iter().enumerate() {
                let name = fleet.sealing_name(i);
                if !sealing.contains(&name) {
                    sealing.push(name);
                }
                tickets.push((name, (t + offset).div_euclid(HALF), t));
            }
            let into_slot = t.rem_euclid(HALF);
            let near_boundary = into_slot.min(HALF - into_slot) <= M;
            assert!(
                sealing.len() == 1 || (sealing.len() == 2 && near_boundary),
                "{} keys sealing at {t}",
                sealing.len()
            );

            for _ in 0..8 {
                let (name, slot, sealed) = tickets[dice.roll(tickets.len())];
                let i = dice.roll(5);
                let clock = t + offsets[i];
                let opened = fleet.opens(i, &name);
                if t - sealed <= lifetime {
                    assert!(opened, "a ticket sealed at {sealed} failed on node {i} at {t}");
                }
                if clock >= (slot + 2) * HALF + M {
                    assert!(!opened, "a ticket of slot {slot} opened on node {i} at its {clock}");
                }
            }
        }
        assert!(fleet.restarts >= 20, "{} restarts", fleet.restarts);
        // The 25 slots the true clock crossed, the one before (where the
        // slow clocks started) and the one published ahead at the end.
        assert_eq!(fleet.minted(), periods as u64 + 2);
    }

    #[test]
    fn a_restarted_node_adopts_the_fleet_keys_and_mints_nothing() {
        let mut fleet = Fleet::new(&[0, 0]);
        let k0 = fleet.sealing_name(0);
        fleet.now = T0 + HALF - M;
        fleet.housekeeping(0).unwrap();
        fleet.restart(1);
        assert!(fleet.opens(1, &k0));
        fleet.now = T0 + HALF;
        let k1 = fleet.sealing_name(1);
        assert_eq!(fleet.sealing_name(0), k1);
        assert_eq!(fleet.nodes[1].ring.minted(), 0);
        // Loading erased nothing live and kept nothing dead.
        fleet.now = T0 + 3 * HALF;
        fleet.restart(1);
        assert!(!fleet.opens(1, &k0));
        assert!(fleet.opens(1, &k1));
    }

    #[test]
    fn an_outage_across_a_boundary_seals_with_the_published_key_or_not_at_all() {
        let mut fleet = Fleet::new(&[0, 0]);
        let k0 = fleet.sealing_name(0);
        assert_eq!(fleet.sealing_name(1), k0);
        // Node 0 publishes the next key; node 1's housekeeping does not run.
        fleet.now = T0 + HALF - M;
        fleet.housekeeping(0).unwrap();
        fleet.store_down = true;
        fleet.now = T0 + HALF + 5;
        let k1 = fleet.sealing_name(0);
        assert_ne!(k1, k0, "node 0 seals with the key it saw published");
        assert!(matches!(fleet.seal(1), Err(Error::Storage(_))), "node 1 has no agreed key: no tickets");
        assert!(fleet.opens(1, &k0), "keys already known keep opening");
        assert!(matches!(fleet.open(1, &k1), Err(Error::Storage(_))), "an unknown name cannot be looked up");
        assert!(fleet.housekeeping(1).is_err());

        // Back: the next housekeeping agrees the key, which is the fleet's.
        fleet.store_down = false;
        fleet.now += 1;
        fleet.housekeeping(1).unwrap();
        assert_eq!(fleet.sealing_name(1), k1);
        assert!(fleet.opens(1, &k1));
        assert_eq!(fleet.minted(), 2);
    }

    #[test]
    fn a_store_that_lost_its_records_gets_them_back_or_its_key_adopted() {
        // Written back before any node mints: a node started afterwards
        // adopts the key the fleet already seals with.
        let mut fleet = Fleet::new(&[0, 0, 0]);
        let k0 = fleet.sealing_name(0);
        fleet.housekeeping(0).unwrap();
        fleet.store.clear();
        fleet.now += VERIFY_SECS;
        fleet.housekeeping(0).unwrap();
        assert!(fleet.logged(0, "was missing from the store (was it emptied?); written back"));
        fleet.restart(2);
        assert_eq!(fleet.sealing_name(2), k0);

        // A node minted a rival first: the others seal with the store's key
        // once they re-assert, and keep opening their own.
        let mut fleet = Fleet::new(&[0, 0]);
        let k0 = fleet.sealing_name(0);
        fleet.housekeeping(0).unwrap();
        fleet.store.clear();
        fleet.restart(1);
        let rival = fleet.sealing_name(1);
        assert_ne!(rival, k0);
        assert_eq!(fleet.sealing_name(0), k0, "not noticed before the next re-assertion");
        fleet.now += VERIFY_SECS;
        fleet.housekeeping(0).unwrap();
        assert!(fleet.logged(0, "sealing with the store's from now on"));
        assert_eq!(fleet.sealing_name(0), rival);
        assert!(fleet.opens(0, &k0));
        assert!(fleet.opens(0, &rival));
    }

    #[test]
    fn unknown_names_reread_the_store_at_most_once_a_second() {
        let mut fleet = Fleet::new(&[0]);
        let k0 = fleet.sealing_name(0);
        // Past the previous slot's margin, before the next is published.
        fleet.now = T0 + 2 * M;
        let calls = |f: &Fleet| f.nodes[0].caps.storage_calls;
        let before = calls(&fleet);
        for forged in 0..100u8 {
            assert!(!fleet.opens(0, &[forged; NAME_LEN]));
        }
        let live_slots = 2; // this slot and the one before
        assert_eq!(calls(&fleet) - before, live_slots, "one re-read for 100 forged names");
        assert!(fleet.opens(0, &k0));
        assert_eq!(calls(&fleet) - before, live_slots, "a known name costs no read");
        fleet.now += 1;
        assert!(!fleet.opens(0, &[1; NAME_LEN]));
        assert_eq!(calls(&fleet) - before, 2 * live_slots);
    }

    #[test]
    fn a_record_in_an_unknown_format_means_no_tickets_and_is_left_alone() {
        let mut fleet = Fleet::new(&[0]);
        let slots = Slots { half: HALF, margin: M };
        let mut record = vec![0u8; RECORD_LEN];
        record[0] = RECORD_VERSION + 1;
        let key = slots.record_key(T0 / HALF).to_vec();
        fleet.store.entry(TABLE.into()).or_default().insert(key.clone(), record.clone());
        let refused = fleet.seal(0);
        assert!(matches!(&refused, Err(Error::Storage(why)) if why.contains("format this core does not know")));
        assert_eq!(fleet.store[TABLE][&key], record);
        assert_eq!(fleet.minted(), 0);
    }

    #[test]
    fn cores_with_another_timeout_use_other_records() {
        let mut fleet = Fleet::new(&[0]);
        let k60 = fleet.sealing_name(0);
        let k1800 = fleet.on(0, |n, now| n.ring.encrypt_key(&mut n.caps, &mut n.prng, now, 1800)).unwrap();
        assert_ne!(k60, k1800.name);
        assert_eq!(fleet.records(), 2);
    }
}
