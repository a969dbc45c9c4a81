//! Small primitives: random bytes and tokens, hashing of stored secrets,
//! constant-time comparison.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::{UserError, Users};

impl Users {
    pub(crate) fn random_token(&self) -> Result<String, UserError> {
        Ok(URL_SAFE_NO_PAD.encode(random_bytes(&self.inner.random, 32)?))
    }
}

pub(crate) fn random_bytes(random: &SystemRandom, n: usize) -> Result<Vec<u8>, UserError> {
    let mut bytes = vec![0u8; n];
    random
        .fill(&mut bytes)
        .map_err(|_| UserError::Key("the system random generator failed".into()))?;
    Ok(bytes)
}

pub(crate) fn sha256(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}

/// Constant-time equality (the lengths are not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
