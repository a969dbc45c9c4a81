//! API keys: `Authorization: Bearer <key>`, or HTTP Basic with the key as
//! the user name (what `curl -u sk_test_...:` sends).

use axum::http::HeaderMap;

use super::errors::ApiError;
use crate::state::Shared;

/// Which of the emulator's keys a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Secret,
    /// `pk_test_...`: only for what Stripe.js may do, with the client secret.
    Publishable,
}

pub(crate) fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<(KeyKind, String), ApiError> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::Unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.".into(),
        ));
    };
    let key = if let Some(token) = value.strip_prefix("Bearer ") {
        token.trim().to_owned()
    } else if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64_decode(encoded.trim()).unwrap_or_default();
        let text = String::from_utf8_lossy(&decoded);
        text.split(':').next().unwrap_or_default().to_owned()
    } else {
        value.trim().to_owned()
    };
    if key == shared.api_key {
        Ok((KeyKind::Secret, key))
    } else if key == shared.publishable_key {
        Ok((KeyKind::Publishable, key))
    } else {
        Err(ApiError::Unauthorized(format!(
            "Invalid API Key provided: {}",
            redact(&key)
        )))
    }
}

/// Stripe shows the first 8 and last 4 characters.
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 12))
}

/// Standard base64 with padding; only Basic auth needs it.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = input.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let produced = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_basic_credentials() {
        // `curl -u sk_test_berth:` sends base64("sk_test_berth:").
        assert_eq!(
            base64_decode("c2tfdGVzdF9iZXJ0aDo=").unwrap(),
            b"sk_test_berth:"
        );
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("a").is_none());
    }

    #[test]
    fn redacts_like_stripe() {
        assert_eq!(redact("sk_test_abcdefgh1234"), "sk_test_********1234");
    }
}
