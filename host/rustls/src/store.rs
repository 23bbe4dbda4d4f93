//! [`SessionStore`]: rustls's [`StoresServerSessions`] over one of
//! tlskeeper's session caches, so that a session one server process stores
//! another resumes.
//!
//! rustls stores a session under its TLS 1.2 session id, or, when it sends
//! TLS 1.3 tickets without a ticketer, under the random ticket it sends
//! (stateful resumption). The key becomes the cache id in lower-case hex
//! (cache ids are text; hex is what Postfix sends too), the value is
//! stored as it is. `get` is a `lookup`; `take`, which rustls uses for TLS
//! 1.3 tickets that must be used once, is tlskeeper's `take`: a lookup and
//! a delete in one request, so that a ticket is resumed at most once across
//! every process that shares the daemon.
//!
//! Expiry is the cache's: a session is served for the cache's `timeout`
//! after it was stored (an hour by default), then forgotten.
//!
//! # Security
//!
//! Values are rustls's encoded sessions, master secrets included: they go
//! to the daemon (stored there sealed under its key-encryption key when it
//! keeps state) and come back, in zeroizing buffers here, handed to rustls
//! by move. Keys in `get` and `take` come from TLS clients: any longer than
//! [`MAX_KEY_BYTES`] is a miss without a request, so a client cannot make
//! the store send large ids. Use a cache of its own for rustls servers
//! (`https`, say): a cache shared with Postfix would only hold entries the
//! other cannot decode (full handshakes, no harm), and servers that share a
//! cache resume each other's sessions, so servers with different
//! client-authentication settings need caches (and, for tickets, daemons)
//! of their own.
//!
//! # Limitations
//!
//! Whether the cache is on is learnt once, at [`SessionStore::new`]. While
//! the backend is unavailable, `put` keeps nothing and `get` and `take`
//! find nothing: full handshakes, bounded as [`crate::remote`] describes.

use std::fmt;

use rustls::server::StoresServerSessions;
use zeroize::Zeroizing;

use crate::backend::{Backend, Unavailable};

/// The longest key looked up. rustls's keys are 32 bytes: TLS 1.2 session
/// ids (at most 32 by RFC 5246) and the random TLS 1.3 tickets of stateful
/// resumption; twice that leaves room and still bounds what a client sends.
pub const MAX_KEY_BYTES: usize = 64;

/// Sessions kept in a tlskeeper cache.
pub struct SessionStore {
    backend: Backend,
    cache: String,
    cachable: bool,
}

/// Why a [`SessionStore`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The cache's policy could not be learnt: the daemon is not running,
    /// or has no cache of that name (tlskeeper's defaults are `smtpd`,
    /// `smtp` and `lmtp`; add one in its `[caches]` table).
    #[error("cannot use the tlskeeper session cache \"{cache}\" ({backend:?}): {source}")]
    Unavailable {
        /// Where the request went.
        backend: Backend,
        /// The cache.
        cache: String,
        /// What failed.
        #[source]
        source: Unavailable,
    },
}

impl SessionStore {
    /// A store over `backend`'s cache `cache`, whose policy it asks once.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the backend does not answer, or the
    /// cache does not exist.
    pub fn new(backend: Backend, cache: impl Into<String>) -> Result<SessionStore, StoreError> {
        let cache = cache.into();
        match backend.policy(&cache) {
            Ok(policy) => Ok(SessionStore { backend, cache, cachable: policy.cachable }),
            Err(source) => Err(StoreError::Unavailable { backend, cache, source }),
        }
    }

    /// The cache's name.
    pub fn cache(&self) -> &str {
        &self.cache
    }

    fn lookup(&self, key: &[u8], take: bool) -> Option<Vec<u8>> {
        if !self.cachable || key.len() > MAX_KEY_BYTES {
            return None;
        }
        let mut session = self.backend.get(&self.cache, &hex::encode(key), take).ok().flatten()?;
        // Moved out, not copied: the buffer rustls gets is the only one.
        Some(std::mem::take(&mut *session))
    }
}

impl StoresServerSessions for SessionStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let value = Zeroizing::new(value);
        if !self.cachable || key.len() > MAX_KEY_BYTES {
            return false;
        }
        self.backend.put(&self.cache, &hex::encode(&key), value).unwrap_or(false)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lookup(key, false)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lookup(key, true)
    }

    fn can_cache(&self) -> bool {
        self.cachable
    }
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStore")
            .field("backend", &self.backend)
            .field("cache", &self.cache)
            .field("cachable", &self.cachable)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CACHE, Daemon, core, core_with, settings_with_disabled};

    /// Proves that a session one store puts another (a second process's,
    /// here a second backend) gets, that `take` hands it out once, and that
    /// over-long keys are misses.
    #[test]
    fn sessions_are_shared_and_taken_once() {
        let daemon = Daemon::start();
        let a = SessionStore::new(Backend::remote(daemon.socket()), CACHE).unwrap();
        let b = SessionStore::new(Backend::remote(daemon.socket()), CACHE).unwrap();
        assert!(a.can_cache());
        let id = vec![0xa5; 32];
        assert!(a.put(id.clone(), b"session".to_vec()));
        assert_eq!(b.get(&id).as_deref(), Some(&b"session"[..]));
        assert_eq!(b.take(&id).as_deref(), Some(&b"session"[..]));
        assert_eq!(a.take(&id), None, "taken once");
        assert_eq!(a.get(&id), None);

        let long = vec![1; MAX_KEY_BYTES + 1];
        assert!(!a.put(long.clone(), b"x".to_vec()));
        assert_eq!(a.get(&long), None);
    }

    /// Proves that an unknown cache is refused at start, and that a cache
    /// switched off gives a store that caches nothing.
    #[test]
    fn unknown_and_disabled_caches() {
        let daemon = Daemon::start();
        let err = SessionStore::new(Backend::remote(daemon.socket()), "pop3").unwrap_err();
        assert!(err.to_string().contains("\"pop3\""), "{err}");
        assert!(SessionStore::new(Backend::embedded(core()), "pop3").is_err());

        let off = settings_with_disabled("off");
        let store = SessionStore::new(Backend::embedded(core_with(&off)), "off").unwrap();
        assert!(!store.can_cache());
        assert!(!store.put(vec![1; 32], b"session".to_vec()));
        assert_eq!(store.get(&[1; 32]), None);
    }
}
