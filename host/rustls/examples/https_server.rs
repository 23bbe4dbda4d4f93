//! https_server: a small HTTPS server whose sessions and tickets are shared
//! through tlskeeper, to show (and test) resumption across processes.
//!
//! ```sh
//! # a daemon with a cache for it (the defaults are smtpd, smtp and lmtp):
//! printf 'ticket_cache = "https"\n[caches.smtpd]\n[caches.https]\n' > /tmp/tlskeeper.toml
//! tlskeeper serve --config /tmp/tlskeeper.toml --socket /tmp/tlskeeper/tlsmgr &
//! # two workers:
//! https_server --socket /tmp/tlskeeper/tlsmgr --listen 127.0.0.1:8443 &
//! https_server --socket /tmp/tlskeeper/tlsmgr --listen 127.0.0.1:8444 &
//! openssl s_client -connect 127.0.0.1:8443 -sess_out /tmp/s -ign_eof <<< $'GET / HTTP/1.0\r\n\r\n'
//! openssl s_client -connect 127.0.0.1:8444 -sess_in /tmp/s -ign_eof <<< $'GET / HTTP/1.0\r\n\r\n'
//! # ... Reused, TLSv1.3 ... served by pid N on 127.0.0.1:8444, TLSv1_3, resumed: yes
//! ```
//!
//! `--embedded` runs a core in the process instead, through
//! [`tlskeeper_engine::Embedder`]: one cache named by `--cache`, whose
//! timeout (an hour) drives the ticket keys, in memory or, with
//! `--state-dir`, in a sealed store that keeps keys and sessions across
//! restarts. The process's own connections share its sessions; no other
//! process does.
//!
//! When ready it prints one line, `listening on ADDR`, on standard output;
//! each request (any, read up to its blank line) gets a plain-text answer,
//! `served by pid N on ADDR, TLSv1_3, resumed: yes`, saying which process
//! served it, the TLS version, and whether the handshake was a resumption.
//! SIGINT or SIGTERM stops it.
//!
//! # Security
//!
//! A demonstration: without `--cert`, a self-signed certificate for
//! `localhost` and `127.0.0.1` is made at start. No client authentication.
//!
//! # Limitations
//!
//! HTTP/1.0 only, one request per connection, no keep-alive. The adapters
//! block the runtime worker that runs a handshake for at most the
//! backend's bound ([`tlskeeper_rustls::RemoteOptions::handshake_bound`]).

use std::error::Error;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rustls::HandshakeKind;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;

use tlskeeper_engine::{Embedded, Embedder};
use tlskeeper_rustls::{Backend, RemoteOptions, SessionStore, Ticketer};

/// The flags.
#[derive(Parser)]
#[command(about = "An HTTPS server whose TLS sessions and tickets are shared through tlskeeper")]
struct Args {
    /// Address to listen on (port 0: any free port; the line printed says
    /// which).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The tlskeeper daemon's socket (remote mode).
    #[arg(long, value_name = "PATH", required_unless_present = "embedded", conflicts_with = "embedded")]
    socket: Option<PathBuf>,
    /// Run a tlskeeper core in this process instead of using a daemon.
    #[arg(long)]
    embedded: bool,
    /// Embedded mode: keep keys and sessions in a sealed store in DIR
    /// (default: in memory).
    #[arg(long, value_name = "DIR", requires = "embedded")]
    state_dir: Option<PathBuf>,
    /// The session cache to use; the daemon must have it.
    #[arg(long, default_value = "https")]
    cache: String,
    /// Certificate chain, PEM (default: a self-signed one for localhost).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key, PEM.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// The rustls crypto provider.
    #[arg(long, value_enum, default_value = "aws-lc-rs")]
    provider: Provider,
    /// Allow TLS 1.2 besides TLS 1.3.
    #[arg(long)]
    tls12: bool,
    /// Issue no tickets: TLS 1.3 resumes from the session cache instead,
    /// each ticket once (tlskeeper's `take`).
    #[arg(long)]
    no_tickets: bool,
    /// TLS 1.3 tickets sent per handshake (each is one request to the
    /// daemon).
    #[arg(long, default_value_t = 1)]
    tickets: usize,
    /// Longest wait for one request to the daemon, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250)]
    timeout_ms: u64,
    /// After a failed request, how long requests fail at once, in
    /// milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    retry_after_ms: u64,
}

/// The crypto providers rustls offers.
#[derive(Clone, Copy, ValueEnum)]
enum Provider {
    /// aws-lc-rs (rustls's default).
    AwsLcRs,
    /// ring.
    Ring,
}

impl Provider {
    fn get(self) -> CryptoProvider {
        match self {
            Provider::AwsLcRs => rustls::crypto::aws_lc_rs::default_provider(),
            // Deprecated since rustls 0.23.48 for lacking post-quantum key
            // exchange, and there is no other constructor for it. Offered
            // here to show a ticket sealed under one provider resuming
            // under another (the daemon seals, not the provider), not as a
            // recommendation.
            #[allow(deprecated)]
            Provider::Ring => rustls::crypto::ring::default_provider(),
        }
    }
}

/// What each connection's answer names.
struct Served {
    pid: u32,
    addr: SocketAddr,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("https_server: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    // The embedded core lives until the server stops; closing it then
    // checkpoints the core and flushes its store.
    let mut embedded: Option<Embedded> = None;
    let backend = match &args.socket {
        Some(socket) => Backend::remote_with(
            socket,
            RemoteOptions {
                timeout: Duration::from_millis(args.timeout_ms),
                retry_after: Duration::from_millis(args.retry_after_ms),
                ..RemoteOptions::default()
            },
        ),
        None => {
            let mut embedder = Embedder::new(&args.cache, 3600);
            if let Some(dir) = &args.state_dir {
                embedder = embedder.state_dir(dir);
            }
            let started = embedder.start()?;
            let backend = Backend::embedded(started.core().clone());
            embedded = Some(started);
            backend
        }
    };
    let (certs, key) = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            (CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?, PrivateKeyDer::from_pem_file(key)?)
        }
        _ => self_signed()?,
    };
    let versions: &[&rustls::SupportedProtocolVersion] =
        if args.tls12 { &[&rustls::version::TLS13, &rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(args.provider.get()))
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    if !args.no_tickets {
        config.ticketer = Arc::new(Ticketer::new(backend.clone())?);
    }
    config.session_storage = Arc::new(SessionStore::new(backend, args.cache.clone())?);
    config.send_tls13_tickets = args.tickets;
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind(args.listen).await?;
    let served = Arc::new(Served { pid: std::process::id(), addr: listener.local_addr()? });
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", served.addr)?;
        stdout.flush()?;
    }

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    // Out of descriptors or memory, or a connection reset
                    // before it was accepted: the listener is still good.
                    // Stopping the server would turn a burst of clients into
                    // an outage; a short pause keeps an error that repeats
                    // (EMFILE) from spinning.
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, served) = (acceptor.clone(), Arc::clone(&served));
                tokio::spawn(async move {
                    match tokio::time::timeout(CONNECTION_TIME, serve(acceptor, stream, &served)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!("{peer}: {e}"),
                        Err(_) => tracing::debug!("{peer}: not done within {CONNECTION_TIME:?}"),
                    }
                });
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    // Close waits for every handle to the core: the acceptor's, and those
    // of connections still being served (each bounded by its timeouts).
    drop(acceptor);
    if let Some(embedded) = embedded {
        tokio::task::spawn_blocking(move || embedded.close()).await?;
    }
    Ok(())
}

/// The longest one connection is served, all of it: each read is bounded
/// too, but a client sending a byte just before each read's limit would
/// otherwise hold its connection (and, embedded, a handle to the core that
/// `close` waits for) for as long as it liked.
const CONNECTION_TIME: Duration = Duration::from_secs(20);

/// One connection: the handshake, one request, the answer.
async fn serve(acceptor: TlsAcceptor, stream: TcpStream, served: &Served) -> Result<(), Box<dyn Error>> {
    let mut tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await??;
    let (version, resumed) = {
        let (_, conn) = tls.get_ref();
        let version = conn.protocol_version().map_or_else(|| "unknown".to_owned(), |v| format!("{v:?}"));
        (version, conn.handshake_kind() == Some(HandshakeKind::Resumed))
    };
    // Read up to the blank line that ends the request's head.
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk)).await??;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let body = format!(
        "served by pid {} on {}, {version}, resumed: {}\n",
        served.pid,
        served.addr,
        if resumed { "yes" } else { "no" }
    );
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body.as_bytes()).await?;
    tls.shutdown().await?;
    Ok(())
}

/// A self-signed certificate for `localhost` and `127.0.0.1`.
fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Box<dyn Error>> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    Ok((vec![made.cert.der().clone()], key))
}
