//! The cost of a ticket per handshake: one seal and one open of a 128-byte
//! plaintext (about what rustls encodes for a TLS 1.3 session), through
//! rustls's own ticketer for each provider and through tlskeeper's, with the
//! core embedded in this process.
//!
//! ```text
//! scripts/bench-https        # this, then the handshake rates
//! cargo bench -p tlskeeper-rustls --bench tickets
//! ```
//!
//! rustls's ticketers run AES-256-GCM (aws-lc-rs) or ChaCha20-Poly1305
//! (ring) in this process. tlskeeper's crosses into the sandboxed core for
//! each call (a lock, fuel, copying the plaintext into and out of the
//! component's memory) and seals with XChaCha20 and HMAC-SHA-256 under a
//! subkey per key version, looked up in the key ring's storage table: the
//! difference between the two is the sandbox's cost.

// criterion_group! makes undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::server::ProducesTickets;

use tlskeeper_engine::Embedder;
use tlskeeper_rustls::{Backend, Ticketer};

fn seal_and_open(c: &mut Criterion) {
    let plaintext = vec![0x5a_u8; 128];
    let embedded = Embedder::new("https", 3600).start().expect("the core starts");
    let ticketers: [(&str, Arc<dyn ProducesTickets>); 3] = [
        ("rustls aws-lc-rs", rustls::crypto::aws_lc_rs::Ticketer::new().expect("aws-lc-rs ticketer")),
        ("rustls ring", rustls::crypto::ring::Ticketer::new().expect("ring ticketer")),
        ("tlskeeper embedded", Arc::new(Ticketer::new(Backend::embedded(embedded.core().clone())).expect("ticketer"))),
    ];
    let mut group = c.benchmark_group("ticket seal+open");
    for (name, ticketer) in &ticketers {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let ticket = ticketer.encrypt(black_box(&plaintext)).expect("sealed");
                ticketer.decrypt(black_box(&ticket)).expect("opened")
            });
        });
    }
    group.finish();
    drop(ticketers);
    embedded.close();
}

criterion_group!(benches, seal_and_open);
criterion_main!(benches);
