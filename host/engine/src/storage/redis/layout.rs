//! How tables are laid out in Redis, and the Lua scripts that change them
//! atomically.
//!
//! A table `T` under the namespace `P` is four kinds of Redis key, all with
//! the hash tag `{P:T}` so that Redis Cluster keeps them in one slot (a
//! script may only touch keys of one slot):
//!
//! ```text
//! {P:T}:idx     sorted set, every score 0, members = the table's keys:
//!               the order `scan` walks (ZRANGE ... BYLEX is bytewise)
//! {P:T}:len     hash, key -> length of its value: what `stat` and a
//!               delete subtract, even after Redis has expired the value
//! {P:T}:bytes   string, the sum of key and value lengths (INCRBY)
//! {P:T}:v:KEY   string, the value (the sealed record) of KEY
//! P:tables      set of table names, for `is_empty` and for operators
//! ```
//!
//! Values are keys of their own, not fields of one hash, so that each can
//! carry its own expiry (Redis 7.0, Debian bookworm's, has no expiry of
//! hash fields). A value that Redis has expired leaves its `idx` and `len`
//! entries behind until a scan meets them or the key is deleted; both
//! remove them and correct the byte count, so `stat` counts what the core
//! has not yet removed, as with every other backend.
//!
//! Rejected: one Redis hash per table with the index kept by the client,
//! which needs a read-modify-write across round trips and so a race between
//! nodes; and MULTI/EXEC transactions, which cannot branch on what they
//! read (a put must know whether it replaces a value to count bytes).
//!
//! # Security
//!
//! Keys reach Redis as the core made them (hashes of client input, never
//! the input itself); values are sealed records. Script arguments are
//! passed as ARGV, never spliced into script text.
//!
//! # Limitations
//!
//! One table lives in one cluster slot, so on one master: a cluster
//! spreads the tables, not the entries of one cache.

use redis::{FromRedisValue, Pipeline, RedisResult, Script};

/// Table names are spliced into key names inside a hash tag: refuse the
/// characters that would end the tag early.
pub fn table_name_ok(table: &str) -> bool {
    !table.contains(['{', '}'])
}

/// The Redis key names of one table.
pub struct TableKeys {
    /// The sorted index of keys.
    pub idx: Vec<u8>,
    /// Value lengths by key.
    pub len: Vec<u8>,
    /// The byte total.
    pub bytes: Vec<u8>,
    /// The prefix of value keys: `{P:T}:v:`.
    pub value_prefix: Vec<u8>,
}

impl TableKeys {
    /// The keys of `table` under `prefix`.
    pub fn new(prefix: &str, table: &str) -> TableKeys {
        let tag = format!("{{{prefix}:{table}}}");
        TableKeys {
            idx: format!("{tag}:idx").into_bytes(),
            len: format!("{tag}:len").into_bytes(),
            bytes: format!("{tag}:bytes").into_bytes(),
            value_prefix: format!("{tag}:v:").into_bytes(),
        }
    }

    /// The key holding `key`'s value.
    pub fn value(&self, key: &[u8]) -> Vec<u8> {
        let mut name = Vec::with_capacity(self.value_prefix.len() + key.len());
        name.extend_from_slice(&self.value_prefix);
        name.extend_from_slice(key);
        name
    }
}

/// The set of table names under `prefix`.
pub fn registry(prefix: &str) -> String {
    format!("{prefix}:tables")
}

/// One call of the [`put`] or [`delete`] script: its KEYS and ARGV, in the
/// order the script reads them, made here once for both ways the backend
/// sends it: on its own through the client's script invocation (which
/// loads the script when the server does not know it), or as one EVALSHA
/// among others in a pipeline, which that invocation cannot join.
pub struct ScriptCall<'a> {
    script: &'a Script,
    table: &'a TableKeys,
    value_key: Vec<u8>,
    args: Vec<Vec<u8>>,
}

impl<'a> ScriptCall<'a> {
    /// [`put`] of `value` under `key`, expiring at `expires_at` (Unix
    /// seconds) if given; with `only_if_absent`, only where no live value is.
    pub fn put(
        script: &'a Script,
        table: &'a TableKeys,
        key: &[u8],
        value: &[u8],
        expires_at: Option<u64>,
        only_if_absent: bool,
    ) -> ScriptCall<'a> {
        // The script reads 0 as no expiry, so one at the epoch (long past)
        // becomes 1 ms.
        let expiry_ms = expires_at.map_or(0, |at| at.max(1).saturating_mul(1000));
        let args = vec![
            key.to_vec(),
            value.to_vec(),
            expiry_ms.to_string().into_bytes(),
            vec![b'0' + u8::from(only_if_absent)],
        ];
        ScriptCall { script, table, value_key: table.value(key), args }
    }

    /// [`delete`] of `key`.
    pub fn delete(script: &'a Script, table: &'a TableKeys, key: &[u8]) -> ScriptCall<'a> {
        ScriptCall { script, table, value_key: table.value(key), args: vec![key.to_vec()] }
    }

    fn keys(&self) -> [&[u8]; 4] {
        [&self.table.idx, &self.table.len, &self.table.bytes, &self.value_key]
    }

    /// Run it on its own.
    pub fn invoke<T: FromRedisValue>(&self, con: &mut dyn redis::ConnectionLike) -> RedisResult<T> {
        let mut invocation = self.script.prepare_invoke();
        for key in self.keys() {
            invocation.key(key);
        }
        for arg in &self.args {
            invocation.arg(arg.as_slice());
        }
        invocation.invoke(con)
    }

    /// Add it to `pipe` as an EVALSHA whose answer is ignored; the caller
    /// loads the script and sends the pipeline again on NOSCRIPT.
    pub fn add_to(&self, pipe: &mut Pipeline) {
        let command = pipe.cmd("EVALSHA").arg(self.script.get_hash()).arg(self.keys().len());
        for key in self.keys() {
            command.arg(key);
        }
        for arg in &self.args {
            command.arg(arg.as_slice());
        }
        command.ignore();
    }
}

/// KEYS: idx, len, bytes, value key. ARGV: key, value, expiry in Unix
/// milliseconds (0: none), 1 to store only where no live value is (else
/// 0). Returns nil when it stored, else the value already there; keeps the
/// byte total exact.
pub fn put() -> Script {
    Script::new(
        r"
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return existing end
end
local old = redis.call('HGET', KEYS[2], ARGV[1])
local delta = #ARGV[1] + #ARGV[2]
if old then delta = delta - #ARGV[1] - tonumber(old) end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], #ARGV[2])
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[4], ARGV[2], 'PXAT', ARGV[3])
else
  redis.call('SET', KEYS[4], ARGV[2])
end
redis.call('INCRBY', KEYS[3], delta)
return false
",
    )
}

/// KEYS: idx, len, bytes, value key. ARGV: key. Returns 1 when a value was
/// there (not yet expired), 0 otherwise; the index entry goes either way.
pub fn delete() -> Script {
    Script::new(
        r"
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DECRBY', KEYS[3], #ARGV[1] + tonumber(old))
return redis.call('DEL', KEYS[4])
",
    )
}

/// KEYS: idx, len, bytes, value prefix. ARGV: 1 if there is an `after`
/// key, the `after` key, limit. Returns key, value, key, value, ... for up
/// to `limit` live entries strictly after `after`, in order, forgetting on
/// the way the index entries whose values Redis has expired (so that a
/// short answer always means the end of the table).
pub fn scan() -> Script {
    Script::new(
        r"
local limit = tonumber(ARGV[3])
local from = '-'
if ARGV[1] == '1' then from = '(' .. ARGV[2] end
local out = {}
local found = 0
while found < limit do
  local keys = redis.call('ZRANGE', KEYS[1], from, '+', 'BYLEX', 'LIMIT', 0, math.min(limit - found, 1000))
  if #keys == 0 then break end
  for _, k in ipairs(keys) do
    local v = redis.call('GET', KEYS[4] .. k)
    if v then
      out[#out + 1] = k
      out[#out + 1] = v
      found = found + 1
    else
      local old = redis.call('HGET', KEYS[2], k)
      redis.call('HDEL', KEYS[2], k)
      redis.call('ZREM', KEYS[1], k)
      if old then redis.call('DECRBY', KEYS[3], #k + tonumber(old)) end
    end
  end
  from = '(' .. keys[#keys]
end
return out
",
    )
}
