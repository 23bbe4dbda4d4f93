//! Start-up time: from launching `tlskeeper serve` to the first answer on
//! its socket, with the compiled-core cache warm and with it disabled.
//!
//! Each run launches the real binary on a state directory that already
//! holds a sealed store, a KEK and a seed file (as on a restart, which is
//! when start-up time matters), then connects as soon as the socket
//! accepts, asks for the current ticket key and stops the clock at the
//! reply. The daemon is then stopped with SIGTERM by its PID. Two modes:
//! - `cached`: `--compile-cache DIR`, filled by a warm-up run, so the core
//!   is loaded as precompiled machine code;
//! - `compile`: `--no-compile-cache`, so Cranelift compiles the core at
//!   every start.
//!
//! Usage: cargo build --release -p tlskeeper --bins --examples &&
//!        target/release/examples/startup [--runs N] [--tlskeeper PATH] [--json]
//!
//! The binary defaults to `tlskeeper` next to the `examples` directory this
//! program runs from. A benchmark, not a test: it asserts nothing about
//! speed.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
#[path = "support/daemon.rs"]
mod daemon;
use daemon::{Daemon, default_binary};
use tlskeeper_protocol::client::Client;
use tlskeeper_protocol::tlsmgr::{Reply, Request, Status};

/// How long one start may take before the run is abandoned.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Pause between connection attempts while the socket is not yet there.
/// Short against the figures measured, so polling adds little to them.
const POLL: Duration = Duration::from_micros(200);

#[derive(Serialize)]
struct Mode {
    mode: &'static str,
    runs: usize,
    min_ms: f64,
    median_ms: f64,
    max_ms: f64,
}

fn main() {
    let mut runs = 10usize;
    let mut binary: Option<PathBuf> = None;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).expect("--runs N (N > 0)"),
            "--tlskeeper" => binary = Some(args.next().expect("--tlskeeper PATH").into()),
            "--json" => json = true,
            other => panic!("unknown argument {other:?}; usage: startup [--runs N] [--tlskeeper PATH] [--json]"),
        }
    }
    let binary = binary.unwrap_or_else(default_binary);
    assert!(
        binary.is_file(),
        "no tlskeeper binary at {}; build it with cargo build --release -p tlskeeper",
        binary.display()
    );

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cache = dir.path().join("cache");
    let socket = dir.path().join("tlsmgr");

    // Warm-up: creates the store, KEK and seed file, and fills the cache.
    time_first_answer(&binary, &state, &socket, Some(&cache));

    let modes = [("cached", Some(cache.as_path())), ("compile", None)]
        .into_iter()
        .map(|(mode, cache)| {
            let mut times: Vec<f64> = (0..runs).map(|_| time_first_answer(&binary, &state, &socket, cache)).collect();
            times.sort_by(f64::total_cmp);
            Mode { mode, runs, min_ms: times[0], median_ms: times[runs / 2], max_ms: times[runs - 1] }
        })
        .collect::<Vec<_>>();

    if json {
        println!("{}", serde_json::to_string_pretty(&modes).unwrap());
        return;
    }
    println!("first answer after launch, {runs} runs each ({})", binary.display());
    println!("| compiled core | min | median | max |");
    println!("|---|---:|---:|---:|");
    for m in &modes {
        let label = if m.mode == "cached" { "cached (.cwasm)" } else { "compiled at start" };
        println!("| {label} | {:.1} ms | {:.1} ms | {:.1} ms |", m.min_ms, m.median_ms, m.max_ms);
    }
}

/// Launch the daemon, wait for its first answer, stop it; milliseconds from
/// launch to answer.
fn time_first_answer(binary: &Path, state: &Path, socket: &Path, cache: Option<&Path>) -> f64 {
    let _ = std::fs::remove_file(socket);
    let mut command = Command::new(binary);
    command.arg("serve").arg("--socket").arg(socket).arg("--state-dir").arg(state).arg("--log").arg("warn");
    match cache {
        Some(dir) => command.arg("--compile-cache").arg(dir),
        None => command.arg("--no-compile-cache"),
    };
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());

    let start = Instant::now();
    let child = Daemon(command.spawn().unwrap());
    let reply = loop {
        assert!(start.elapsed() < START_LIMIT, "no answer within {START_LIMIT:?}");
        match Client::connect(socket) {
            Ok(mut client) => break client.request(&Request::TicketKey { key_name: Vec::new() }).unwrap(),
            Err(_) => thread::sleep(POLL),
        }
    };
    let elapsed = start.elapsed();
    assert!(
        matches!(reply, Reply::TicketKey { status: Status::Ok, .. }),
        "the first answer was not a ticket key: {reply:?}"
    );
    drop(child);
    elapsed.as_secs_f64() * 1e3
}
