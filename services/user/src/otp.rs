//! Phone one-time codes: generation and peppered hashing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;

use crate::crypto::random_bytes;
use crate::{UserError, Users};

impl Users {
    pub(crate) fn code_hash(&self, phone: &str, code: &str) -> String {
        let tag = ring::hmac::sign(&self.inner.pepper, format!("{phone}\n{code}").as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }
}

/// A uniformly random 6-digit code (rejection sampling, no modulo bias).
pub(crate) fn six_digits(random: &SystemRandom) -> Result<String, UserError> {
    const LIMIT: u32 = u32::MAX - (u32::MAX % 1_000_000);
    loop {
        let bytes = random_bytes(random, 4)?;
        let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if n < LIMIT {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_six_digits() {
        let random = SystemRandom::new();
        for _ in 0..100 {
            let code = six_digits(&random).unwrap();
            assert_eq!(code.len(), 6);
            assert!(code.chars().all(|c| c.is_ascii_digit()));
        }
    }
}
