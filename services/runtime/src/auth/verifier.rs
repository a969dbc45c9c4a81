//! Token verification: key lookup by `kid`, algorithm pinning, claims.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;

use super::jwks::RemoteJwks;
use super::{
    ALLOWED_ALGORITHMS, AccessClaims, AuthError, AuthLayer, DEFAULT_LEEWAY, Principal,
    RemoteJwksOptions, SharedJwks,
};

enum Keys {
    Shared(SharedJwks),
    Remote(RemoteJwks),
}

/// Tokens verified recently, so a client's next request with the same
/// token skips the signature check (an Ed25519 verification costs more
/// than the rest of a small request). Only successes are kept; a hit is
/// re-checked for `exp`/`nbf` and for its key still being published, so a
/// retired key ends its tokens' validity exactly as without the cache.
const VERIFIED_CACHE_TOKENS: usize = 10_000;

struct Verified {
    claims: AccessClaims,
    kid: String,
}

struct Inner {
    issuer: String,
    audience: String,
    keys: Keys,
    verified: quick_cache::sync::Cache<String, Arc<Verified>>,
    lookups: crate::metrics::CacheLookups,
}

/// Verifies access tokens. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
    leeway: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish()
    }
}

impl Verifier {
    /// Verifies against an in-process keyset.
    pub fn from_shared(issuer: &str, audience: &str, keys: SharedJwks) -> Self {
        Self::build(issuer, audience, Keys::Shared(keys))
    }

    /// Verifies against a JWKS served at `jwks_url` (fetched lazily).
    pub fn from_jwks_url(
        issuer: &str,
        audience: &str,
        jwks_url: &str,
        options: RemoteJwksOptions,
    ) -> Self {
        let remote = RemoteJwks {
            url: jwks_url.to_owned(),
            client: reqwest::Client::new(),
            options,
            keys: ArcSwap::from_pointee(JwkSet { keys: Vec::new() }),
            last_fetch: Mutex::new(None),
            fetched_at: ArcSwap::from_pointee(None),
        };
        Self::build(issuer, audience, Keys::Remote(remote))
    }

    fn build(issuer: &str, audience: &str, keys: Keys) -> Self {
        Self {
            inner: Arc::new(Inner {
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                keys,
                verified: quick_cache::sync::Cache::new(VERIFIED_CACHE_TOKENS),
                lookups: crate::metrics::CacheLookups::new("verified_tokens"),
            }),
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// Changes the clock-skew allowance (default [`DEFAULT_LEEWAY`]).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    async fn key_for(&self, kid: &str) -> Result<Jwk, AuthError> {
        match &self.inner.keys {
            Keys::Shared(keys) => keys.get().find(kid).cloned().ok_or(AuthError::UnknownKey),
            Keys::Remote(remote) => {
                remote.refresh(false).await?;
                if let Some(key) = remote.keys.load().find(kid) {
                    return Ok(key.clone());
                }
                // Unknown kid: the issuer may have rotated. Refetch (rate-limited).
                remote.refresh(true).await?;
                remote
                    .keys
                    .load()
                    .find(kid)
                    .cloned()
                    .ok_or(AuthError::UnknownKey)
            }
        }
    }

    /// Verifies a compact JWS access token.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.verify_claims(token).await?;
        Ok(Principal {
            subject: claims.sub,
            roles: claims.roles,
            phone_number: claims.phone_number,
        })
    }

    /// Verifies a token and returns all its claims.
    pub async fn verify_claims(&self, token: &str) -> Result<AccessClaims, AuthError> {
        let hit = self
            .inner
            .verified
            .get(token)
            .filter(|hit| self.still_valid(hit));
        self.inner.lookups.count(hit.is_some());
        if let Some(hit) = hit {
            return Ok(hit.claims.clone());
        }
        let (claims, kid) = self.verify_signed(token).await?;
        self.inner.verified.insert(
            token.to_owned(),
            Arc::new(Verified {
                claims: claims.clone(),
                kid,
            }),
        );
        Ok(claims)
    }

    /// What the full check would say of a token it accepted before: still
    /// inside `nbf`..`exp` (with the same leeway) and its key still known.
    fn still_valid(&self, hit: &Verified) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let leeway = self.leeway.as_secs();
        let in_time = hit.claims.exp >= now.saturating_sub(leeway)
            && hit.claims.nbf <= now.saturating_add(leeway);
        let key_known = match &self.inner.keys {
            Keys::Shared(keys) => keys.get().find(&hit.kid).is_some(),
            Keys::Remote(remote) => remote.keys.load().find(&hit.kid).is_some(),
        };
        in_time && key_known
    }

    /// The signature and claims check; returns the claims and the key id.
    async fn verify_signed(&self, token: &str) -> Result<(AccessClaims, String), AuthError> {
        // Parsing the header fails for algorithms jsonwebtoken does not know,
        // which includes `none`.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::Algorithm);
        }
        let kid = header.kid.ok_or(AuthError::NoKeyId)?;
        let jwk = self.key_for(&kid).await?;
        if !key_matches(&jwk, header.alg) {
            return Err(AuthError::Algorithm);
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| AuthError::UnknownKey)?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim `{c}`"))
                }
                _ => AuthError::Malformed,
            }
        })?;
        Ok((data.claims, kid))
    }

    /// Tower layer: verifies `Authorization: Bearer` when present.
    pub fn layer(&self) -> AuthLayer {
        AuthLayer {
            verifier: self.clone(),
        }
    }
}

/// Whether the JWK is a key of the family `alg` names (and, when the key
/// declares its own `alg`, exactly that one).
fn key_matches(jwk: &Jwk, alg: Algorithm) -> bool {
    if let Some(key_alg) = jwk.common.key_algorithm {
        let same = matches!(
            (key_alg, alg),
            (KeyAlgorithm::EdDSA, Algorithm::EdDSA) | (KeyAlgorithm::ES256, Algorithm::ES256)
        );
        if !same {
            return false;
        }
    }
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        _ => false,
    }
}
