//! A small stable hash (FNV-1a 64) for applied-configuration annotations.
//! Stable across Rust releases and platforms, unlike `DefaultHasher`, so
//! golden files and annotations on live objects do not churn on upgrades.

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Hex digest of a JSON value with object keys sorted.
pub fn json_digest(value: &serde_json::Value) -> String {
    let canonical = canonical(value.clone());
    let text = serde_json::to_string(&canonical).unwrap_or_default();
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

/// Recursively sorts object keys, whatever map type serde_json was built with.
pub fn canonical(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(canonical).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_key_order() {
        let a = serde_json::json!({"a": 1, "b": {"y": 2, "x": 3}});
        let b = serde_json::json!({"b": {"x": 3, "y": 2}, "a": 1});
        assert_eq!(json_digest(&a), json_digest(&b));
        assert_ne!(json_digest(&a), json_digest(&serde_json::json!({"a": 2})));
    }
}
