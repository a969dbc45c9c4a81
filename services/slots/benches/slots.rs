//! Criterion benchmarks for the slot engine. `p2` is the performance target
//! (30 days, 1,000 claims); `p2_no_claims` isolates slot generation.
//! For p50/p99 run `cargo run --release -p berth-slots --example p2_latency`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support/p2.rs"]
mod p2;

fn bench(c: &mut Criterion) {
    let p2 = p2::scenario().unwrap_or_else(|e| panic!("P2 fixture is invalid: {e}"));
    c.bench_function("p2_30d_1000_claims", |b| {
        b.iter(|| black_box(&p2).run());
    });
    let empty = p2::P2 {
        claims: Vec::new(),
        busy: Vec::new(),
        ..p2::scenario().unwrap_or_else(|e| panic!("P2 fixture is invalid: {e}"))
    };
    c.bench_function("p2_30d_no_claims", |b| {
        b.iter(|| black_box(&empty).run());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
