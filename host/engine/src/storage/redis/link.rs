//! Reaching Redis: the client for a store's settings, and the one kind of
//! connection the backend talks through, whether to one server or to a
//! Redis Cluster.
//!
//! [`dialer_for`] turns [`RedisOptions`] into a [`Dialer`]: a `redis`
//! crate client for one server (`redis://`, `rediss://`, `redis+unix://`),
//! or a cluster client seeded with one or more nodes of a cluster (the
//! nodes' `redis://` or `rediss://` URLs, comma-separated, with
//! [`RedisOptions::cluster`]). A [`Link`] is what either opens; the backend
//! sends its commands and scripts through it without knowing which. When a
//! call fails, [`explain`] says what to fix where the client's own words
//! do not: a certificate that does not verify, TLS on one side only, a
//! server that does not answer in time.
//!
//! In a cluster the client learns which node holds which hash slot, and
//! follows a `MOVED` or `ASK` redirection once per call. Every table's keys
//! share one hash tag (see [`super::layout`]), so each script touches one
//! slot and runs on one node.
//!
//! # Security
//!
//! The password is read here, from a file only its owner may read, and is
//! handed to the client, which keeps it to reconnect; a URL carrying one is
//! refused. Locations are logged through [`redacted`], which drops user
//! names and passwords.
//!
//! # Limitations
//!
//! - A cluster call may wait longer than [`RedisOptions::timeout`]: a
//!   redirection, or a node that died, costs the client a new connection
//!   and a fresh slot map, each bounded by the timeout; one retry is
//!   allowed, so a call waits at most a few timeouts.
//! - Cluster nodes are reached over TCP only (the addresses the cluster
//!   announces): no UNIX socket, and database 0 only, as Redis Cluster has
//!   no other.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::{Client, Connection, ConnectionAddr, ConnectionInfo, ConnectionLike, IntoConnectionInfo, RedisError};
use redis::{RedisResult, Value};
use zeroize::Zeroizing;

use super::{RedisOptions, RedisSetupError, layout};

/// What opens connections: to one server, or into a cluster.
pub enum Dialer {
    /// One Redis server.
    Node(Client),
    /// A Redis Cluster, from its seed nodes.
    Cluster(ClusterClient),
}

impl Dialer {
    /// A new connection, every wait bounded by `timeout`.
    pub fn open(&self, timeout: Duration) -> RedisResult<Link> {
        match self {
            Dialer::Node(client) => {
                let con = client.get_connection_with_timeout(timeout)?;
                con.set_read_timeout(Some(timeout))?;
                con.set_write_timeout(Some(timeout))?;
                Ok(Link::Node(con))
            }
            // The cluster client's timeouts were set when it was built.
            Dialer::Cluster(client) => Ok(Link::Cluster(Box::new(client.get_connection()?))),
        }
    }
}

/// A connection to one server, or to a cluster (one per node it has used).
pub enum Link {
    /// To one server.
    Node(Connection),
    /// Into a cluster (boxed: its slot map and per-node connections make
    /// it many times the size of one connection).
    Cluster(Box<ClusterConnection>),
}

impl Link {
    fn inner(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Link::Node(con) => con,
            Link::Cluster(con) => con.as_mut(),
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.inner().req_packed_command(cmd)
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        self.inner().req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Node(con) => con.get_db(),
            Link::Cluster(con) => con.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        self.inner().check_connection()
    }

    fn is_open(&self) -> bool {
        match self {
            Link::Node(con) => con.is_open(),
            Link::Cluster(con) => con.is_open(),
        }
    }
}

/// The dialer for `options`, and the location to log.
///
/// # Errors
///
/// [`RedisSetupError`] naming what is wrong with the settings.
pub fn dialer_for(options: &RedisOptions) -> Result<(Dialer, String), RedisSetupError> {
    if options.prefix.is_empty() || options.prefix.len() > 64 || !layout::table_name_ok(&options.prefix) {
        return Err(RedisSetupError::BadPrefix(options.prefix.clone()));
    }
    let location = redacted(&options.url);
    let password = options.password_file.as_deref().map(read_password).transpose()?;
    // Read only once the URL is known to use TLS: a CA file without TLS
    // is the mistake to name, not a file that cannot be read.
    let ca = |tls: bool| -> Result<Option<Vec<u8>>, RedisSetupError> {
        match &options.ca_file {
            Some(_) if !tls => Err(RedisSetupError::CaWithoutTls(location.clone())),
            Some(path) => {
                Ok(Some(std::fs::read(path).map_err(|source| RedisSetupError::CaFile { path: path.clone(), source })?))
            }
            None => Ok(None),
        }
    };
    let client_error = |e: RedisError| RedisSetupError::Client { location: location.clone(), reason: e.to_string() };
    if options.cluster {
        let seeds =
            options.url.split(',').map(str::trim).map(|url| seed(url, options)).collect::<Result<Vec<_>, _>>()?;
        let tls = seeds.iter().any(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
        if tls != seeds.iter().all(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. })) {
            return Err(RedisSetupError::BadUrl {
                url: location,
                reason: "the cluster's seed nodes mix redis:// and rediss://".into(),
            });
        }
        let ca = ca(tls)?;
        // A short, bounded retry: one redirection or reconnection, waits
        // a fraction of the timeout (the crate's default is 16 retries
        // with waits of seconds, far past what a request may cost).
        let wait_ms = u64::try_from(options.timeout.as_millis() / 4).unwrap_or(u64::MAX).max(2);
        let mut builder = ClusterClientBuilder::new(seeds)
            .connection_timeout(options.timeout)
            .response_timeout(options.timeout)
            .retries(1)
            .min_retry_wait(1)
            .max_retry_wait(wait_ms);
        if let Some(password) = &password {
            builder = builder.password(password.as_str());
        }
        if let Some(pem) = ca {
            install_crypto_provider();
            builder = builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(pem) });
        } else if tls {
            install_crypto_provider();
        }
        return Ok((Dialer::Cluster(builder.build().map_err(client_error)?), location));
    }

    let info = parse(&options.url)?;
    let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    let info = match (info.addr(), &options.jail) {
        (ConnectionAddr::Unix(socket), Some(jail)) => {
            let inside = socket
                .strip_prefix(jail)
                .map_err(|_| RedisSetupError::SocketOutsideJail { socket: socket.clone(), jail: jail.clone() })?;
            let relative = ConnectionAddr::Unix(inside.to_owned());
            info.clone().set_addr(relative)
        }
        _ => info,
    };
    let info = match &password {
        Some(password) => {
            let settings = info.redis_settings().clone().set_password(password.as_str());
            info.set_redis_settings(settings)
        }
        None => info,
    };
    let client = match ca(tls)? {
        Some(pem) => {
            install_crypto_provider();
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
            Client::build_with_tls(info, certs).map_err(client_error)?
        }
        None => {
            if tls {
                install_crypto_provider();
            }
            Client::open(info).map_err(client_error)?
        }
    };
    Ok((Dialer::Node(client), location))
}

/// One URL, parsed, with no password in it.
fn parse(url: &str) -> Result<ConnectionInfo, RedisSetupError> {
    let info = url
        .into_connection_info()
        .map_err(|e| RedisSetupError::BadUrl { url: redacted(url), reason: e.to_string() })?;
    if info.redis_settings().password().is_some() {
        return Err(RedisSetupError::PasswordInUrl(redacted(url)));
    }
    Ok(info)
}

/// A cluster seed node: TCP, database 0.
fn seed(url: &str, options: &RedisOptions) -> Result<ConnectionInfo, RedisSetupError> {
    let info = parse(url)?;
    let refuse = |reason: &str| RedisSetupError::BadUrl { url: redacted(&options.url), reason: reason.into() };
    match info.addr() {
        ConnectionAddr::Unix(_) => Err(refuse("a cluster's nodes are reached over TCP: give redis://HOST:PORT")),
        _ if info.redis_settings().db() != 0 => Err(refuse("Redis Cluster has database 0 only")),
        _ => Ok(info),
    }
}

/// The password in `path`: its first line, from a file that only its owner
/// may read.
fn read_password(path: &Path) -> Result<Zeroizing<String>, RedisSetupError> {
    use std::os::unix::fs::MetadataExt;
    let failed = |reason: String| RedisSetupError::PasswordFile { path: PathBuf::from(path), reason };
    let mode = std::fs::metadata(path).map_err(|e| failed(e.to_string()))?.mode();
    if mode & 0o077 != 0 {
        return Err(failed(format!("its mode {:04o} lets others read it; chmod 600 it", mode & 0o7777)));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?);
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(failed("it is empty; write the password on its first line".into()));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// `e`, met on the server `options` name, in words that say what to do
/// where the client's alone would not: a certificate that does not verify
/// (which CA, which name, which dates), a client without TLS at a TLS port
/// (closed at once), a TLS client at a port without it, or a server that
/// does not answer in time (which the client calls "Resource temporarily
/// unavailable").
pub fn explain(options: &RedisOptions, e: &RedisError) -> String {
    use rustls::CertificateError as Cert;
    let scheme = options.url.trim_start().split_once("://").map_or("", |(scheme, _)| scheme);
    let tls = scheme == "rediss";
    if let Some(rustls::Error::InvalidCertificate(why)) = tls_error(e) {
        let fix = match (why, &options.ca_file) {
            (Cert::UnknownIssuer | Cert::BadSignature, None) => {
                "no CA this system trusts signed the server's certificate: set store_ca_file to the PEM file of the CA that did".into()
            }
            (Cert::UnknownIssuer | Cert::BadSignature, Some(file)) => format!(
                "the CA in store_ca_file {} did not sign the server's certificate: set store_ca_file to the PEM file of the CA that did",
                file.display()
            ),
            (Cert::NotValidForName | Cert::NotValidForNameContext { .. }, _) => {
                "the server's certificate does not name the host in the store URL: use a name or address it names, or give the server a certificate that names this one (subjectAltName)".into()
            }
            (Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet | Cert::NotValidYetContext { .. }, _) => {
                "check the dates of the server's certificate, and this host's clock".into()
            }
            _ => return e.to_string(),
        };
        return format!("{e}; {fix}");
    }
    if e.is_timeout() {
        let waited = format!("no answer within {} ms", options.timeout.as_millis());
        return if tls { format!("{waited}; if that port does not use TLS, use redis://") } else { waited };
    }
    if scheme == "redis" && e.is_connection_dropped() && !e.is_connection_refusal() {
        return format!(
            "{e}; the server closed the connection, as a TLS port does to a client without TLS: if it is one, use rediss:// (and store_ca_file for a private CA)"
        );
    }
    e.to_string()
}

/// The TLS error behind `e`, if it is one: an I/O error around a rustls
/// error, which the client keeps behind an `Arc`.
fn tls_error(e: &RedisError) -> Option<&rustls::Error> {
    let inner = std::error::Error::source(e)?;
    let io = match inner.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>() {
        Some(shared) => (**shared).downcast_ref::<std::io::Error>()?,
        None => inner.downcast_ref::<std::io::Error>()?,
    };
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The redis client builds its TLS configuration from rustls's process-wide
/// provider, which must be chosen when more than one is compiled in (an
/// embedder may have ring beside aws-lc-rs). aws-lc-rs unless the process
/// chose already.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one meanwhile: fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// `url` (or comma-separated URLs) without user names, passwords or the
/// query parameters that carry them (`user`, `pass`, `password`), for logs
/// and messages.
pub fn redacted(url: &str) -> String {
    url.split(',').map(|one| redacted_one(one.trim())).collect::<Vec<_>>().join(",")
}

fn redacted_one(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (place, query) = rest.split_once('?').map_or((rest, None), |(p, q)| (p, Some(q)));
    // Userinfo ends at the last '@' before the path.
    let place = match place.split_once('/') {
        Some((authority, path)) => format!("{}/{path}", authority.rsplit_once('@').map_or(authority, |(_, h)| h)),
        None => place.rsplit_once('@').map_or(place, |(_, h)| h).to_owned(),
    };
    let kept: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !["user", "pass", "password"].contains(&p.split('=').next().unwrap_or_default()))
        .collect();
    let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    if kept.is_empty() { format!("{scheme}{place}") } else { format!("{scheme}{place}?{}", kept.join("&")) }
}
