//! Durations in the shape the CRDs accept (`500ms`, `2s`, `1m30s`): integer
//! parts with units h, m, s, ms. Both CEL `duration()` and the services'
//! humantime parser read these.

/// Parses into milliseconds; `None` when empty, malformed or overflowing.
pub fn parse_millis(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let n: u64 = s.get(start..i)?.parse().ok()?;
        let unit_ms: u64 = if s.get(i..)?.starts_with("ms") {
            i += 2;
            1
        } else {
            let unit = match bytes.get(i)? {
                b'h' => 3_600_000,
                b'm' => 60_000,
                b's' => 1_000,
                _ => return None,
            };
            i += 1;
            unit
        };
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(total)
}

/// Whole seconds, rounded up (for `terminationGracePeriodSeconds` and preStop sleeps).
pub fn ceil_seconds(millis: u64) -> i64 {
    i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_durations() {
        assert_eq!(parse_millis("500ms"), Some(500));
        assert_eq!(parse_millis("2s"), Some(2000));
        assert_eq!(parse_millis("1m30s"), Some(90_000));
        assert_eq!(parse_millis("1h"), Some(3_600_000));
        assert_eq!(parse_millis("1s500ms"), Some(1500));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in ["", "s", "1", "1.5s", "-1s", "1d", "1 s", "ms"] {
            assert_eq!(parse_millis(bad), None, "{bad}");
        }
    }

    #[test]
    fn rounds_seconds_up() {
        assert_eq!(ceil_seconds(0), 0);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(20_000), 20);
        assert_eq!(ceil_seconds(20_001), 21);
    }
}
