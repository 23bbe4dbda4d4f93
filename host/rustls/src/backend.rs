//! Where the adapters' requests go: a tlskeeper daemon over its UNIX socket
//! ([`Backend::remote`]) or a core in this process ([`Backend::embedded`]),
//! and what each answer means.
//!
//! Both speak the same five operations: seal a ticket, open one, ask a
//! cache's policy, store a session, look one up (or take it, for a session
//! that may be used once). Each answer is one of three outcomes, as in
//! Postfix's `tls_mgr.c`: done (`OK`), done but nothing there or nothing
//! kept (`ERR`: a miss, a ticket that does not open, a session too large),
//! or not done (`FAIL`, no answer, a core that trapped): `Ok(Some)`,
//! `Ok(None)` and `Err(`[`Unavailable`]`)` here. A handshake treats the last
//! like the second (no resumption, no ticket), but it is warned about, once
//! per kind until requests succeed again ([`crate::warn`]).
//!
//! # Security
//!
//! Remote: the daemon is trusted (see [`crate::remote`]). It is sent ticket
//! plaintexts and session values, which hold TLS resumption secrets, and
//! it sends them back; it is never asked for a ticket key (`tktkey`), so
//! the keys stay in the daemon. Embedded: the core is this process's own,
//! and its keys are in this process's memory (in the core's sandbox).
//! Either way the secrets that pass through here are in zeroizing buffers
//! and handed to rustls by move, not copied; none is logged. Session ids
//! and tickets come from TLS clients and are attacker-controlled; the
//! daemon or core bounds and checks them.
//!
//! # Limitations
//!
//! Every operation blocks its thread until the answer (remote: at most the
//! timeout; embedded: while the core's lock is held by other calls).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tlskeeper_engine::{CallError, CoreError, CoreGone, SharedCore};
use tlskeeper_protocol::tlsmgr::{Reply, Request, RequestKind, Status};
use zeroize::Zeroizing;

use crate::remote::{Remote, RemoteError, RemoteOptions};
use crate::warn::{Kind, Warnings};

/// A daemon or an embedded core, for a [`crate::Ticketer`] and any number of
/// [`crate::SessionStore`]s. Cheap to clone: clones share the connections
/// and the warnings.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    warnings: Warnings,
}

enum Target {
    Remote(Remote),
    Embedded(SharedCore),
}

/// Why the backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The daemon could not be reached, or did not answer in time.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The daemon answered FAIL: it could not serve the request (an unknown
    /// or disabled cache, a failed disk, a core that trapped).
    #[error("the tlskeeper daemon failed the {0} request")]
    Failed(RequestKind),
    /// The embedded core refused or failed the call.
    #[error("the tlskeeper core failed the {kind} call: {error}")]
    Core {
        /// The operation.
        kind: RequestKind,
        /// What the core said.
        #[source]
        error: CallError,
    },
    /// The embedded core is gone: an earlier call panicked.
    #[error(transparent)]
    Gone(#[from] CoreGone),
}

impl Unavailable {
    fn kind(&self) -> Option<Kind> {
        match self {
            // A consequence of a failure already warned about.
            Unavailable::Remote(RemoteError::Backoff(_)) => None,
            Unavailable::Remote(_) => Some(Kind::Unreachable),
            Unavailable::Failed(_) => Some(Kind::Failed),
            Unavailable::Core { .. } | Unavailable::Gone(_) => Some(Kind::Core),
        }
    }
}

/// A ticket the backend sealed.
pub(crate) struct Sealed {
    /// The ticket: opaque, safe to send in clear.
    pub(crate) ticket: Vec<u8>,
    /// Seconds every ticket sealed now is sure to open for.
    pub(crate) lifetime: u32,
}

/// A cache's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Whether the cache stores and serves sessions.
    pub(crate) cachable: bool,
    /// How long a stored session is served, in seconds.
    pub(crate) timeout: u32,
}

/// A secret the backend returned.
pub(crate) type Secret = Zeroizing<Vec<u8>>;

impl Backend {
    /// The daemon listening on `socket`, with [`RemoteOptions::default`].
    /// Nothing is connected until the first request.
    pub fn remote(socket: impl Into<PathBuf>) -> Backend {
        Backend::remote_with(socket, RemoteOptions::default())
    }

    /// The daemon listening on `socket`, waiting and pooling as `options`
    /// say.
    pub fn remote_with(socket: impl Into<PathBuf>, options: RemoteOptions) -> Backend {
        Backend::new(Target::Remote(Remote::new(socket, options)))
    }

    /// A core running in this process, shared with whatever else uses it.
    pub fn embedded(core: SharedCore) -> Backend {
        Backend::new(Target::Embedded(core))
    }

    fn new(target: Target) -> Backend {
        Backend { inner: Arc::new(Inner { target, warnings: Warnings::default() }) }
    }

    /// The connection pool, for a remote backend.
    pub fn remote_pool(&self) -> Option<&Remote> {
        match &self.inner.target {
            Target::Remote(remote) => Some(remote),
            Target::Embedded(_) => None,
        }
    }

    /// `plaintext` sealed into a ticket; `None` when the backend declines
    /// (tickets are off, or the plaintext is too large).
    pub(crate) fn seal(&self, plaintext: &[u8]) -> Result<Option<Sealed>, Unavailable> {
        let outcome = match &self.inner.target {
            Target::Remote(remote) => remote
                .request(&Request::Seal { plaintext: plaintext.to_vec().into() })
                .map_err(Unavailable::from)
                .and_then(|reply| match reply {
                    Reply::Seal { status: Status::Ok, ticket, lifetime } => Ok(Some(Sealed { ticket, lifetime })),
                    reply => answer(RequestKind::Seal, &reply).map(|()| None),
                }),
            Target::Embedded(core) => match core.call(|core| core.seal_ticket(plaintext))? {
                Ok(sealed) => Ok(Some(Sealed { ticket: sealed.ticket, lifetime: sealed.lifetime_secs })),
                Err(CallError::Refused(CoreError::TicketsDisabled | CoreError::TicketTooLarge(_))) => Ok(None),
                Err(error) => Err(Unavailable::Core { kind: RequestKind::Seal, error }),
            },
        };
        self.noted(outcome)
    }

    /// The plaintext of `ticket`; `None` for any ticket that does not open.
    pub(crate) fn open(&self, ticket: &[u8]) -> Result<Option<Secret>, Unavailable> {
        let outcome = match &self.inner.target {
            Target::Remote(remote) => remote
                .request(&Request::Open { ticket: ticket.to_vec() })
                .map_err(Unavailable::from)
                .and_then(|reply| match reply {
                    Reply::Open { status: Status::Ok, plaintext } => Ok(Some(plaintext)),
                    reply => answer(RequestKind::Open, &reply).map(|()| None),
                }),
            Target::Embedded(core) => match core.call(|core| core.open_ticket(ticket))? {
                Ok(plaintext) => Ok(plaintext.map(Zeroizing::new)),
                Err(CallError::Refused(CoreError::TicketsDisabled)) => Ok(None),
                Err(error) => Err(Unavailable::Core { kind: RequestKind::Open, error }),
            },
        };
        self.noted(outcome)
    }

    /// Whether `cache` stores sessions, and for how long.
    pub(crate) fn policy(&self, cache: &str) -> Result<Policy, Unavailable> {
        let outcome = match &self.inner.target {
            Target::Remote(remote) => remote
                .request(&Request::Policy { cache_type: cache.to_owned() })
                .map_err(Unavailable::from)
                .and_then(|reply| match reply {
                    Reply::Policy { status: Status::Ok, cachable, timeout } => Ok(Policy { cachable, timeout }),
                    // tlsmgr's policy has no ERR: anything else is a failure.
                    _ => Err(Unavailable::Failed(RequestKind::Policy)),
                }),
            Target::Embedded(core) => match core.call(|core| core.policy(cache))? {
                Ok(p) => Ok(Policy { cachable: p.cachable, timeout: p.timeout_secs }),
                Err(error) => Err(Unavailable::Core { kind: RequestKind::Policy, error }),
            },
        };
        self.noted(outcome)
    }

    /// Store `session` under `id` in `cache`; `false` when it was
    /// understood but not kept (too large, the cache full).
    pub(crate) fn put(&self, cache: &str, id: &str, session: Secret) -> Result<bool, Unavailable> {
        let outcome = match &self.inner.target {
            Target::Remote(remote) => remote
                .request(&Request::Update { cache_type: cache.to_owned(), cache_id: id.to_owned(), session })
                .map_err(Unavailable::from)
                .and_then(|reply| match reply {
                    Reply::Update { status: Status::Ok } => Ok(true),
                    reply => answer(RequestKind::Update, &reply).map(|()| false),
                }),
            Target::Embedded(core) => match core.call(|core| core.update(cache, id, &session))? {
                Ok(()) => Ok(true),
                Err(CallError::Refused(CoreError::SessionTooLarge(_) | CoreError::CacheFull(_))) => Ok(false),
                Err(error) => Err(Unavailable::Core { kind: RequestKind::Update, error }),
            },
        };
        self.noted(outcome)
    }

    /// The session under `id` in `cache`; with `take`, removed in the same
    /// request, so that it is handed out at most once, whichever process
    /// asks.
    pub(crate) fn get(&self, cache: &str, id: &str, take: bool) -> Result<Option<Secret>, Unavailable> {
        let kind = if take { RequestKind::Take } else { RequestKind::Lookup };
        let outcome = match &self.inner.target {
            Target::Remote(remote) => {
                let (cache_type, cache_id) = (cache.to_owned(), id.to_owned());
                let request = if take {
                    Request::Take { cache_type, cache_id }
                } else {
                    Request::Lookup { cache_type, cache_id }
                };
                remote.request(&request).map_err(Unavailable::from).and_then(|reply| match reply {
                    Reply::Lookup { status: Status::Ok, session } | Reply::Take { status: Status::Ok, session } => {
                        Ok(Some(session))
                    }
                    reply => answer(kind, &reply).map(|()| None),
                })
            }
            Target::Embedded(core) => {
                match core.call(|core| if take { core.take(cache, id) } else { core.lookup(cache, id) })? {
                    Ok(session) => Ok(session.map(Zeroizing::new)),
                    Err(error) => Err(Unavailable::Core { kind, error }),
                }
            }
        };
        self.noted(outcome)
    }

    /// Warn about a failure (once per kind), or note a success.
    fn noted<T>(&self, outcome: Result<T, Unavailable>) -> Result<T, Unavailable> {
        match &outcome {
            Ok(_) => self.inner.warnings.succeeded(),
            Err(e) => {
                if let Some(kind) = e.kind() {
                    self.inner.warnings.failed(kind, e);
                }
            }
        }
        outcome
    }

    /// The warnings' state (for tests).
    #[cfg(test)]
    pub(crate) fn warnings(&self) -> &Warnings {
        &self.inner.warnings
    }
}

/// A reply other than `OK`: `ERR` is an answer (nothing there, nothing
/// kept), anything else a failure.
fn answer(kind: RequestKind, reply: &Reply) -> Result<(), Unavailable> {
    match reply.status() {
        Status::Err => Ok(()),
        Status::Ok | Status::Fail => Err(Unavailable::Failed(kind)),
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.target {
            Target::Remote(remote) => f.debug_tuple("Backend::Remote").field(&remote.path()).finish(),
            Target::Embedded(_) => f.write_str("Backend::Embedded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CACHE, Daemon, core};
    use crate::warn::Kind;

    /// Both kinds of backend over a fresh core each (the daemon is kept
    /// alive by the returned guard).
    fn backends() -> Vec<(&'static str, Backend, Option<Daemon>)> {
        let daemon = Daemon::start();
        vec![("remote", Backend::remote(daemon.socket()), Some(daemon)), ("embedded", Backend::embedded(core()), None)]
    }

    /// Proves that the remote and the embedded backend give the same
    /// outcome for each operation: sealed tickets open and foreign ones do
    /// not, sessions are stored, looked up and taken once, unknown caches
    /// fail.
    #[test]
    fn remote_and_embedded_backends_agree() {
        for (what, backend, _daemon) in backends() {
            let sealed = backend.seal(b"resumption state").unwrap().unwrap();
            assert_eq!(sealed.lifetime, 1798, "{what}: T = 3600");
            let opened = backend.open(&sealed.ticket).unwrap().unwrap();
            assert_eq!(opened.as_slice(), b"resumption state", "{what}");
            assert!(backend.open(b"not a ticket").unwrap().is_none(), "{what}");
            assert!(backend.seal(&vec![0; 16 * 1024 + 1]).unwrap().is_none(), "{what}: too large is declined");
            assert!(backend.seal(b"").unwrap().is_some(), "{what}: the probe seals");

            assert_eq!(backend.policy(CACHE).unwrap(), Policy { cachable: true, timeout: 3600 }, "{what}");
            assert!(backend.put(CACHE, "ab01", vec![7; 100].into()).unwrap(), "{what}");
            assert_eq!(backend.get(CACHE, "ab01", false).unwrap().unwrap().as_slice(), [7; 100], "{what}");
            assert_eq!(backend.get(CACHE, "ab01", true).unwrap().unwrap().as_slice(), [7; 100], "{what}");
            assert!(backend.get(CACHE, "ab01", true).unwrap().is_none(), "{what}: taken once");
            assert!(backend.get(CACHE, "ab01", false).unwrap().is_none(), "{what}: and gone");
            assert!(!backend.put(CACHE, "big", vec![1; 17 * 1024].into()).unwrap(), "{what}: too large, not kept");

            assert!(backend.policy("nope").is_err(), "{what}");
            assert!(backend.put("nope", "x", vec![1].into()).is_err(), "{what}");
            assert!(backend.get("nope", "x", false).is_err(), "{what}");
            assert!(!backend.warnings().active().is_empty(), "{what}: the failure was noted");
            backend.seal(b"x").unwrap();
            assert!(backend.warnings().active().is_empty(), "{what}: and is over");
        }
    }

    /// Proves that an absent daemon is an `Unavailable`, warned about as
    /// unreachable, and that the backoff that follows is not a new warning.
    #[test]
    fn an_absent_daemon_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::remote(dir.path().join("nothing-here"));
        assert!(matches!(backend.seal(b"x"), Err(Unavailable::Remote(RemoteError::Connect { .. }))));
        assert_eq!(backend.warnings().active(), [Kind::Unreachable]);
        assert!(matches!(backend.open(b"x"), Err(Unavailable::Remote(RemoteError::Backoff(_)))));
        assert_eq!(backend.warnings().active(), [Kind::Unreachable]);
    }
}
