//! The service: one typed tlsmgr request in, one core call, one typed reply
//! out.
//!
//! This is the only module that sees both the protocol's types and the
//! core's. It maps outcomes onto Postfix's three statuses the way tlsmgr 3.7
//! does: OK for success, ERR when the request completed but found or saved
//! nothing, FAIL for bad arguments, unknown or disabled caches and internal
//! failures. Two tlsmgr bugs are not copied: error replies never carry stale
//! data (the data attribute is empty, or the echoed key name), and unknown
//! requests get a FAIL reply instead of silence (see
//! [`tlskeeper_protocol::tlsmgr::RequestError::reply`]).
//!
//! Log lines follow tlsmgr's wording, so that what Postfix administrators
//! grep for still matches: `bogus cache type "x" in "lookup" request`,
//! `bogus seed length "0" in "seed" request`, `invalid session ticket key
//! name length: 3`, and, for caches whose `*_tls_loglevel` asks for it,
//! tls_scache's `lookup smtpd session id=...`, `put ...`, `delete ...`.
//! Unlike tlsmgr's, the warnings are limited (see
//! [`tlskeeper_engine::throttle`]): a client sending junk, or a failed disk
//! under load, must not fill the mail log.
//!
//! # Security
//!
//! Replies carry secrets (seed bytes, ticket keys, sessions) only to the
//! client that asked for them. Ticket-key buffers are zeroized once encoded.
//! Logged cache ids and cache names are client-chosen text; the log sink
//! neutralises control characters. Session bytes are never logged.
//!
//! # Limitations
//!
//! Blocking: each call waits for the core's lock.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use crate::keybuf;
use tlskeeper_engine::shared_core::{CoreGone, SharedCore};
use tlskeeper_engine::throttle::Throttle;
use tlskeeper_engine::{CallError, CoreError};
use tlskeeper_protocol::tlsmgr::{Reply, Request, RequestKind, Status};

/// Turns requests into core calls.
#[derive(Clone)]
pub struct Service {
    core: SharedCore,
    /// Caches whose operations are logged one by one.
    logged_caches: Arc<BTreeSet<String>>,
}

impl Service {
    /// A service over `core`.
    pub fn new(core: SharedCore) -> Self {
        Service { core, logged_caches: Arc::default() }
    }

    /// Log each lookup, update and delete on the caches named in `caches`
    /// (tlsmgr does so for a cache whose `*_tls_loglevel` is 2 or more).
    #[must_use]
    pub fn with_cache_logging(mut self, caches: impl IntoIterator<Item = String>) -> Self {
        self.logged_caches = Arc::new(caches.into_iter().collect());
        self
    }

    fn logs(&self, cache: &str) -> bool {
        self.logged_caches.contains(cache)
    }

    /// Answer one request.
    pub fn handle(&self, request: Request) -> Reply {
        match request {
            Request::Seed { size } => match self.core.call(move |core| core.seed(size)) {
                Ok(Ok(seed)) => Reply::Seed { status: Status::Ok, seed: seed.into() },
                outcome => {
                    warn_refusal(RequestKind::Seed, outcome);
                    Reply::failure(RequestKind::Seed)
                }
            },
            Request::Policy { cache_type } => match self.core.call(move |core| core.policy(&cache_type)) {
                Ok(Ok(p)) => Reply::Policy { status: Status::Ok, cachable: p.cachable, timeout: p.timeout_secs },
                outcome => {
                    warn_refusal(RequestKind::Policy, outcome);
                    Reply::failure(RequestKind::Policy)
                }
            },
            Request::Lookup { cache_type, cache_id } => {
                if self.logs(&cache_type) {
                    tracing::info!("lookup {cache_type} session id={cache_id}");
                }
                match self.core.call(move |core| core.lookup(&cache_type, &cache_id)) {
                    Ok(Ok(Some(session))) => Reply::Lookup { status: Status::Ok, session: session.into() },
                    Ok(Ok(None)) => Reply::Lookup { status: Status::Err, session: Vec::new().into() },
                    outcome => {
                        warn_refusal(RequestKind::Lookup, outcome);
                        Reply::failure(RequestKind::Lookup)
                    }
                }
            }
            Request::Update { cache_type, cache_id, session } => {
                if self.logs(&cache_type) {
                    tracing::info!("put {cache_type} session id={cache_id} [data {} bytes]", session.len());
                }
                let outcome = self.core.call(move |core| core.update(&cache_type, &cache_id, &session));
                let status = match outcome {
                    Ok(Ok(())) => Status::Ok,
                    // Understood but not saved: tlsmgr's meaning of ERR.
                    Ok(Err(CallError::Refused(CoreError::SessionTooLarge(_) | CoreError::CacheFull(_)))) => Status::Err,
                    outcome => {
                        warn_refusal(RequestKind::Update, outcome);
                        Status::Fail
                    }
                };
                Reply::Update { status }
            }
            Request::Delete { cache_type, cache_id } => {
                if self.logs(&cache_type) {
                    tracing::info!("delete {cache_type} session id={cache_id}");
                }
                let status = match self.core.call(move |core| core.delete(&cache_type, &cache_id)) {
                    Ok(Ok(true)) => Status::Ok,
                    Ok(Ok(false)) => Status::Err,
                    outcome => {
                        warn_refusal(RequestKind::Delete, outcome);
                        Status::Fail
                    }
                };
                Reply::Delete { status }
            }
            Request::TicketKey { key_name } => self.ticket_key(key_name),
            Request::Take { cache_type, cache_id } => {
                if self.logs(&cache_type) {
                    tracing::info!("take {cache_type} session id={cache_id}");
                }
                match self.core.call(move |core| core.take(&cache_type, &cache_id)) {
                    Ok(Ok(Some(session))) => Reply::Take { status: Status::Ok, session: session.into() },
                    Ok(Ok(None)) => Reply::Take { status: Status::Err, session: Vec::new().into() },
                    outcome => {
                        warn_refusal(RequestKind::Take, outcome);
                        Reply::failure(RequestKind::Take)
                    }
                }
            }
            Request::Seal { plaintext } => match self.core.call(move |core| core.seal_ticket(&plaintext)) {
                Ok(Ok(sealed)) => {
                    Reply::Seal { status: Status::Ok, ticket: sealed.ticket, lifetime: sealed.lifetime_secs }
                }
                // Understood but not done (tickets off, plaintext too
                // large): the server issues no ticket, and says so with ERR.
                Ok(Err(CallError::Refused(CoreError::TicketsDisabled | CoreError::TicketTooLarge(_)))) => {
                    Reply::Seal { status: Status::Err, ticket: Vec::new(), lifetime: 0 }
                }
                outcome => {
                    warn_refusal(RequestKind::Seal, outcome);
                    Reply::failure(RequestKind::Seal)
                }
            },
            // Every ticket that does not open gets the same ERR: which check
            // failed is not the client's to know.
            Request::Open { ticket } => match self.core.call(move |core| core.open_ticket(&ticket)) {
                Ok(Ok(Some(plaintext))) => Reply::Open { status: Status::Ok, plaintext: plaintext.into() },
                Ok(Ok(None)) | Ok(Err(CallError::Refused(CoreError::TicketsDisabled))) => {
                    Reply::Open { status: Status::Err, plaintext: Vec::new().into() }
                }
                outcome => {
                    warn_refusal(RequestKind::Open, outcome);
                    Reply::failure(RequestKind::Open)
                }
            },
        }
    }

    fn ticket_key(&self, key_name: Vec<u8>) -> Reply {
        let name = (!key_name.is_empty()).then(|| key_name.clone());
        match self.core.call(move |core| core.ticket_key(name.as_deref())) {
            Ok(Ok(Some(key))) => {
                let buf = keybuf::encode(&key);
                Reply::TicketKey { status: Status::Ok, keybuf: buf.to_vec().into() }
            }
            // tlsmgr echoes the unknown name back with ERR.
            Ok(Ok(None)) => Reply::TicketKey { status: Status::Err, keybuf: key_name.into() },
            Ok(Err(CallError::Refused(CoreError::TicketsDisabled))) => {
                Reply::TicketKey { status: Status::Err, keybuf: Vec::new().into() }
            }
            outcome => {
                warn_refusal(RequestKind::TicketKey, outcome);
                Reply::failure(RequestKind::TicketKey)
            }
        }
    }
}

/// Log why a request failed, in tlsmgr's words where tlsmgr has them. A
/// disabled cache is not worth a line (tlsmgr is silent too: clients ask
/// `policy` first and only then use a cache). Each kind of line is limited
/// by [`REFUSALS`]: clients choose how often these happen.
fn warn_refusal<T>(kind: RequestKind, outcome: Result<Result<T, CallError>, CoreGone>) {
    let limited = |label: &'static str| REFUSALS.allow(label, Instant::now());
    match outcome {
        Ok(Ok(_)) | Ok(Err(CallError::Refused(CoreError::CacheDisabled(_)))) => {}
        Ok(Err(CallError::Refused(CoreError::UnknownCache(name)))) => {
            if limited("bogus cache type") {
                tracing::warn!("bogus cache type \"{name}\" in \"{kind}\" request");
            }
        }
        Ok(Err(CallError::Refused(CoreError::BadSeedLength(n)))) => {
            if limited("bogus seed length") {
                // tlsmgr prints the size as a C int: 4294967295 shows as -1.
                tracing::warn!("bogus seed length \"{}\" in \"{kind}\" request", n.cast_signed());
            }
        }
        Ok(Err(CallError::Refused(CoreError::BadKeyNameLength(n)))) => {
            if limited("ticket key name length") {
                tracing::warn!("invalid session ticket key name length: {n}");
            }
        }
        Ok(Err(CallError::Refused(CoreError::Storage(why)))) => {
            if limited(kind.name()) {
                tracing::warn!("{kind} request failed: {why}");
            }
        }
        Ok(Err(e)) => {
            if limited(kind.name()) {
                tracing::warn!("{kind} request failed: {e}");
            }
        }
        Err(e) => tracing::error!("{kind} request failed: {e}"),
    }
}

/// The budget of [`warn_refusal`]'s lines.
static REFUSALS: Throttle = Throttle::new();
