//! Access-token signing keys: one active Ed25519 key (EdDSA) plus previous
//! keys kept for verification only, all published in the JWKS.
//!
//! Rotation: [`KeyRing::rotate`] makes a new key active and moves the old one
//! to the verification-only set, so tokens signed before the rotation stay
//! valid until they expire (at most the access-token TTL). Previous keys are
//! dropped with [`KeyRing::retire_previous`] once that TTL has passed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use berth_runtime::auth::SharedJwks;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

use crate::UserError;

/// Where a signing key comes from.
#[derive(Clone, Default)]
pub enum SigningKeySource {
    /// A fresh random key per process (development only: tokens do not
    /// survive restarts and replicas would not share keys).
    #[default]
    Generate,
    /// A PKCS#8 PEM file with an Ed25519 private key
    /// (`openssl genpkey -algorithm ed25519 -out key.pem`).
    PemFile(PathBuf),
    /// The PEM text itself (e.g. from a mounted secret).
    Pem(String),
    /// The name of an environment variable holding the PEM text.
    PemEnv(String),
}

impl std::fmt::Debug for SigningKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Generate => f.write_str("Generate"),
            Self::PemFile(path) => f.debug_tuple("PemFile").field(path).finish(),
            Self::Pem(_) => f.write_str("Pem(<redacted>)"),
            Self::PemEnv(name) => f.debug_tuple("PemEnv").field(name).finish(),
        }
    }
}

pub(crate) struct SigningKey {
    pub(crate) kid: String,
    encoding: EncodingKey,
    pub(crate) public: Jwk,
}

impl SigningKey {
    pub(crate) fn load(source: &SigningKeySource) -> Result<Self, UserError> {
        let pkcs8 = match source {
            SigningKeySource::Generate => Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| UserError::Key("cannot generate an Ed25519 key".into()))?
                .as_ref()
                .to_vec(),
            SigningKeySource::PemFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    UserError::Key(format!("cannot read signing key {}: {e}", path.display()))
                })?;
                pem_to_der(&text)?
            }
            SigningKeySource::Pem(text) => pem_to_der(text)?,
            SigningKeySource::PemEnv(name) => {
                let text = std::env::var(name).map_err(|_| {
                    UserError::Key(format!("environment variable {name} is not set"))
                })?;
                pem_to_der(&text)?
            }
        };
        Self::from_pkcs8(&pkcs8)
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, UserError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| UserError::Key("the signing key is not an Ed25519 PKCS#8 key".into()))?;
        let public = pair.public_key().as_ref();
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..12]);
        let jwk = serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(public),
            "kid": kid,
            "alg": "EdDSA",
            "use": "sig",
        });
        let public: Jwk = serde_json::from_value(jwk)
            .map_err(|e| UserError::Key(format!("cannot build the JWK: {e}")))?;
        Ok(Self {
            kid,
            encoding: EncodingKey::from_ed_der(pkcs8),
            public,
        })
    }

    pub(crate) fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, UserError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| UserError::Key(format!("cannot sign a token: {e}")))
    }
}

fn pem_to_der(text: &str) -> Result<Vec<u8>, UserError> {
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    STANDARD
        .decode(body)
        .map_err(|_| UserError::Key("the signing key PEM is not valid base64".into()))
}

/// The active key, previous keys, and the JWKS built from them.
pub(crate) struct KeyRing {
    active: ArcSwap<SigningKey>,
    previous: Mutex<Vec<Jwk>>,
    jwks: SharedJwks,
}

/// How many previous keys stay published.
const MAX_PREVIOUS: usize = 4;

impl KeyRing {
    pub(crate) fn new(active: SigningKey, previous: Vec<SigningKey>) -> Self {
        let previous: Vec<Jwk> = previous.into_iter().map(|k| k.public).collect();
        let jwks = SharedJwks::new(build_set(&active, &previous));
        Self {
            active: ArcSwap::from_pointee(active),
            previous: Mutex::new(previous),
            jwks,
        }
    }

    pub(crate) fn active(&self) -> Arc<SigningKey> {
        self.active.load_full()
    }

    pub(crate) fn jwks(&self) -> SharedJwks {
        self.jwks.clone()
    }

    pub(crate) fn rotate(&self, next: SigningKey) {
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.active.swap(Arc::new(next));
        previous.insert(0, old.public.clone());
        previous.truncate(MAX_PREVIOUS);
        self.jwks.set(build_set(&self.active.load(), &previous));
    }

    pub(crate) fn retire_previous(&self) {
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        previous.clear();
        self.jwks.set(build_set(&self.active.load(), &previous));
    }
}

fn build_set(active: &SigningKey, previous: &[Jwk]) -> JwkSet {
    let mut keys = vec![active.public.clone()];
    keys.extend(previous.iter().cloned());
    JwkSet { keys }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_old_key_for_verification() {
        let first = SigningKey::load(&SigningKeySource::Generate).unwrap();
        let first_kid = first.kid.clone();
        let ring = KeyRing::new(first, vec![]);
        ring.rotate(SigningKey::load(&SigningKeySource::Generate).unwrap());
        let set = ring.jwks().get();
        assert_eq!(set.keys.len(), 2);
        assert!(set.find(&first_kid).is_some());
        assert_ne!(ring.active().kid, first_kid);
        ring.retire_previous();
        assert!(ring.jwks().get().find(&first_kid).is_none());
    }

    #[test]
    fn loads_an_openssl_pem() {
        // openssl genpkey -algorithm ed25519
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGLHXNlBvV6Db5B/9Io5LICd5z6IYxj+cAF+PW858hhS\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::load(&SigningKeySource::Pem(pem.into())).unwrap();
        assert_eq!(key.public.common.key_id.as_deref(), Some(key.kid.as_str()));
        assert!(format!("{:?}", SigningKeySource::Pem(pem.into())).contains("redacted"));
    }
}
