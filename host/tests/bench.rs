//! The load generator against the real daemon: every mix runs without
//! errors, counts what it was asked to, and reports ordered percentiles.
//! No timing is asserted: speed is for `scripts/bench` to measure, not for
//! tests to judge.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use clap::ValueEnum;
use common::{BIN, TestServer};
use tlskeeper::bench::{self, BenchError, Mix, Options};

fn options(server: &TestServer, mix: Mix) -> Options {
    Options {
        socket: server.path().to_path_buf(),
        connections: 3,
        duration: None,
        requests: Some(300),
        mix,
        cache: "smtpd".into(),
    }
}

#[test]
fn every_mix_runs_clean_against_the_daemon() {
    let server = TestServer::start();
    for mix in Mix::value_variants() {
        let report = bench::run(&options(&server, *mix), &|_| {}).unwrap();
        assert_eq!((report.requests, report.errors), (300, 0), "{report}");
        assert!(report.p50_us <= report.p99_us && report.p99_us <= report.max_us, "{report}");
        assert!(report.rps > 0.0, "{report}");
    }
    server.stop();
}

#[test]
fn a_run_needs_a_bound_and_a_server() {
    let server = TestServer::start();
    let unbounded = Options { requests: None, ..options(&server, Mix::Seed) };
    assert!(matches!(bench::run(&unbounded, &|_| {}), Err(BenchError::Unbounded)));
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let nowhere = Options { socket: dir.path().join("none"), requests: Some(1), ..unbounded };
    let e = bench::run(&nowhere, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("cannot set up the benchmark"), "{e}");
}

#[test]
fn the_cli_reports_in_text_and_json() {
    let server = TestServer::start();
    let socket = server.path().to_str().unwrap().to_owned();
    let out = Command::new(BIN)
        .args(["bench", "--socket", &socket, "--mix", "lookup-hit", "-c", "2", "--requests", "100", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (json["mix"].as_str(), json["requests"].as_u64(), json["errors"].as_u64()),
        (Some("lookup-hit"), Some(100), Some(0))
    );
    let out = Command::new(BIN).args(["bench", "--socket", &socket, "--requests", "50"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("smtpd mix, 1 connection(s): 50 requests"), "{text}");
    server.stop();
}
