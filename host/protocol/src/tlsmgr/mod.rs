//! The Postfix 3.7 `tlsmgr(8)` request/reply vocabulary: [`Frame`] <-> typed
//! [`Request`] and [`Reply`].
//!
//! A connection to `private/tlsmgr` carries, in order: the server's
//! [`ANNOUNCEMENT`]; then either master(8)'s two-byte wakeup trigger `W\0`
//! (see [`wakeup_prefix`]) or any number of request/reply exchanges, one
//! attr0 list each way. This module turns a request list into a [`Request`]
//! and a [`Reply`] back into a list, with exactly the attributes, in exactly
//! the order, that `tlsmgr_service()` in `src/tlsmgr/tlsmgr.c` scans and
//! that the client in `src/tls/tls_mgr.c` expects. The client direction
//! ([`Request::to_frame`], [`Reply::from_frame`]) is provided for tools and
//! tests. The module knows nothing about sockets, the core or cache policy:
//! for instance, whether a seed size or key-name length is acceptable is the
//! service's decision, not the codec's.
//!
//! Requests are decoded strictly: the attributes must be exactly those
//! tlsmgr 3.7 scans, in its order, none missing and none extra (tlsmgr's own
//! `ATTR_FLAG_STRICT`), and the values must be in the canonical form Postfix
//! sends. Malformed requests map to a [`RequestError`] that says which reply
//! the server must send ([`RequestError::reply`]).
//!
//! # Security
//!
//! Every attribute of a request is attacker-controlled (any local process
//! that can connect to the socket). Decoding never panics, and rejects
//! rather than reinterprets anything unusual: where glibc's `sscanf("%u")`
//! accepts `-1`, `+5`, ` 7` and wraps `4294967296` to 0, and Postfix's
//! `base64_decode` silently stops at the first `=`, this module reports an
//! error, so a value never means something other than what it says.
//! Secrets pass through here: the session in `update` requests and `lookup`
//! replies (a DER `SSL_SESSION` holds the master secret), the PRNG seed and
//! the ticket key in `tktkey` replies. Those fields are
//! [`Zeroizing`] and the `Debug` impls print only their lengths. Error
//! values quote attacker-supplied names only escaped and truncated, so they
//! are safe to log.
//!
//! Unlike tlsmgr 3.7, a failure reply never carries data left over from an
//! earlier request: 3.7 answers a malformed `lookup`, `tktkey` or `seed`
//! request with whatever its static buffer held (verified for `lookup`: it
//! returned a ticket key). [`Reply::failure`] always sends the data
//! attribute empty.
//!
//! # Limitations
//!
//! - STR values (`cache_type`, `cache_id`) must be UTF-8. Postfix treats
//!   them as C strings of any bytes; the ids Postfix builds are ASCII (hex,
//!   service names, IP addresses, digests), so a non-UTF-8 id only costs the
//!   client a `FAIL` answer, i.e. a full TLS handshake.
//! - The numeric form is stricter than glibc: only canonical unsigned
//!   decimal (no sign, no spaces, no leading zeros, at most `u32::MAX`) is
//!   accepted, which is what Postfix's `%u` produces.
//! - The master trigger is recognised by its bytes, not by tlsmgr's
//!   `FIONREAD <= 2` heuristic (see [`wakeup_prefix`]); an attribute list
//!   `request=W` is an unknown request here, where 3.7 would treat it as a
//!   trigger and close the connection.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::attr0::Frame;

/// The list the server sends on every accepted connection, before anything
/// else: `protocol=tlsmgr_protocol` (`tlsmgr_post_accept()`). The 3.7 client
/// checks it with `RECV_ATTR_STREQ`; a wrong value disables TLS in the
/// client, and sending nothing makes it wait for `ipc_timeout`.
pub const ANNOUNCEMENT: &[u8] = b"protocol\0tlsmgr_protocol\0\0";

/// Name of the attribute that starts every request (`TLS_MGR_ATTR_REQ`).
pub const ATTR_REQUEST: &str = "request";
/// Reply status, an INT holding a [`Status`] (`MAIL_ATTR_STATUS`).
pub const ATTR_STATUS: &str = "status";
/// `seed` request: number of bytes wanted, INT (`TLS_MGR_ATTR_SIZE`).
pub const ATTR_SIZE: &str = "size";
/// `seed` reply: the random bytes, DATA (`TLS_MGR_ATTR_SEED`).
pub const ATTR_SEED: &str = "seed";
/// Cache type, STR: `smtpd`, `smtp` or `lmtp` (`TLS_MGR_ATTR_CACHE_TYPE`).
pub const ATTR_CACHE_TYPE: &str = "cache_type";
/// Session cache key, STR (`TLS_MGR_ATTR_CACHE_ID`).
pub const ATTR_CACHE_ID: &str = "cache_id";
/// DER `SSL_SESSION`, DATA (`TLS_MGR_ATTR_SESSION`).
pub const ATTR_SESSION: &str = "session";
/// `policy` reply: whether the cache is enabled, INT 0/1
/// (`TLS_MGR_ATTR_CACHABLE`, spelled as in Postfix).
pub const ATTR_CACHABLE: &str = "cachable";
/// `policy` reply: session cache timeout in seconds, INT
/// (`TLS_MGR_ATTR_SESSTOUT`).
pub const ATTR_TIMEOUT: &str = "timeout";
/// `tktkey` request: ticket key name, DATA, empty or 16 bytes
/// (`TLS_MGR_ATTR_KEYNAME`).
pub const ATTR_KEYNAME: &str = "keyname";
/// `tktkey` reply: the raw `TLS_TICKET_KEY` struct, DATA
/// (`TLS_MGR_ATTR_KEYBUF`; the daemon's `keybuf` module encodes it).
pub const ATTR_KEYBUF: &str = "keybuf";

/// `tktseal` request: the ticket plaintext to seal, DATA (tlskeeper's own).
pub const ATTR_PLAINTEXT: &str = "plaintext";
/// `tktseal` reply and `tktopen` request: a sealed ticket, DATA
/// (tlskeeper's own).
pub const ATTR_TICKET: &str = "ticket";
/// `tktseal` reply: seconds every ticket sealed now is sure to open for,
/// INT (tlskeeper's own).
pub const ATTR_LIFETIME: &str = "lifetime";

/// Largest `seed` size tlsmgr 3.7 grants; it answers `FAIL` with an empty
/// seed for a size of 0 or above this. Not enforced by this codec: the
/// service decides.
pub const MAX_SEED_SIZE: u32 = 255;

/// Whether a connection's first bytes are master(8)'s wakeup trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    /// The connection starts with `W\0`: a master trigger. Send no reply and
    /// close the connection (master waits for the close).
    Wakeup,
    /// Not a trigger: decode the input as attribute lists.
    NotWakeup,
    /// Too few bytes to tell; read more.
    NeedMore,
}

/// Classifies the first bytes a client sent.
///
/// master(8) (`unix_trigger()`) connects, ignores the announcement, writes
/// `W` and then, in a separate write, one NUL; so a server may see `W`
/// alone first. Call this on the buffered input before decoding the first
/// list of a connection, and again while it answers [`Prefix::NeedMore`]
/// (only for `b""` and `b"W"`). A real request always starts with
/// `request\0`, so the two cannot be confused.
///
/// tlsmgr 3.7 instead treats any input of at most 2 bytes available at the
/// first read (`FIONREAD`) as a NUL-terminated trigger string; that
/// heuristic depends on write timing and was rejected in favour of
/// matching the bytes.
pub fn wakeup_prefix(buf: &[u8]) -> Prefix {
    match buf {
        [] | [b'W'] => Prefix::NeedMore,
        [b'W', 0, ..] => Prefix::Wakeup,
        _ => Prefix::NotWakeup,
    }
}

/// A reply status (`TLS_MGR_STAT_*`).
///
/// The C values are negative ints sent with `%u`, so they appear on the wire
/// as 32-bit two's complement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success (`TLS_MGR_STAT_OK`, 0, wire `0`).
    Ok,
    /// The request was understood but the object was not found or not saved
    /// (`TLS_MGR_STAT_ERR`, -1, wire `4294967295`).
    Err,
    /// Protocol error, bad arguments, or an unknown or disabled cache
    /// (`TLS_MGR_STAT_FAIL`, -2, wire `4294967294`).
    Fail,
}

impl Status {
    /// The C value.
    pub const fn code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Err => -1,
            Status::Fail => -2,
        }
    }

    /// The value as sent on the wire (`%u` of the C value).
    pub const fn to_wire(self) -> u32 {
        self.code().cast_unsigned()
    }

    /// The status for a wire value, if it is one of the three.
    pub const fn from_wire(value: u32) -> Option<Self> {
        match value.cast_signed() {
            0 => Some(Status::Ok),
            -1 => Some(Status::Err),
            -2 => Some(Status::Fail),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Err => "ERR",
            Status::Fail => "FAIL",
        })
    }
}

/// The six request types of tlsmgr 3.7 (`TLS_MGR_REQ_*`), and tlskeeper's
/// own beside them. Postfix never sends the latter, and their names are
/// ones tlsmgr 3.7 does not know, so Postfix's requests are untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `seed`: random bytes for the client's PRNG.
    Seed,
    /// `policy`: whether a cache is enabled and its timeout.
    Policy,
    /// `lookup`: fetch a cached session.
    Lookup,
    /// `update`: store a session.
    Update,
    /// `delete`: remove a session.
    Delete,
    /// `tktkey`: fetch or create a session-ticket key.
    TicketKey,
    /// `take` (tlskeeper): a lookup that also deletes, so that a
    /// single-use session is handed out at most once.
    Take,
    /// `tktseal` (tlskeeper): seal a ticket plaintext under the current
    /// key, which never leaves the server.
    Seal,
    /// `tktopen` (tlskeeper): open a ticket `tktseal` made.
    Open,
}

impl RequestKind {
    /// Every kind, for iteration in tools and tests.
    pub const ALL: [RequestKind; 9] = [
        RequestKind::Seed,
        RequestKind::Policy,
        RequestKind::Lookup,
        RequestKind::Update,
        RequestKind::Delete,
        RequestKind::TicketKey,
        RequestKind::Take,
        RequestKind::Seal,
        RequestKind::Open,
    ];

    /// The value of the `request` attribute.
    pub const fn name(self) -> &'static str {
        match self {
            RequestKind::Seed => "seed",
            RequestKind::Policy => "policy",
            RequestKind::Lookup => "lookup",
            RequestKind::Update => "update",
            RequestKind::Delete => "delete",
            RequestKind::TicketKey => "tktkey",
            RequestKind::Take => "take",
            RequestKind::Seal => "tktseal",
            RequestKind::Open => "tktopen",
        }
    }

    /// The kind whose `request` value is exactly `name`.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name().as_bytes() == name)
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A well-formed tlsmgr request, with DATA values base64-decoded.
///
/// `Debug` prints the session only as a length.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// `request=seed size=INT`.
    Seed {
        /// Number of random bytes wanted (clients send
        /// `tls_daemon_random_bytes`, 32). tlsmgr grants 1 to
        /// [`MAX_SEED_SIZE`].
        size: u32,
    },
    /// `request=policy cache_type=STR`.
    Policy {
        /// `smtpd`, `smtp` or `lmtp`; anything else is the service's
        /// business (tlsmgr answers `FAIL`).
        cache_type: String,
    },
    /// `request=lookup cache_type=STR cache_id=STR`.
    Lookup {
        /// The cache to search.
        cache_type: String,
        /// The session's key.
        cache_id: String,
    },
    /// `request=update cache_type=STR cache_id=STR session=DATA`.
    Update {
        /// The cache to store into.
        cache_type: String,
        /// The session's key.
        cache_id: String,
        /// The DER `SSL_SESSION`; secret.
        session: Zeroizing<Vec<u8>>,
    },
    /// `request=delete cache_type=STR cache_id=STR`.
    Delete {
        /// The cache to delete from.
        cache_type: String,
        /// The session's key.
        cache_id: String,
    },
    /// `request=tktkey keyname=DATA`.
    TicketKey {
        /// Empty to get the current encryption key, or the 16-byte name from
        /// a ticket to decrypt. Other lengths are passed through for the
        /// service to reject (tlsmgr answers `FAIL`).
        key_name: Vec<u8>,
    },
    /// `request=take cache_type=STR cache_id=STR`.
    Take {
        /// The cache to take from.
        cache_type: String,
        /// The session's key.
        cache_id: String,
    },
    /// `request=tktseal plaintext=DATA`.
    Seal {
        /// The ticket's plaintext (a TLS server's resumption state); secret.
        plaintext: Zeroizing<Vec<u8>>,
    },
    /// `request=tktopen ticket=DATA`.
    Open {
        /// The ticket a client presented: attacker-controlled.
        ticket: Vec<u8>,
    },
}

impl Request {
    /// The request's type.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Seed { .. } => RequestKind::Seed,
            Request::Policy { .. } => RequestKind::Policy,
            Request::Lookup { .. } => RequestKind::Lookup,
            Request::Update { .. } => RequestKind::Update,
            Request::Delete { .. } => RequestKind::Delete,
            Request::TicketKey { .. } => RequestKind::TicketKey,
            Request::Take { .. } => RequestKind::Take,
            Request::Seal { .. } => RequestKind::Seal,
            Request::Open { .. } => RequestKind::Open,
        }
    }

    /// Decodes a request list, strictly.
    ///
    /// The first attribute must be `request` (tlsmgr scans it first with
    /// `ATTR_FLAG_MORE | ATTR_FLAG_STRICT`); the rest must be exactly the
    /// request's attributes in tlsmgr's order (its second scan uses
    /// `ATTR_FLAG_STRICT`).
    pub fn from_frame(frame: &Frame) -> Result<Request, RequestError> {
        let (kind, rest) = match frame.attrs.split_first() {
            Some(((name, value), rest)) if name == ATTR_REQUEST => match RequestKind::from_name(value) {
                Some(kind) => (kind, rest),
                None => {
                    return Err(RequestError::UnknownRequest { name: shown(value) });
                }
            },
            Some(((name, _), _)) => {
                return Err(RequestError::NotARequest { found: Some(shown(name.as_bytes())) });
            }
            None => return Err(RequestError::NotARequest { found: None }),
        };
        Self::parse_args(kind, rest).map_err(|error| RequestError::Malformed { kind, error })
    }

    fn parse_args(kind: RequestKind, attrs: &[(String, Vec<u8>)]) -> Result<Request, AttrError> {
        let mut c = Cursor::new(attrs);
        let request = match kind {
            RequestKind::Seed => Request::Seed { size: c.take_u32(ATTR_SIZE)? },
            RequestKind::Policy => Request::Policy { cache_type: c.take_str(ATTR_CACHE_TYPE)? },
            RequestKind::Lookup => {
                Request::Lookup { cache_type: c.take_str(ATTR_CACHE_TYPE)?, cache_id: c.take_str(ATTR_CACHE_ID)? }
            }
            RequestKind::Update => Request::Update {
                cache_type: c.take_str(ATTR_CACHE_TYPE)?,
                cache_id: c.take_str(ATTR_CACHE_ID)?,
                session: c.take_data(ATTR_SESSION)?,
            },
            RequestKind::Delete => {
                Request::Delete { cache_type: c.take_str(ATTR_CACHE_TYPE)?, cache_id: c.take_str(ATTR_CACHE_ID)? }
            }
            RequestKind::TicketKey => Request::TicketKey {
                // Not secret: the name travels in clear inside every ticket.
                key_name: c.take_data(ATTR_KEYNAME)?.to_vec(),
            },
            RequestKind::Take => {
                Request::Take { cache_type: c.take_str(ATTR_CACHE_TYPE)?, cache_id: c.take_str(ATTR_CACHE_ID)? }
            }
            RequestKind::Seal => Request::Seal { plaintext: c.take_data(ATTR_PLAINTEXT)? },
            // Not secret: a ticket is what travels in clear on the network.
            RequestKind::Open => Request::Open { ticket: c.take_data(ATTR_TICKET)?.to_vec() },
        };
        c.finish()?;
        Ok(request)
    }

    /// Encodes the request as `tls_mgr.c` sends it (client direction).
    ///
    /// A `cache_type` or `cache_id` containing NUL cannot be sent; the
    /// encoder (`super::attr0::encode`) reports it.
    pub fn to_frame(&self) -> Frame {
        let mut f = Frame::new();
        f.push_str(ATTR_REQUEST, self.kind().name());
        match self {
            Request::Seed { size } => {
                f.push_int(ATTR_SIZE, *size);
            }
            Request::Policy { cache_type } => {
                f.push_str(ATTR_CACHE_TYPE, cache_type);
            }
            Request::Lookup { cache_type, cache_id }
            | Request::Delete { cache_type, cache_id }
            | Request::Take { cache_type, cache_id } => {
                f.push_str(ATTR_CACHE_TYPE, cache_type).push_str(ATTR_CACHE_ID, cache_id);
            }
            Request::Update { cache_type, cache_id, session } => {
                f.push_str(ATTR_CACHE_TYPE, cache_type)
                    .push_str(ATTR_CACHE_ID, cache_id)
                    .push_data(ATTR_SESSION, session);
            }
            Request::TicketKey { key_name } => {
                f.push_data(ATTR_KEYNAME, key_name);
            }
            Request::Seal { plaintext } => {
                f.push_data(ATTR_PLAINTEXT, plaintext);
            }
            Request::Open { ticket } => {
                f.push_data(ATTR_TICKET, ticket);
            }
        }
        f
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Seed { size } => f.debug_struct("Seed").field("size", size).finish(),
            Request::Policy { cache_type } => f.debug_struct("Policy").field("cache_type", cache_type).finish(),
            Request::Lookup { cache_type, cache_id } => {
                f.debug_struct("Lookup").field("cache_type", cache_type).field("cache_id", cache_id).finish()
            }
            Request::Update { cache_type, cache_id, session } => f
                .debug_struct("Update")
                .field("cache_type", cache_type)
                .field("cache_id", cache_id)
                .field("session", &Redacted(session.len()))
                .finish(),
            Request::Delete { cache_type, cache_id } => {
                f.debug_struct("Delete").field("cache_type", cache_type).field("cache_id", cache_id).finish()
            }
            Request::TicketKey { key_name } => {
                f.debug_struct("TicketKey").field("key_name", &hex::encode(key_name)).finish()
            }
            Request::Take { cache_type, cache_id } => {
                f.debug_struct("Take").field("cache_type", cache_type).field("cache_id", cache_id).finish()
            }
            Request::Seal { plaintext } => {
                f.debug_struct("Seal").field("plaintext", &Redacted(plaintext.len())).finish()
            }
            Request::Open { ticket } => f.debug_struct("Open").field("ticket", &Redacted(ticket.len())).finish(),
        }
    }
}

/// Why a list is not a well-formed request, and so which reply it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The list is empty or its first attribute is not `request`. tlsmgr
    /// answers a bare `status=FAIL` (its protocol-error branch).
    #[error("not a tlsmgr request: first attribute is {}", .found.as_deref().unwrap_or("(end of list)"))]
    NotARequest {
        /// The first attribute's name, escaped and truncated; `None` for an
        /// empty list.
        found: Option<String>,
    },
    /// `request` names no tlsmgr request. tlsmgr 3.7 sends no reply at all
    /// (the client then hangs until `ipc_timeout`); answering a bare
    /// `status=FAIL` is the fix.
    #[error("unknown tlsmgr request \"{name}\"")]
    UnknownRequest {
        /// The `request` value, escaped and truncated.
        name: String,
    },
    /// A known request whose other attributes are missing, extra, out of
    /// order or malformed. Answered with that request's full failure reply,
    /// [`Reply::failure`].
    #[error("malformed tlsmgr {kind} request: {error}")]
    Malformed {
        /// The request type, from the `request` attribute.
        kind: RequestKind,
        /// What is wrong.
        #[source]
        error: AttrError,
    },
}

impl RequestError {
    /// The request type, when the `request` attribute named a known one.
    pub fn kind(&self) -> Option<RequestKind> {
        match self {
            RequestError::Malformed { kind, .. } => Some(*kind),
            RequestError::NotARequest { .. } | RequestError::UnknownRequest { .. } => None,
        }
    }

    /// The reply the server must send for this error:
    /// [`Reply::failure`] of the request type if known, else a bare `FAIL`.
    pub fn reply(&self) -> Reply {
        match self.kind() {
            Some(kind) => Reply::failure(kind),
            None => Reply::Bare { status: Status::Fail },
        }
    }
}

/// What is wrong with one attribute of a request or reply, relative to the
/// exact sequence expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    /// The list ended before this attribute.
    #[error("missing attribute {expected}")]
    Missing {
        /// The attribute expected next.
        expected: &'static str,
    },
    /// Another attribute stands where this one was expected (wrong order,
    /// duplicate or unknown name).
    #[error("unexpected attribute {found} (expecting {expected})")]
    Unexpected {
        /// The attribute expected next.
        expected: &'static str,
        /// The name found, escaped and truncated.
        found: String,
    },
    /// An attribute follows the last expected one.
    #[error("unexpected extra attribute {found}")]
    Extra {
        /// The name found, escaped and truncated.
        found: String,
    },
    /// A STR value is not UTF-8.
    #[error("attribute {attr} is not valid UTF-8")]
    NonUtf8 {
        /// The attribute's name.
        attr: &'static str,
    },
    /// An INT value is not canonical unsigned decimal within `u32`.
    #[error("attribute {attr} is not an unsigned 32-bit decimal number")]
    BadNumber {
        /// The attribute's name.
        attr: &'static str,
    },
    /// A DATA value is not canonical padded standard base64.
    #[error("attribute {attr} is not valid base64")]
    BadBase64 {
        /// The attribute's name.
        attr: &'static str,
    },
}

/// A tlsmgr reply.
///
/// Each variant holds exactly the attributes the Postfix client scans for
/// that request, in order; `status` always comes first and the data
/// attribute is always present, even on `Err`/`Fail`, because the client
/// counts conversions (`tls_mgr.c`: `!= 2`, `!= 3`) and treats a short reply
/// as a failed call, retried after a one-second sleep. Secret data fields
/// are [`Zeroizing`]; `Debug` prints only their lengths.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// `status=INT seed=DATA`.
    Seed {
        /// Outcome.
        status: Status,
        /// The random bytes (empty unless `Ok`); secret.
        seed: Zeroizing<Vec<u8>>,
    },
    /// `status=INT cachable=INT timeout=INT`.
    Policy {
        /// Outcome.
        status: Status,
        /// Whether the cache is enabled (wire `1`/`0`).
        cachable: bool,
        /// The cache timeout in seconds; reported even when not cachable,
        /// since session tickets depend on it.
        timeout: u32,
    },
    /// `status=INT session=DATA`.
    Lookup {
        /// Outcome: `Err` for not found.
        status: Status,
        /// The DER `SSL_SESSION` (empty unless `Ok`); secret.
        session: Zeroizing<Vec<u8>>,
    },
    /// `status=INT`.
    Update {
        /// Outcome.
        status: Status,
    },
    /// `status=INT`.
    Delete {
        /// Outcome: `Err` for not present.
        status: Status,
    },
    /// `status=INT keybuf=DATA`.
    TicketKey {
        /// Outcome.
        status: Status,
        /// On `Ok`, the 88-byte `TLS_TICKET_KEY` (the daemon's `keybuf` module); on
        /// `Err` for an unknown name, tlsmgr echoes the 16-byte name; else
        /// empty. Secret when `Ok`.
        keybuf: Zeroizing<Vec<u8>>,
    },
    /// `status=INT session=DATA`, as for `lookup`.
    Take {
        /// Outcome: `Err` for not found.
        status: Status,
        /// The session (empty unless `Ok`); secret.
        session: Zeroizing<Vec<u8>>,
    },
    /// `status=INT ticket=DATA lifetime=INT`.
    Seal {
        /// Outcome.
        status: Status,
        /// The sealed ticket (empty unless `Ok`).
        ticket: Vec<u8>,
        /// Seconds the ticket is sure to open for (0 unless `Ok`).
        lifetime: u32,
    },
    /// `status=INT plaintext=DATA`.
    Open {
        /// Outcome: `Err` for a ticket that does not open, whatever the
        /// reason (no oracle).
        status: Status,
        /// The ticket's plaintext (empty unless `Ok`); secret.
        plaintext: Zeroizing<Vec<u8>>,
    },
    /// `status=INT` alone: the answer to a list that is not a request of a
    /// known type ([`RequestError::NotARequest`],
    /// [`RequestError::UnknownRequest`]).
    Bare {
        /// Always `Fail` when sent by a server.
        status: Status,
    },
}

impl Reply {
    /// The `FAIL` reply for a malformed request of type `kind`, in the shape
    /// tlsmgr 3.7 sends when its second `attr_scan` in `tlsmgr_service()`
    /// fails:
    ///
    /// | request | tlsmgr 3.7 | this |
    /// |---|---|---|
    /// | `seed` | `status=FAIL seed=<static buffer>` | `seed` empty |
    /// | `policy` | `status=FAIL cachable=0 timeout=0` | same |
    /// | `lookup` | `status=FAIL session=<static buffer>` | `session` empty |
    /// | `update` | `status=FAIL` | same |
    /// | `delete` | `status=FAIL` | same |
    /// | `tktkey` | `status=FAIL keybuf=<static buffer>` | `keybuf` empty |
    ///
    /// The static buffer is shared by all requests, so 3.7 leaks the previous
    /// request's session, seed or ticket key (for `tktkey`, possibly a
    /// half-decoded key name); clients ignore the data unless the status is
    /// `Ok`, so sending it empty is compatible. The same shapes serve the
    /// service's own `FAIL` answers (unknown or disabled cache, bad seed
    /// size or key-name length).
    pub fn failure(kind: RequestKind) -> Reply {
        let status = Status::Fail;
        match kind {
            RequestKind::Seed => Reply::Seed { status, seed: Zeroizing::default() },
            RequestKind::Policy => Reply::Policy { status, cachable: false, timeout: 0 },
            RequestKind::Lookup => Reply::Lookup { status, session: Zeroizing::default() },
            RequestKind::Update => Reply::Update { status },
            RequestKind::Delete => Reply::Delete { status },
            RequestKind::TicketKey => Reply::TicketKey { status, keybuf: Zeroizing::default() },
            RequestKind::Take => Reply::Take { status, session: Zeroizing::default() },
            RequestKind::Seal => Reply::Seal { status, ticket: Vec::new(), lifetime: 0 },
            RequestKind::Open => Reply::Open { status, plaintext: Zeroizing::default() },
        }
    }

    /// The reply's status.
    pub fn status(&self) -> Status {
        match self {
            Reply::Seed { status, .. }
            | Reply::Policy { status, .. }
            | Reply::Lookup { status, .. }
            | Reply::Update { status }
            | Reply::Delete { status }
            | Reply::TicketKey { status, .. }
            | Reply::Take { status, .. }
            | Reply::Seal { status, .. }
            | Reply::Open { status, .. }
            | Reply::Bare { status } => *status,
        }
    }

    /// The request type this reply answers; `None` for [`Reply::Bare`].
    pub fn kind(&self) -> Option<RequestKind> {
        match self {
            Reply::Seed { .. } => Some(RequestKind::Seed),
            Reply::Policy { .. } => Some(RequestKind::Policy),
            Reply::Lookup { .. } => Some(RequestKind::Lookup),
            Reply::Update { .. } => Some(RequestKind::Update),
            Reply::Delete { .. } => Some(RequestKind::Delete),
            Reply::TicketKey { .. } => Some(RequestKind::TicketKey),
            Reply::Take { .. } => Some(RequestKind::Take),
            Reply::Seal { .. } => Some(RequestKind::Seal),
            Reply::Open { .. } => Some(RequestKind::Open),
            Reply::Bare { .. } => None,
        }
    }

    /// Encodes the reply in the order the client scans it.
    pub fn to_frame(&self) -> Frame {
        let mut f = Frame::new();
        f.push_int(ATTR_STATUS, self.status().to_wire());
        match self {
            Reply::Seed { seed, .. } => {
                f.push_data(ATTR_SEED, seed);
            }
            Reply::Policy { cachable, timeout, .. } => {
                f.push_int(ATTR_CACHABLE, u32::from(*cachable)).push_int(ATTR_TIMEOUT, *timeout);
            }
            Reply::Lookup { session, .. } | Reply::Take { session, .. } => {
                f.push_data(ATTR_SESSION, session);
            }
            Reply::Seal { ticket, lifetime, .. } => {
                f.push_data(ATTR_TICKET, ticket).push_int(ATTR_LIFETIME, *lifetime);
            }
            Reply::Open { plaintext, .. } => {
                f.push_data(ATTR_PLAINTEXT, plaintext);
            }
            Reply::TicketKey { keybuf, .. } => {
                f.push_data(ATTR_KEYBUF, keybuf);
            }
            Reply::Update { .. } | Reply::Delete { .. } | Reply::Bare { .. } => {}
        }
        f
    }

    /// Decodes the reply to a request of type `kind` (client direction).
    ///
    /// Stricter than the Postfix client, which skips unknown attributes and
    /// ignores trailing ones: tools built on this are meant to catch a
    /// server that deviates from tlsmgr's exact reply shape.
    pub fn from_frame(kind: RequestKind, frame: &Frame) -> Result<Reply, ReplyError> {
        let mut c = Cursor::new(&frame.attrs);
        let status = take_status(&mut c)?;
        let reply = match kind {
            RequestKind::Seed => Reply::Seed { status, seed: c.take_data(ATTR_SEED)? },
            RequestKind::Policy => {
                let cachable = match c.take_u32(ATTR_CACHABLE)? {
                    0 => false,
                    1 => true,
                    value => return Err(ReplyError::BadCachable { value }),
                };
                Reply::Policy { status, cachable, timeout: c.take_u32(ATTR_TIMEOUT)? }
            }
            RequestKind::Lookup => Reply::Lookup { status, session: c.take_data(ATTR_SESSION)? },
            RequestKind::Update => Reply::Update { status },
            RequestKind::Delete => Reply::Delete { status },
            RequestKind::TicketKey => Reply::TicketKey { status, keybuf: c.take_data(ATTR_KEYBUF)? },
            RequestKind::Take => Reply::Take { status, session: c.take_data(ATTR_SESSION)? },
            RequestKind::Seal => {
                Reply::Seal { status, ticket: c.take_data(ATTR_TICKET)?.to_vec(), lifetime: c.take_u32(ATTR_LIFETIME)? }
            }
            RequestKind::Open => Reply::Open { status, plaintext: c.take_data(ATTR_PLAINTEXT)? },
        };
        c.finish()?;
        Ok(reply)
    }

    /// Decodes a reply that is a status alone ([`Reply::Bare`]), the answer
    /// to a list that is not a known request.
    pub fn bare_from_frame(frame: &Frame) -> Result<Reply, ReplyError> {
        let mut c = Cursor::new(&frame.attrs);
        let status = take_status(&mut c)?;
        c.finish()?;
        Ok(Reply::Bare { status })
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Seed { status, seed } => {
                f.debug_struct("Seed").field("status", status).field("seed", &Redacted(seed.len())).finish()
            }
            Reply::Policy { status, cachable, timeout } => f
                .debug_struct("Policy")
                .field("status", status)
                .field("cachable", cachable)
                .field("timeout", timeout)
                .finish(),
            Reply::Lookup { status, session } => {
                f.debug_struct("Lookup").field("status", status).field("session", &Redacted(session.len())).finish()
            }
            Reply::Update { status } => f.debug_struct("Update").field("status", status).finish(),
            Reply::Delete { status } => f.debug_struct("Delete").field("status", status).finish(),
            Reply::TicketKey { status, keybuf } => {
                f.debug_struct("TicketKey").field("status", status).field("keybuf", &Redacted(keybuf.len())).finish()
            }
            Reply::Take { status, session } => {
                f.debug_struct("Take").field("status", status).field("session", &Redacted(session.len())).finish()
            }
            Reply::Seal { status, ticket, lifetime } => f
                .debug_struct("Seal")
                .field("status", status)
                .field("ticket", &Redacted(ticket.len()))
                .field("lifetime", lifetime)
                .finish(),
            Reply::Open { status, plaintext } => {
                f.debug_struct("Open").field("status", status).field("plaintext", &Redacted(plaintext.len())).finish()
            }
            Reply::Bare { status } => f.debug_struct("Bare").field("status", status).finish(),
        }
    }
}

/// Why a list is not the expected reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// An attribute is missing, extra, out of order or malformed.
    #[error(transparent)]
    Attr(#[from] AttrError),
    /// `status` is a number but not one of the three statuses.
    #[error("unknown status {value}")]
    UnknownStatus {
        /// The wire value.
        value: u32,
    },
    /// `cachable` is neither 0 nor 1.
    #[error("cachable is {value}, expected 0 or 1")]
    BadCachable {
        /// The wire value.
        value: u32,
    },
}

fn take_status(c: &mut Cursor<'_>) -> Result<Status, ReplyError> {
    let value = c.take_u32(ATTR_STATUS)?;
    Status::from_wire(value).ok_or(ReplyError::UnknownStatus { value })
}

/// Reads attributes in a fixed order, as `attr_scan` with
/// `ATTR_FLAG_STRICT` does.
struct Cursor<'a> {
    attrs: &'a [(String, Vec<u8>)],
}

impl<'a> Cursor<'a> {
    fn new(attrs: &'a [(String, Vec<u8>)]) -> Self {
        Self { attrs }
    }

    /// The raw value of the next attribute, which must be `expected`.
    fn take(&mut self, expected: &'static str) -> Result<&'a [u8], AttrError> {
        match self.attrs.split_first() {
            Some(((name, value), rest)) if name == expected => {
                self.attrs = rest;
                Ok(value)
            }
            Some(((name, _), _)) => Err(AttrError::Unexpected { expected, found: shown(name.as_bytes()) }),
            None => Err(AttrError::Missing { expected }),
        }
    }

    fn take_str(&mut self, attr: &'static str) -> Result<String, AttrError> {
        let value = self.take(attr)?;
        String::from_utf8(value.to_vec()).map_err(|_| AttrError::NonUtf8 { attr })
    }

    fn take_u32(&mut self, attr: &'static str) -> Result<u32, AttrError> {
        parse_u32(self.take(attr)?).ok_or(AttrError::BadNumber { attr })
    }

    fn take_data(&mut self, attr: &'static str) -> Result<Zeroizing<Vec<u8>>, AttrError> {
        decode_base64(self.take(attr)?).ok_or(AttrError::BadBase64 { attr })
    }

    /// Succeeds if every attribute has been taken.
    fn finish(self) -> Result<(), AttrError> {
        match self.attrs.first() {
            Some((name, _)) => Err(AttrError::Extra { found: shown(name.as_bytes()) }),
            None => Ok(()),
        }
    }
}

/// Parses canonical unsigned decimal: ASCII digits only, no leading zero
/// (except `0` itself), at most `u32::MAX`.
///
/// Deliberately stricter than Postfix's `sscanf("%u%c")`, which under glibc
/// accepts a sign, leading spaces and wraps out-of-range values; and than
/// `str::parse::<u32>`, which accepts a leading `+`.
fn parse_u32(digits: &[u8]) -> Option<u32> {
    match digits {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ => digits.iter().try_fold(0u32, |acc, &b| {
            if !b.is_ascii_digit() {
                return None;
            }
            acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
        }),
    }
}

/// Decodes canonical standard base64 (padded, no whitespace, zero trailing
/// bits), the only form Postfix's `base64_encode` produces.
///
/// Postfix's decoder is laxer: it stops silently at the first `=` (so
/// `AA==AAAA` decodes to one byte) and ignores non-zero trailing bits. The
/// `base64` crate's `STANDARD` engine rejects both, which is the intent.
/// The output is allocated at its final size, zeroized on drop, and never
/// reallocated, so no stray copy of a secret is left in freed memory.
fn decode_base64(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(text.len())]);
    let len = STANDARD.decode_slice(text, &mut out[..]).ok()?;
    out.truncate(len);
    Some(out)
}

/// Makes attacker-supplied bytes safe to log: ASCII-escaped and cut at 64
/// input bytes.
fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let mut s: String = bytes.iter().take(MAX).flat_map(|b| b.escape_ascii()).map(char::from).collect();
    if bytes.len() > MAX {
        s.push_str("...");
    }
    s
}

/// Debug stand-in for a secret: its length only.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

#[cfg(test)]
mod tests;
