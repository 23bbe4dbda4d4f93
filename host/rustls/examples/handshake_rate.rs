//! Resumed HTTPS handshakes per second: the same tokio-rustls server with
//! rustls's in-memory defaults (the provider's own ticketer and
//! `ServerSessionMemoryCache`), with tlskeeper embedded, and with tlskeeper
//! over a daemon's socket, measured in one run so that only the ratios
//! matter.
//!
//! ```text
//! cargo run --release -p tlskeeper-rustls --example handshake_rate -- \
//!     [--socket /path/to/tlskeeper.sock] [--handshakes 2000] [--concurrency 8] [--workers 8] [--tls12]
//! ```
//!
//! Each client task makes one full handshake and then resumes, one
//! connection after another: a connect, the handshake, a one-line request
//! and its answer (which also carries the TLS 1.3 tickets to the client).
//! Rounds alternate between the servers, and each figure is the median of
//! its rounds. Client and server share this process and its cores, as in
//! any loopback measurement; the client's cost is the same for every
//! server.
//!
//! The daemon for `--socket` needs a cache named `https` (see the crate
//! docs); `scripts/bench-https` starts one.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rustls::HandshakeKind;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::server::ProducesTickets;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use tlskeeper_engine::Embedder;
use tlskeeper_rustls::{Backend, SessionStore, Ticketer};

/// The flags.
#[derive(Parser)]
#[command(about = "Resumed HTTPS handshakes per second: rustls's defaults against tlskeeper")]
struct Args {
    /// A tlskeeper daemon's socket: also measure the remote mode.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Handshakes per server per round.
    #[arg(long, default_value_t = 2000)]
    handshakes: u64,
    /// Client tasks making handshakes at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u64,
    /// Rounds; each server's figure is its median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// TLS 1.2 instead of 1.3.
    #[arg(long)]
    tls12: bool,
    /// The runtime's worker threads. rustls calls the adapters
    /// synchronously, so in remote mode a handshake's worker waits for the
    /// daemon's answer; more workers than cores keep the others busy
    /// meanwhile, as in any async server that makes blocking calls.
    #[arg(long, default_value_t = 8)]
    workers: usize,
}

/// What a server resumes with: its ticketer and its session store.
type Resumption = (&'static str, Arc<dyn ProducesTickets>, Arc<dyn rustls::server::StoresServerSessions>);

/// One server under test.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    rates: Vec<f64>,
    resumed: f64,
}

fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(tls12: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if tls12 { &TLS12_ONLY } else { &TLS13_ONLY }
}

impl Args {
    /// Refuse the flags that would make no measurement (a division by zero,
    /// a median of nothing, a runtime without workers).
    fn check(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.rounds == 0 || self.workers == 0 {
            return Err("--concurrency, --rounds and --workers must be at least 1".into());
        }
        if self.handshakes < self.concurrency {
            return Err(format!(
                "--handshakes ({}) must be at least --concurrency ({}): each client task makes handshakes / concurrency",
                self.handshakes, self.concurrency
            ));
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    args.check().map_err(|e| format!("handshake_rate: {e}"))?;
    tokio::runtime::Builder::new_multi_thread().worker_threads(args.workers).enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());

    let embedded = Embedder::new("https", 3600).start()?;
    let mut setups: Vec<Resumption> = vec![(
        "rustls defaults",
        rustls::crypto::aws_lc_rs::Ticketer::new()?,
        rustls::server::ServerSessionMemoryCache::new(4096),
    )];
    let backend = Backend::embedded(embedded.core().clone());
    setups.push((
        "tlskeeper embedded",
        Arc::new(Ticketer::new(backend.clone())?),
        Arc::new(SessionStore::new(backend, "https")?),
    ));
    if let Some(socket) = &args.socket {
        let backend = Backend::remote(socket);
        setups.push((
            "tlskeeper remote",
            Arc::new(Ticketer::new(backend.clone())?),
            Arc::new(SessionStore::new(backend, "https")?),
        ));
    }

    let mut servers = Vec::new();
    for (name, ticketer, storage) in setups {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(versions(args.tls12))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key.clone_key())?;
        config.ticketer = ticketer;
        config.session_storage = storage;
        // One ticket per handshake for every server, so each seals as many.
        config.send_tls13_tickets = 1;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener, TlsAcceptor::from(Arc::new(config))));
        servers.push(Server { name, addr, rates: Vec::new(), resumed: 0.0 });
    }

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    for _ in 0..args.rounds {
        for server in &mut servers {
            let (rate, resumed) = measure(server.addr, &roots, &args).await?;
            server.rates.push(rate);
            server.resumed = resumed;
        }
    }
    let base = median(&mut servers[0].rates.clone());
    println!(
        "{} resumed handshakes, {} at once, {} rounds ({}):",
        args.handshakes,
        args.concurrency,
        args.rounds,
        if args.tls12 { "TLS 1.2" } else { "TLS 1.3" }
    );
    for server in &mut servers {
        let rate = median(&mut server.rates);
        println!(
            "  {:<20} {:>7.0} handshakes/s  {:.2}x  ({:.1}% resumed)",
            server.name,
            rate,
            rate / base,
            server.resumed * 100.0
        );
    }
    // The servers' tasks still hold handles to the embedded core, so
    // `Embedded::close` would wait for ever; its memory store has nothing
    // to flush, and the process simply ends.
    drop(embedded);
    Ok(())
}

/// Accept connections until the process ends: handshake, read the
/// request line, answer, close.
async fn serve(listener: TcpListener, acceptor: TlsAcceptor) {
    while let Ok((stream, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else { return };
            let mut buf = [0u8; 64];
            if tls.read(&mut buf).await.is_ok() {
                let _ = tls.write_all(b"ok\n").await;
                let _ = tls.shutdown().await;
            }
        });
    }
}

/// One round against the server at `addr`: handshakes per second, and the
/// share of them that resumed.
async fn measure(addr: SocketAddr, roots: &rustls::RootCertStore, args: &Args) -> Result<(f64, f64), Box<dyn Error>> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(versions(args.tls12))?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    // A fresh client cache per round: each task's first handshake is full.
    let connector = TlsConnector::from(Arc::new(config));
    let resumed = Arc::new(AtomicU64::new(0));
    let per_task = args.handshakes / args.concurrency;
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (connector, resumed) = (connector.clone(), Arc::clone(&resumed));
            tokio::spawn(async move {
                for _ in 0..per_task {
                    if handshake(&connector, addr).await? {
                        resumed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<(), std::io::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let done = per_task * args.concurrency;
    let seconds = started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    Ok((done as f64 / seconds, resumed.load(Ordering::Relaxed) as f64 / done as f64))
}

/// One connection; whether its handshake resumed.
async fn handshake(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<bool> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream)).await??;
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut answer = Vec::new();
    // The answer ends at close; reading it also takes in the tickets.
    let _ = tls.read_to_end(&mut answer).await;
    Ok(resumed)
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}
