//! A real EdDSA token issuer for other crates' tests and load generators
//! (feature `test-util`): it signs tokens exactly as the user service does,
//! so the verifier under test is the production one. It is not a mock of the
//! user service; tests of the user service itself use its own keys.

// Test support: a failing RNG or signer should stop the test loudly.
#![allow(clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::{AccessClaims, SharedJwks, Verifier};

pub const TEST_ISSUER: &str = "https://auth.berth.test";
pub const TEST_AUDIENCE: &str = "berth";

/// Signs access tokens with a fresh Ed25519 key.
pub struct TestIssuer {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
    jwks: SharedJwks,
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    /// Panics if the system RNG fails: test code only.
    pub fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("system RNG");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("fresh key parses");
        let kid = format!("test-{}", &hex_of(pair.public_key().as_ref())[..12]);
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }))
        .expect("well-formed JWK");
        let jwks = SharedJwks::new(JwkSet {
            keys: vec![jwk.clone()],
        });
        Self {
            kid,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk,
            jwks,
        }
    }

    /// The public keyset, e.g. to serve at a JWKS URL.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// An in-process verifier that trusts this issuer.
    pub fn verifier(&self) -> Verifier {
        Verifier::from_shared(TEST_ISSUER, TEST_AUDIENCE, self.jwks.clone())
    }

    /// A token for `subject` with `roles`, valid for an hour.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        self.token_valid_for(subject, roles, Duration::from_secs(3600))
    }

    pub fn token_valid_for(&self, subject: &str, roles: &[&str], ttl: Duration) -> String {
        self.token_with(subject, roles, ttl, None)
    }

    /// A token for `subject` whose account has the verified phone `phone`.
    pub fn token_with_phone(&self, subject: &str, roles: &[&str], phone: &str) -> String {
        self.token_with(subject, roles, Duration::from_secs(3600), Some(phone))
    }

    fn token_with(
        &self,
        subject: &str,
        roles: &[&str],
        ttl: Duration,
        phone_number: Option<&str>,
    ) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = AccessClaims {
            iss: TEST_ISSUER.to_owned(),
            aud: TEST_AUDIENCE.to_owned(),
            sub: subject.to_owned(),
            exp: now + ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            phone_number: phone_number.map(str::to_owned),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("EdDSA signing")
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn its_tokens_pass_the_production_verifier() {
        let issuer = TestIssuer::new();
        let principal = issuer
            .verifier()
            .verify(&issuer.token("acct-7", &["staff"]))
            .await
            .unwrap();
        assert_eq!(principal.subject, "acct-7");
        assert!(principal.has_role("staff"));
        let other = TestIssuer::new();
        assert!(
            other
                .verifier()
                .verify(&issuer.token("acct-7", &[]))
                .await
                .is_err()
        );
    }
}
