//! The core's imports: how [`HostState`] answers each call the component
//! makes into the host (clock, entropy, storage, seed file, log), live from
//! its capabilities, recorded to the tape, or answered from a replay.
//!
//! # Security
//!
//! Arguments come from the core, which is trusted for policy but not for
//! resource use: an entropy request is bounded ([`MAX_ENTROPY_REQUEST`]),
//! and storage enforces its own value limits. Values the core stores and
//! the seeds it saves are zeroized here once the backend has them.
//!
//! # Limitations
//!
//! Values read back from storage are returned to wasmtime by value, which
//! copies them into the core's memory without zeroizing its own buffer.

use crate::bindings;
use crate::capabilities::HostState;
use crate::runtime::MAX_ENTROPY_REQUEST;
use crate::tape::Tape;
use crate::trace::Import;

impl bindings::clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::ClockNow { result } => Some(*result),
                    _ => None,
                },
                || Import::ClockNow { result: 0 },
            );
        }
        let result = self.caps.clock.now_nanos();
        self.tape.record(|| Import::ClockNow { result });
        Ok(result)
    }
}

impl bindings::entropy::Host for HostState {
    fn fill(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        wasmtime::ensure!(
            len <= MAX_ENTROPY_REQUEST,
            "core asked for {len} bytes of entropy (limit {MAX_ENTROPY_REQUEST})"
        );
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::EntropyFill { len: l, result } if *l == len => Some(result.clone()),
                    _ => None,
                },
                || Import::EntropyFill { len, result: Vec::new() },
            );
        }
        let mut buf = vec![0u8; len as usize];
        self.caps.entropy.fill(&mut buf)?;
        self.tape.record(|| Import::EntropyFill { len, result: buf.clone() });
        Ok(buf)
    }
}

fn to_wit(e: crate::storage::StorageError) -> bindings::storage::Error {
    use crate::storage::StorageError as S;
    match e {
        S::Unavailable(why) => bindings::storage::Error::Unavailable(why),
        S::Io(why) => bindings::storage::Error::Io(why),
        S::TooLarge => bindings::storage::Error::TooLarge,
    }
}

impl bindings::storage::Host for HostState {
    fn get(
        &mut self,
        table: String,
        key: Vec<u8>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageGet { table: t, key: k, result } if *t == table && *k == key => Some(result.clone()),
                    _ => None,
                },
                || Import::StorageGet { table: table.clone(), key: key.clone(), result: Ok(None) },
            );
        }
        let result = self.caps.storage.get(&table, &key).map_err(to_wit);
        self.tape.record(|| Import::StorageGet { table, key, result: result.clone() });
        Ok(result)
    }

    fn put(
        &mut self,
        table: String,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StoragePut { table: t, key: k, value: v, result }
                        if (t, k, v) == (&table, &key, &value) =>
                    {
                        Some(result.clone())
                    }
                    _ => None,
                },
                || Import::StoragePut { table: table.clone(), key: key.clone(), value: value.clone(), result: Ok(()) },
            );
        }
        let mut value = value;
        let result = self.caps.storage.put(&table, &key, &value).map_err(to_wit);
        self.tape.record(|| Import::StoragePut { table, key, value: value.clone(), result: result.clone() });
        zeroize::Zeroize::zeroize(&mut value);
        Ok(result)
    }

    fn put_expiring(
        &mut self,
        table: String,
        key: Vec<u8>,
        value: Vec<u8>,
        expires_at: u64,
    ) -> wasmtime::Result<Result<(), bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StoragePutExpiring { table: t, key: k, value: v, expires_at: e, result }
                        if (t, k, v, *e) == (&table, &key, &value, expires_at) =>
                    {
                        Some(result.clone())
                    }
                    _ => None,
                },
                || Import::StoragePutExpiring {
                    table: table.clone(),
                    key: key.clone(),
                    value: value.clone(),
                    expires_at,
                    result: Ok(()),
                },
            );
        }
        let mut value = value;
        let result = self.caps.storage.put_expiring(&table, &key, &value, expires_at).map_err(to_wit);
        self.tape.record(|| Import::StoragePutExpiring {
            table,
            key,
            value: value.clone(),
            expires_at,
            result: result.clone(),
        });
        zeroize::Zeroize::zeroize(&mut value);
        Ok(result)
    }

    fn put_if_absent(
        &mut self,
        table: String,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StoragePutIfAbsent { table: t, key: k, value: v, result }
                        if (t, k, v) == (&table, &key, &value) =>
                    {
                        Some(result.clone())
                    }
                    _ => None,
                },
                || Import::StoragePutIfAbsent {
                    table: table.clone(),
                    key: key.clone(),
                    value: value.clone(),
                    result: Ok(None),
                },
            );
        }
        let mut value = value;
        let result = self.caps.storage.put_if_absent(&table, &key, &value).map_err(to_wit);
        self.tape.record(|| Import::StoragePutIfAbsent { table, key, value: value.clone(), result: result.clone() });
        zeroize::Zeroize::zeroize(&mut value);
        Ok(result)
    }

    fn delete(&mut self, table: String, key: Vec<u8>) -> wasmtime::Result<Result<bool, bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageDelete { table: t, key: k, result } if *t == table && *k == key => {
                        Some(result.clone())
                    }
                    _ => None,
                },
                || Import::StorageDelete { table: table.clone(), key: key.clone(), result: Ok(false) },
            );
        }
        let result = self.caps.storage.delete(&table, &key).map_err(to_wit);
        self.tape.record(|| Import::StorageDelete { table, key, result: result.clone() });
        Ok(result)
    }

    fn scan(
        &mut self,
        table: String,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<(Vec<u8>, Vec<u8>)>, bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageScan { table: t, after: a, limit: l, result }
                        if (t, a, *l) == (&table, &after, limit) =>
                    {
                        Some(result.clone())
                    }
                    _ => None,
                },
                || Import::StorageScan { table: table.clone(), after: after.clone(), limit, result: Ok(Vec::new()) },
            );
        }
        let result = self.caps.storage.scan(&table, after.as_deref(), limit).map_err(to_wit);
        self.tape.record(|| Import::StorageScan { table, after, limit, result: result.clone() });
        Ok(result)
    }

    fn stat(
        &mut self,
        table: String,
    ) -> wasmtime::Result<Result<bindings::storage::TableStat, bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageStat { table: t, result } if *t == table => Some(result.clone()),
                    _ => None,
                },
                || Import::StorageStat {
                    table: table.clone(),
                    result: Ok(bindings::storage::TableStat { entries: 0, bytes: 0 }),
                },
            );
        }
        let result = self
            .caps
            .storage
            .stat(&table)
            .map(|s| bindings::storage::TableStat { entries: s.entries, bytes: s.bytes })
            .map_err(to_wit);
        self.tape.record(|| Import::StorageStat { table, result: result.clone() });
        Ok(result)
    }

    fn get_with_stat(
        &mut self,
        table: String,
        key: Vec<u8>,
    ) -> wasmtime::Result<Result<(Option<Vec<u8>>, bindings::storage::TableStat), bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageGetWithStat { table: t, key: k, result } if *t == table && *k == key => {
                        Some(result.clone())
                    }
                    _ => None,
                },
                || Import::StorageGetWithStat {
                    table: table.clone(),
                    key: key.clone(),
                    result: Ok((None, bindings::storage::TableStat { entries: 0, bytes: 0 })),
                },
            );
        }
        let result = self
            .caps
            .storage
            .get_with_stat(&table, &key)
            .map(|(value, s)| (value, bindings::storage::TableStat { entries: s.entries, bytes: s.bytes }))
            .map_err(to_wit);
        self.tape.record(|| Import::StorageGetWithStat { table, key, result: result.clone() });
        Ok(result)
    }

    fn apply(
        &mut self,
        changes: Vec<bindings::storage::Change>,
    ) -> wasmtime::Result<Result<(), bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageApply { changes: c, result } if *c == changes => Some(result.clone()),
                    _ => None,
                },
                || Import::StorageApply { changes: changes.clone(), result: Ok(()) },
            );
        }
        // Moved, not copied: `Change` zeroizes its value when dropped.
        let changes: Vec<crate::storage::Change> = changes
            .into_iter()
            .map(|c| crate::storage::Change { table: c.table, key: c.key, value: c.value, expires_at: c.expires_at })
            .collect();
        let result = self.caps.storage.apply(&changes).map_err(to_wit);
        self.tape.record(|| Import::StorageApply {
            changes: changes
                .iter()
                .map(|c| bindings::storage::Change {
                    table: c.table.clone(),
                    key: c.key.clone(),
                    value: c.value.clone(),
                    expires_at: c.expires_at,
                })
                .collect(),
            result: result.clone(),
        });
        Ok(result)
    }
}

impl bindings::seed_file::Host for HostState {
    fn take(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::SeedTake { result } => Some(result.clone()),
                    _ => None,
                },
                || Import::SeedTake { result: None },
            );
        }
        let result = self.caps.seed_file.take();
        self.tape.record(|| Import::SeedTake { result: result.clone() });
        Ok(result)
    }

    fn save(&mut self, seed: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::SeedSave { seed: s, result } if *s == seed => Some(result.clone()),
                    _ => None,
                },
                || Import::SeedSave { seed: seed.clone(), result: Ok(()) },
            );
        }
        let mut seed = seed;
        let result = self.caps.seed_file.save(&seed);
        self.tape.record(|| Import::SeedSave { seed: seed.clone(), result: result.clone() });
        zeroize::Zeroize::zeroize(&mut seed);
        Ok(result)
    }
}

impl bindings::log::Host for HostState {
    fn log(&mut self, level: bindings::log::Level, message: String) -> wasmtime::Result<()> {
        if let Tape::Replay(p) = &mut self.tape {
            // Checked, not emitted: a replay's log is its report.
            return p.import(
                |r| match r {
                    Import::Log { level: l, message: m } if (*l, m) == (level, &message) => Some(()),
                    _ => None,
                },
                || Import::Log { level, message: message.clone() },
            );
        }
        crate::caps::log::emit(level, &message);
        self.tape.record(|| Import::Log { level, message });
        Ok(())
    }
}
