//! Soak: the real daemon holding many idle connections while a few busy
//! clients run the smtpd handshake mix, for minutes, watched for errors
//! and for memory that keeps growing.
//!
//! It launches `tlskeeper serve` on a fresh state directory (the default
//! persistent store, sealed), opens `--idle` connections that never send a
//! byte, and runs `--busy` connections of the smtpd mix in slices of
//! `--slice` seconds until `--minutes` have passed. After each slice it
//! reads the daemon's resident memory and open descriptors from `/proc` and
//! checks that no idle connection has been closed. At the end every idle
//! connection must still answer a request. The daemon is stopped with
//! SIGTERM by its PID.
//!
//! Verdict, printed last and given as the exit status: no request failed,
//! no idle connection was lost, and memory is flat: the highest resident
//! size over the second half of the run is at most 10% (plus 4 MiB of
//! allocator slack) above the highest over the first half, once the caches
//! have filled.
//!
//! Usage: cargo build --release -p tlskeeper --bins --examples &&
//!        target/release/examples/soak [--minutes 10] [--idle 1000] [--busy 16] [--slice 30] [--tlskeeper PATH]
//!
//! A harness, not a test: it runs for minutes and its speed figures are
//! only for comparison within one run.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/daemon.rs"]
mod daemon;
use daemon::{Daemon, default_binary};
use tlskeeper::bench::{self, Mix};
use tlskeeper_protocol::client::Client;
use tlskeeper_protocol::tlsmgr::{Reply, Request};

struct Args {
    minutes: f64,
    idle: usize,
    busy: usize,
    slice: u64,
    binary: PathBuf,
}

fn parse_args() -> Args {
    let usage = "usage: soak [--minutes M] [--idle N] [--busy N] [--slice SECS] [--tlskeeper PATH]";
    let mut args = Args { minutes: 10.0, idle: 1000, busy: 16, slice: 30, binary: default_binary() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value; {usage}"));
        match arg.as_str() {
            "--minutes" => args.minutes = value().parse().expect("--minutes: a number"),
            "--idle" => args.idle = value().parse().expect("--idle: a count"),
            "--busy" => args.busy = value().parse().expect("--busy: a count"),
            "--slice" => args.slice = value().parse().expect("--slice: seconds"),
            "--tlskeeper" => args.binary = value().into(),
            other => panic!("unknown argument {other:?}; {usage}"),
        }
    }
    assert!(args.busy > 0 && args.slice > 0 && args.minutes > 0.0, "{usage}");
    args
}

fn main() {
    let args = parse_args();
    assert!(args.binary.is_file(), "no tlskeeper binary at {}; build it first", args.binary.display());
    raise_descriptor_limit(args.idle + args.busy + 64);

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tlsmgr");
    let config = dir.path().join("tlskeeper.toml");
    // Idle connections must outlive the run: the default idle timeout
    // (300 s) would close them halfway through a ten-minute soak.
    let timeout = (args.minutes * 60.0) as u64 + 600;
    std::fs::write(&config, format!("max_connections = {}\nidle_timeout = {timeout}\n", args.idle + args.busy + 16))
        .unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::launch(&args.binary, &config, &dir.path().join("state"), &socket, &log);
    wait_answering(&socket);

    // Connected and past the announcement, then silent.
    let mut idle: Vec<Client> = (0..args.idle).map(|_| Client::connect(&socket).unwrap()).collect();
    println!(
        "soak: {} idle + {} busy connections for {} min, daemon pid {}",
        args.idle,
        args.busy,
        args.minutes,
        daemon.pid()
    );
    println!("| t (s) | req/s | p99 ms | max ms | errors | idle open | RSS MiB | fds |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");

    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.minutes * 60.0);
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let (mut requests, mut errors) = (0u64, 0u64);
    while Instant::now() < end {
        let slice = Duration::from_secs(args.slice).min(end - Instant::now()).max(Duration::from_secs(1));
        let options = bench::Options {
            socket: socket.clone(),
            connections: args.busy,
            duration: Some(slice),
            requests: None,
            mix: Mix::Smtpd,
            cache: "smtpd".to_owned(),
        };
        let report = bench::run(&options, &|_| {}).unwrap();
        requests += report.requests;
        errors += report.errors;
        let open = idle.iter().filter(|c| still_open(c.stream())).count();
        let rss = daemon.rss_kib();
        let t = started.elapsed().as_secs_f64();
        samples.push((t, rss));
        println!(
            "| {t:.0} | {:.0} | {:.2} | {:.2} | {} | {open} | {:.1} | {} |",
            report.rps,
            f64::from(report.p99_us) / 1000.0,
            f64::from(report.max_us) / 1000.0,
            report.errors,
            rss as f64 / 1024.0,
            daemon.fds()
        );
        assert!(daemon.running(), "the daemon exited; its log: {}", std::fs::read_to_string(&log).unwrap());
    }

    // Every idle connection is still served.
    let mut lost = 0;
    for client in &mut idle {
        if !matches!(client.request(&Request::Seed { size: 16 }), Ok(Reply::Seed { .. })) {
            lost += 1;
        }
    }
    drop(idle);
    drop(daemon);

    let half = samples.len() / 2;
    let peak = |s: &[(f64, u64)]| s.iter().map(|&(_, r)| r).max().unwrap_or(0);
    let (first, second) = (peak(&samples[..half.max(1)]), peak(&samples[half..]));
    let flat = samples.len() < 2 || second <= first + first / 10 + 4 * 1024;
    let warnings = std::fs::read_to_string(&log).unwrap_or_default();
    let warning_lines = warnings.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).count();
    println!();
    println!(
        "requests {requests}, errors {errors}; idle connections that stopped answering: {lost} of {}; \
         peak RSS first half {:.1} MiB, second half {:.1} MiB ({}); daemon warnings and errors: {warning_lines}",
        args.idle,
        first as f64 / 1024.0,
        second as f64 / 1024.0,
        if flat { "flat" } else { "GROWING" }
    );
    let ok = errors == 0 && lost == 0 && flat && requests > 0;
    println!("verdict: {}", if ok { "pass" } else { "FAIL" });
    if !ok {
        eprintln!("daemon log:\n{warnings}");
        std::process::exit(1);
    }
}

/// Whether the daemon has not closed `stream`: a peek that would block
/// means open and silent; end of stream means closed.
fn still_open(stream: &UnixStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv(2) into one valid, exclusively borrowed byte, on a
    // descriptor `stream` keeps open for the call.
    let n = unsafe { libc::recv(stream.as_raw_fd(), (&raw mut byte).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n > 0 || (n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock)
}

/// Wait until the socket answers, for at most a minute.
fn wait_answering(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut client) = Client::connect(socket)
            && client.request(&Request::Seed { size: 16 }).is_ok()
        {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("the daemon did not answer on {} within a minute", socket.display());
}

/// Let this process hold `wanted` descriptors, as far as the hard limit allows.
fn raise_descriptor_limit(wanted: usize) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, exclusively borrowed rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) }, 0);
    let raised = libc::rlimit { rlim_cur: (wanted as u64).min(limit.rlim_max).max(limit.rlim_cur), ..limit };
    // SAFETY: `raised` is a valid rlimit, read only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) }, 0);
    assert!(raised.rlim_cur >= wanted as u64, "the hard open-file limit is below {wanted}; raise ulimit -Hn");
}

/// What the soak asks of the daemon, beyond the shared guard's stop.
impl Daemon {
    fn launch(binary: &Path, config: &Path, state: &Path, socket: &Path, log: &Path) -> Daemon {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(state)
            .arg("--log")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        Daemon(command.spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Resident set size, KiB, from /proc/PID/status.
    fn rss_kib(&self) -> u64 {
        let mut status = String::new();
        std::fs::File::open(format!("/proc/{}/status", self.pid())).unwrap().read_to_string(&mut status).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Open descriptors.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(Iterator::count).unwrap_or(0)
    }
}
