//! Exponential backoff with full jitter: the delay before retry `n` is drawn
//! uniformly from `[0, min(max, base * 2^n)]`, which spreads retries from
//! many clients instead of synchronising them.

use std::time::Duration;

use rand::Rng;

pub fn full_jitter(base: Duration, max: Duration, retry: u32, rng: &mut impl Rng) -> Duration {
    let cap = exponential_cap(base, max, retry);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// `min(max, base * 2^retry)` without overflow.
pub fn exponential_cap(base: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn cap_doubles_then_saturates() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(100);
        let caps: Vec<_> = (0..6)
            .map(|n| exponential_cap(base, max, n).as_millis())
            .collect();
        assert_eq!(caps, vec![10, 20, 40, 80, 100, 100]);
        assert_eq!(exponential_cap(base, max, 200), max);
    }

    #[test]
    fn jitter_stays_within_cap_and_varies() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_millis(10);
        let max = Duration::from_secs(1);
        let samples: Vec<_> = (0..200)
            .map(|_| full_jitter(base, max, 3, &mut rng))
            .collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(80)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 150, "full jitter spreads delays");
        assert!(samples.iter().any(|d| *d < Duration::from_millis(20)));
    }
}
