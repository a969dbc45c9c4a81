//! Password hashing (argon2id; see the crate docs for the parameters) and
//! the length policy.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use berth_runtime::Problem;

use crate::{UserError, Users};

/// argon2id cost parameters (see the crate docs for the defaults' rationale).
#[derive(Debug, Clone, Copy)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Users {
    pub(crate) async fn hash(&self, password: &str) -> Result<String, UserError> {
        let argon = self.inner.argon.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_password(&argon, &password))
            .await
            .map_err(|e| UserError::Hash(e.to_string()))?
    }

    pub(crate) async fn verify_password(&self, password: &str, hash: Option<&str>) -> bool {
        // Unknown accounts are checked against a dummy hash so timing does
        // not reveal which emails exist.
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.inner.dummy_hash.clone(), false),
        };
        let argon = self.inner.argon.clone();
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| argon.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok && real
    }
}

pub(crate) fn hash_password(
    argon: &argon2::Argon2<'_>,
    password: &str,
) -> Result<String, UserError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

pub(crate) fn check_password(password: &str) -> Result<(), Problem> {
    let n = password.chars().count();
    if (10..=128).contains(&n) {
        Ok(())
    } else {
        Err(Problem::validation(
            "`password` must be 10 to 128 characters",
        ))
    }
}
