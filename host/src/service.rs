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
//! [`crate::protocol::tlsmgr::RequestError::reply`]).
//!
//! # Security
//!
//! Replies carry secrets (seed bytes, ticket keys, sessions) only to the
//! client that asked for them. Ticket-key buffers are zeroized once encoded.
//!
//! # Limitations
//!
//! Blocking: each call waits for the core's actor.

use crate::actor::ActorHandle;
use crate::engine::{CallError, CoreError};
use crate::protocol::keybuf;
use crate::protocol::tlsmgr::{Reply, Request, RequestKind, Status};

/// Turns requests into core calls.
#[derive(Clone)]
pub struct Service {
    actor: ActorHandle,
}

impl Service {
    /// A service over the core behind `actor`.
    pub fn new(actor: ActorHandle) -> Self {
        Service { actor }
    }

    /// Answer one request.
    pub fn handle(&self, request: Request) -> Reply {
        match request {
            Request::Seed { size } => match self.actor.call(move |core| core.seed(size)) {
                Ok(Ok(seed)) => Reply::Seed { status: Status::Ok, seed: seed.into() },
                _ => Reply::failure(RequestKind::Seed),
            },
            Request::Policy { cache_type } => match self.actor.call(move |core| core.policy(&cache_type)) {
                Ok(Ok(p)) => Reply::Policy { status: Status::Ok, cachable: p.cachable, timeout: p.timeout_secs },
                _ => Reply::failure(RequestKind::Policy),
            },
            Request::Lookup { cache_type, cache_id } => {
                match self.actor.call(move |core| core.lookup(&cache_type, &cache_id)) {
                    Ok(Ok(Some(session))) => Reply::Lookup { status: Status::Ok, session: session.into() },
                    Ok(Ok(None)) => Reply::Lookup { status: Status::Err, session: Vec::new().into() },
                    _ => Reply::failure(RequestKind::Lookup),
                }
            }
            Request::Update { cache_type, cache_id, session } => {
                let outcome = self.actor.call(move |core| core.update(&cache_type, &cache_id, &session));
                let status = match outcome {
                    Ok(Ok(())) => Status::Ok,
                    // Understood but not saved: tlsmgr's meaning of ERR.
                    Ok(Err(CallError::Refused(CoreError::SessionTooLarge(_) | CoreError::CacheFull(_)))) => Status::Err,
                    _ => Status::Fail,
                };
                Reply::Update { status }
            }
            Request::Delete { cache_type, cache_id } => {
                let status = match self.actor.call(move |core| core.delete(&cache_type, &cache_id)) {
                    Ok(Ok(true)) => Status::Ok,
                    Ok(Ok(false)) => Status::Err,
                    _ => Status::Fail,
                };
                Reply::Delete { status }
            }
            Request::TicketKey { key_name } => self.ticket_key(key_name),
        }
    }

    fn ticket_key(&self, key_name: Vec<u8>) -> Reply {
        let name = (!key_name.is_empty()).then(|| key_name.clone());
        match self.actor.call(move |core| core.ticket_key(name.as_deref())) {
            Ok(Ok(Some(key))) => {
                let buf = keybuf::encode(&key);
                Reply::TicketKey { status: Status::Ok, keybuf: buf.to_vec().into() }
            }
            // tlsmgr echoes the unknown name back with ERR.
            Ok(Ok(None)) => Reply::TicketKey { status: Status::Err, keybuf: key_name.into() },
            Ok(Err(CallError::Refused(CoreError::TicketsDisabled))) => {
                Reply::TicketKey { status: Status::Err, keybuf: Vec::new().into() }
            }
            _ => Reply::failure(RequestKind::TicketKey),
        }
    }
}
