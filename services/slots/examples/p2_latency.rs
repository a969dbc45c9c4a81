//! P2 latency: times 10,000 calls of the P2 scenario one by one and prints
//! p50/p99/max, which criterion's mean-oriented output does not give.
//!
//! `cargo run --release -p berth-slots --example p2_latency`

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "../benches/support/p2.rs"]
mod p2;

const WARMUP: usize = 1_000;
const CALLS: usize = 10_000;

fn main() -> Result<(), Box<dyn Error>> {
    let p2 = p2::scenario()?;
    let slots = p2.run()?;
    for _ in 0..WARMUP {
        black_box(black_box(&p2).run()?);
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        black_box(black_box(&p2).run()?);
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    let pct = |p: usize| samples[(CALLS * p / 100).min(CALLS - 1)].as_secs_f64() * 1e6;
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1e6 / CALLS as f64;
    println!(
        "P2: {}-day window, {} claims, {} busy, {} open slots returned",
        p2::WINDOW_DAYS,
        p2::CLAIMS,
        p2::BUSY,
        slots.len()
    );
    println!(
        "{CALLS} calls: p50 {:.1} us, p99 {:.1} us, max {:.1} us, mean {:.1} us",
        pct(50),
        pct(99),
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        mean
    );
    Ok(())
}
