//! The Redis backend over TLS (`rediss://`), against a real `redis-server`
//! with a TLS port on loopback (Debian's package is built with TLS): the
//! storage contract through connections that verify the server's
//! certificate with [`RedisOptions::ca_file`], and the connections that
//! must fail, each bounded by the timeout and saying what to fix. Every
//! test makes its own throwaway CA, and a certificate it signs for
//! 127.0.0.1, with the `openssl` command line in a temporary directory.
//!
//! # Security
//!
//! The CA's key lives for one test, in its temporary directory, and no
//! system root trusts the CA: the refusals depend on that.
//!
//! # Limitations
//!
//! - The server asks for no client certificate (`--tls-auth-clients no`):
//!   the backend has no setting for one.
//! - One server, not a cluster: `cluster_tests.rs` reaches a cluster over
//!   plain TCP only.

use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::cluster_tests::{free_ports, wait_for};
use super::tests::Server;
use super::*;

/// P-256 keys: made in milliseconds, unlike RSA.
const NEW_KEY: [&str; 6] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-batch"];

/// A throwaway CA (`ca.pem`, `ca.key`) and a server certificate it signed
/// for 127.0.0.1 only (`server.pem`, `server.key`), in a temporary
/// directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().unwrap() };
        pki.new_ca("ca");
        pki.openssl(&[
            &["req", "-new"],
            &NEW_KEY[..],
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ]);
        let extensions = "basicConstraints = critical, CA:FALSE\n\
                          extendedKeyUsage = serverAuth\n\
                          subjectAltName = IP:127.0.0.1\n";
        std::fs::write(pki.path("server.ext"), extensions).unwrap();
        pki.openssl(&[
            &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2"],
            &["-days", "1", "-extfile", "server.ext", "-out", "server.pem"],
        ]);
        pki
    }

    /// A new self-signed CA, `NAME.pem` (and its key, `NAME.key`).
    fn new_ca(&self, name: &str) -> PathBuf {
        let subject = format!("/CN=tlskeeper test CA {name}");
        let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
        self.openssl(&[
            &["req", "-x509"],
            &NEW_KEY[..],
            &["-keyout", &key, "-out", &cert, "-days", "1", "-subj", &subject],
            &[
                "-addext",
                "basicConstraints = critical, CA:TRUE",
                "-addext",
                "keyUsage = critical, keyCertSign, cRLSign",
            ],
        ]);
        self.path(&cert)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// [`Pki::path`] as a `redis-server` argument.
    fn arg(&self, file: &str) -> String {
        self.path(file).to_str().expect("a UTF-8 temporary directory").to_owned()
    }

    /// Run `openssl` with the arguments, in the directory; it must succeed.
    fn openssl(&self, args: &[&[&str]]) {
        let args = args.concat();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl must be installed (scripts/setup installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A [`Server`] that also listens for TLS on a loopback port, with a
/// certificate from its own [`Pki`]. No plaintext TCP port: its UNIX
/// socket, plaintext, is for looking behind the backend's back.
struct TlsServer {
    server: Server,
    pki: Pki,
    port: u16,
}

impl TlsServer {
    fn start() -> TlsServer {
        let pki = Pki::new();
        let port = free_ports(1)[0];
        let server = Server::start_with(&[
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &pki.arg("server.pem"),
            "--tls-key-file",
            &pki.arg("server.key"),
            "--tls-ca-cert-file",
            &pki.arg("ca.pem"),
            "--tls-auth-clients",
            "no",
        ]);
        wait_for(|| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok(), "the TLS port to listen");
        TlsServer { server, pki, port }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    /// `rediss://` to the TLS port, trusting the server's CA.
    fn options(&self) -> RedisOptions {
        RedisOptions { ca_file: Some(self.pki.path("ca.pem")), ..RedisOptions::new(self.url()) }
    }

    fn store(&self) -> RedisStorage {
        RedisStorage::connect(self.options()).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// `options` must not connect; what the error says, and how long it took.
fn refused(options: RedisOptions) -> (String, Duration) {
    let started = Instant::now();
    let e = RedisStorage::connect(options).expect_err("the connection is refused").to_string();
    (e, started.elapsed())
}

/// Through `rediss://` with the server's CA: the contract, two nodes on
/// one table, and the sealed store a node puts on top, all on the server
/// the plaintext socket sees.
#[test]
fn the_storage_contract_holds_over_tls_with_a_ca_file() {
    use crate::storage::kek::Kek;
    use crate::storage::sealed::Sealed;
    let server = TlsServer::start();
    crate::storage::contract::put_get_replace_delete(&mut server.store());
    crate::storage::contract::scan_in_order(&mut server.store());
    let (mut a, mut b) = (server.store(), server.store());
    assert!(!a.is_empty().unwrap());
    a.put("u", b"k1", b"aaaa").unwrap();
    b.put("u", b"k2", b"bb").unwrap();
    assert_eq!(b.get("u", b"k1").unwrap().as_deref(), Some(&b"aaaa"[..]));
    assert_eq!(a.stat("u").unwrap(), TableStat { entries: 2, bytes: 2 + 4 + 2 + 2 });
    let mut sealed = Sealed::open(server.store(), Kek::from_bytes([7; 32]), "redis", true).unwrap();
    sealed.put("sealed", b"k", b"v").unwrap();
    let mut again = Sealed::open(server.store(), Kek::from_bytes([7; 32]), "redis", true).unwrap();
    assert_eq!(again.get("sealed", b"k").unwrap().as_deref(), Some(&b"v"[..]));
    let tables: BTreeSet<String> =
        redis::cmd("SMEMBERS").arg(layout::registry("tlskeeper")).query(&mut server.server.raw()).unwrap();
    for table in ["t", "other", "u", "sealed"] {
        assert!(tables.contains(table), "{table} is not in the server's registry: {tables:?}");
    }
}

/// A certificate that does not verify stops the start at once, naming the
/// store and the fix: no CA file (no system root signed it), the CA file
/// of another CA, and the right CA but a host name the certificate does
/// not name.
#[test]
fn a_certificate_that_does_not_verify_is_refused_with_the_fix() {
    let server = TlsServer::start();
    let url = server.url();
    let (e, took) = refused(RedisOptions::new(&url));
    assert!(e.contains(&format!("cannot use the Redis store at {url}")), "{e}");
    assert!(e.contains("UnknownIssuer") && e.contains("no CA this system trusts"), "{e}");
    assert!(e.contains("set store_ca_file to the PEM file of the CA"), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    let other = server.pki.new_ca("other");
    let (e, _) = refused(RedisOptions { ca_file: Some(other.clone()), ..server.options() });
    assert!(e.contains(&url) && e.contains("UnknownIssuer"), "{e}");
    assert!(e.contains(&format!("the CA in store_ca_file {} did not sign", other.display())), "{e}");

    // Resolves to 127.0.0.1, which the certificate names; "localhost" it
    // does not.
    let by_name = format!("rediss://localhost:{}/0", server.port);
    let (e, _) = refused(RedisOptions { url: by_name.clone(), ..server.options() });
    assert!(e.contains(&by_name) && e.contains("does not name the host in the store URL"), "{e}");

    // The right CA still connects.
    server.store().put("t", b"k", b"v").unwrap();
}

/// `redis://` to the TLS port: the server closes the connection at once,
/// and the error says to use `rediss://`; no wait for the timeout.
#[test]
fn plaintext_to_the_tls_port_fails_at_once_with_the_fix() {
    let server = TlsServer::start();
    let url = format!("redis://127.0.0.1:{}/0", server.port);
    let (e, took) = refused(RedisOptions { timeout: Duration::from_secs(5), ..RedisOptions::new(&url) });
    assert!(e.contains(&format!("cannot use the Redis store at {url}")) && e.contains("use rediss://"), "{e}");
    assert!(took < Duration::from_secs(2), "took {took:?}, as if waiting for the 5 s timeout");
}

/// `rediss://` to a port without TLS: the server reads the TLS hello as
/// the start of an inline command and waits for its end of line (it looks
/// no further than the hello's first NUL byte), so the start waits out the
/// timeout, once, and the error says to use `redis://`.
#[test]
fn tls_to_a_plaintext_port_costs_one_timeout_with_the_fix() {
    let port = free_ports(1)[0];
    let _server = Server::start_with(&["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    wait_for(|| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok(), "the port to listen");
    let pki = Pki::new();
    let url = format!("rediss://127.0.0.1:{port}/0");
    let timeout = Duration::from_millis(300);
    let (e, took) = refused(RedisOptions { ca_file: Some(pki.path("ca.pem")), timeout, ..RedisOptions::new(&url) });
    assert!(e.contains(&url) && e.contains("no answer within 300 ms") && e.contains("use redis://"), "{e}");
    assert!(took >= timeout && took < Duration::from_secs(2), "took {took:?}");
}
