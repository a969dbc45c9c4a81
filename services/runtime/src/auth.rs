//! Shared bearer-token verification: every service checks access JWTs the
//! same way.
//!
//! * Keys come from a JWKS fetched over HTTP and cached (refetched on an
//!   unknown `kid`, at most once per [`RemoteJwksOptions::min_refetch`]), or
//!   from an in-process [`SharedJwks`] (`berth dev`, where the user service
//!   runs in the same process).
//! * Only the algorithms in [`ALLOWED_ALGORITHMS`] are accepted. The token
//!   header's `alg` must be in that list *and* match the key the `kid` names
//!   (key type, curve and the key's own `alg`), so `none`, HS* (e.g. HMAC
//!   "signed" with the public key) and algorithm confusion are rejected.
//! * `iss`, `aud`, `exp`, `nbf` and `sub` are required and validated with a
//!   small leeway.
//!
//! Use [`Verifier::layer`] on a router: requests with a valid token carry a
//! [`Principal`] extension, requests with an invalid one get 401
//! problem+json with `WWW-Authenticate`, requests without one pass through
//! and fail at the [`Principal`] extractor (401) only where a handler needs
//! it. [`require_role`] turns a whole router into "this role only" (403).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::problem::Problem;

/// The only signature algorithms a token may use.
pub const ALLOWED_ALGORITHMS: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::ES256];

/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Who made the request, as proven by a verified access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub subject: String,
    pub roles: Vec<String>,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// `Ok` when the principal has `role`, else 403 problem+json.
    pub fn require_role(&self, role: &str) -> Result<(), Problem> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(forbidden(role))
        }
    }
}

fn forbidden(role: &str) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
        .with_detail(format!("requires the `{role}` role"))
}

/// Claims of a Berth access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Why a token was refused. The message never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm is not allowed")]
    Algorithm,
    #[error("token has no key id")]
    NoKeyId,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("signing keys are unavailable")]
    KeysUnavailable,
}

impl AuthError {
    fn problem(&self) -> Problem {
        match self {
            AuthError::KeysUnavailable => Problem::unavailable(self.to_string()),
            _ => Problem::unauthorized(self.to_string()),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let challenge = match self {
            AuthError::Missing => "Bearer realm=\"berth\"".to_owned(),
            AuthError::KeysUnavailable => return problem.into_response(),
            _ => format!(
                "Bearer realm=\"berth\", error=\"invalid_token\", error_description=\"{self}\""
            ),
        };
        let mut response = problem.into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// A keyset shared in-process; the issuer swaps it on key rotation.
#[derive(Clone)]
pub struct SharedJwks(Arc<ArcSwap<JwkSet>>);

impl SharedJwks {
    pub fn new(keys: JwkSet) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(keys)))
    }

    pub fn get(&self) -> Arc<JwkSet> {
        self.0.load_full()
    }

    pub fn set(&self, keys: JwkSet) {
        self.0.store(Arc::new(keys));
    }
}

impl std::fmt::Debug for SharedJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedJwks")
            .field("keys", &self.get().keys.len())
            .finish()
    }
}

/// Settings of a JWKS fetched over HTTP.
#[derive(Debug, Clone)]
pub struct RemoteJwksOptions {
    /// Keys older than this are refetched before use.
    pub max_age: Duration,
    /// Minimum time between two fetches (also when a `kid` is unknown), so
    /// tokens with random key ids cannot hammer the issuer.
    pub min_refetch: Duration,
    pub timeout: Duration,
}

impl Default for RemoteJwksOptions {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(600),
            min_refetch: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    options: RemoteJwksOptions,
    keys: ArcSwap<JwkSet>,
    /// Time of the last fetch attempt; the lock also serialises fetches.
    last_fetch: Mutex<Option<Instant>>,
    fetched_at: ArcSwap<Option<Instant>>,
}

impl RemoteJwks {
    /// Fetches the keyset unless one was fetched less than `min_refetch` ago.
    async fn refresh(&self, force: bool) -> Result<(), AuthError> {
        let mut last = self.last_fetch.lock().await;
        if let Some(at) = *last {
            let fresh = at.elapsed() < self.options.min_refetch;
            if fresh || (!force && at.elapsed() < self.options.max_age) {
                return Ok(());
            }
        }
        *last = Some(Instant::now());
        let fetched = async {
            self.client
                .get(&self.url)
                .timeout(self.options.timeout)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        }
        .await;
        match fetched {
            Ok(keys) => {
                self.keys.store(Arc::new(keys));
                self.fetched_at.store(Arc::new(Some(Instant::now())));
                Ok(())
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "cannot fetch JWKS");
                if self.fetched_at.load().is_some() {
                    Ok(())
                } else {
                    Err(AuthError::KeysUnavailable)
                }
            }
        }
    }
}

enum Keys {
    Shared(SharedJwks),
    Remote(RemoteJwks),
}

struct Inner {
    issuer: String,
    audience: String,
    keys: Keys,
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
        })
    }

    /// Verifies a token and returns all its claims.
    pub async fn verify_claims(&self, token: &str) -> Result<AccessClaims, AuthError> {
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
        Ok(data.claims)
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

fn bearer(parts: &http::HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = parts.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(Some(token.trim()))
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// See [`Verifier::layer`].
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Verifier,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Verifier,
}

impl<S> tower::Service<Request> for AuthService<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let token = match bearer(req.headers()) {
                Ok(Some(token)) => token.to_owned(),
                Ok(None) => return inner.call(req).await,
                Err(error) => return Ok(error.into_response()),
            };
            match verifier.verify(&token).await {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Err(error) => {
                    tracing::debug!(%error, "bearer token refused");
                    Ok(error.into_response())
                }
            }
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| AuthError::Missing.into_response())
    }
}

/// Tower layer: only principals with `role` get through (401 without a
/// principal, 403 without the role). Apply it *inside* [`Verifier::layer`]
/// (i.e. call `.layer(require_role(..))` before `.layer(verifier.layer())`).
pub fn require_role(role: &str) -> RequireRoleLayer {
    RequireRoleLayer {
        role: Arc::from(role),
    }
}

#[derive(Clone)]
pub struct RequireRoleLayer {
    role: Arc<str>,
}

impl<S> tower::Layer<S> for RequireRoleLayer {
    type Service = RequireRoleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireRoleService {
            inner,
            role: self.role.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireRoleService<S> {
    inner: S,
    role: Arc<str>,
}

impl<S> tower::Service<Request> for RequireRoleService<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let role = self.role.clone();
        Box::pin(async move {
            match req.extensions().get::<Principal>() {
                None => Ok(AuthError::Missing.into_response()),
                Some(p) if !p.has_role(&role) => Ok(forbidden(&role).into_response()),
                Some(_) => inner.call(req).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), Ok(None));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Ok(Some("abc")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), Err(AuthError::Malformed));
    }

    #[test]
    fn missing_token_challenges() {
        let r = AuthError::Missing.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}

/// Bearer verification end to end: the attacks a verifier must refuse, JWKS
/// fetching with refetch on unknown `kid`, and the layer / extractor / roles.
#[cfg(test)]
mod attack_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{AuthError, Principal, RemoteJwksOptions, SharedJwks, Verifier, require_role};
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use http::{Request, StatusCode, header};
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::{Value, json};
    use tower::ServiceExt;

    const ISS: &str = "https://auth.berth.test";
    const AUD: &str = "berth";

    struct Key {
        kid: String,
        encoding: EncodingKey,
        public_raw: Vec<u8>,
        jwk: Jwk,
    }

    fn key(kid: &str) -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public_raw = pair.public_key().as_ref().to_vec();
        let jwk = serde_json::from_value(json!({
            "kty": "OKP", "crv": "Ed25519", "x": B64.encode(&public_raw),
            "kid": kid, "alg": "EdDSA", "use": "sig"
        }))
        .unwrap();
        Key {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            public_raw,
            jwk,
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims() -> Value {
        let now = now();
        json!({
            "iss": ISS, "aud": AUD, "sub": "acct-1", "roles": ["customer"],
            "iat": now, "nbf": now, "exp": now + 600
        })
    }

    fn sign(key: &Key, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    fn verifier(keys: &[&Key]) -> Verifier {
        let set = JwkSet {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        };
        Verifier::from_shared(ISS, AUD, SharedJwks::new(set)).with_leeway(Duration::from_secs(5))
    }

    fn b64json(v: &Value) -> String {
        B64.encode(serde_json::to_vec(v).unwrap())
    }

    #[tokio::test]
    async fn a_valid_token_yields_the_principal() {
        let k = key("k1");
        let p = verifier(&[&k]).verify(&sign(&k, &claims())).await.unwrap();
        assert_eq!(p.subject, "acct-1");
        assert_eq!(p.roles, vec!["customer"]);
    }

    #[tokio::test]
    async fn alg_none_is_rejected() {
        let k = key("k1");
        let token = format!(
            "{}.{}.",
            b64json(&json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
            b64json(&claims())
        );
        assert!(verifier(&[&k]).verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_rejected() {
        let k = key("k1");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        // Both the raw key and its JWK `x` text, the classic confusion inputs.
        for secret in [k.public_raw.clone(), B64.encode(&k.public_raw).into_bytes()] {
            let token =
                jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret))
                    .unwrap();
            assert_eq!(
                verifier(&[&k]).verify(&token).await,
                Err(AuthError::Algorithm)
            );
        }
    }

    #[tokio::test]
    async fn expired_and_not_yet_valid_tokens_are_rejected() {
        let k = key("k1");
        let v = verifier(&[&k]);
        let mut expired = claims();
        expired["exp"] = json!(now() - 60);
        assert_eq!(v.verify(&sign(&k, &expired)).await, Err(AuthError::Expired));
        let mut early = claims();
        early["nbf"] = json!(now() + 120);
        assert_eq!(
            v.verify(&sign(&k, &early)).await,
            Err(AuthError::NotYetValid)
        );
        // Within the leeway both are fine.
        let mut edge = claims();
        edge["exp"] = json!(now() - 2);
        edge["nbf"] = json!(now() + 2);
        assert!(v.verify(&sign(&k, &edge)).await.is_ok());
    }

    #[tokio::test]
    async fn wrong_issuer_or_audience_is_rejected() {
        let k = key("k1");
        let v = verifier(&[&k]);
        let mut c = claims();
        c["iss"] = json!("https://evil.test");
        assert!(matches!(
            v.verify(&sign(&k, &c)).await,
            Err(AuthError::Invalid(_))
        ));
        let mut c = claims();
        c["aud"] = json!("other-service");
        assert!(matches!(
            v.verify(&sign(&k, &c)).await,
            Err(AuthError::Invalid(_))
        ));
        let mut c = claims();
        c.as_object_mut().unwrap().remove("aud");
        assert!(v.verify(&sign(&k, &c)).await.is_err());
    }

    #[tokio::test]
    async fn a_tampered_payload_is_rejected() {
        let k = key("k1");
        let token = sign(&k, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims();
        c["roles"] = json!(["admin"]);
        let forged = format!("{}.{}.{}", parts[0], b64json(&c), parts[2]);
        assert!(matches!(
            verifier(&[&k]).verify(&forged).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn unknown_or_missing_kid_is_rejected() {
        let trusted = key("k1");
        let attacker = key("k2");
        let v = verifier(&[&trusted]);
        assert_eq!(
            v.verify(&sign(&attacker, &claims())).await,
            Err(AuthError::UnknownKey)
        );
        // An attacker key claiming the trusted kid fails the signature.
        let impostor = Key {
            kid: "k1".into(),
            ..key("k1")
        };
        assert!(v.verify(&sign(&impostor, &claims())).await.is_err());
        let no_kid =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims(), &trusted.encoding)
                .unwrap();
        assert_eq!(v.verify(&no_kid).await, Err(AuthError::NoKeyId));
    }

    #[tokio::test]
    async fn a_header_alg_not_matching_the_key_is_rejected() {
        let k = key("k1");
        // Claim ES256 (allowed in general) for an Ed25519 key.
        let token = sign(&k, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let header = b64json(&json!({"alg": "ES256", "typ": "JWT", "kid": "k1"}));
        let forged = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            verifier(&[&k]).verify(&forged).await,
            Err(AuthError::Algorithm)
        );
    }

    /// A JWKS endpoint counting fetches, serving whatever keys it holds now.
    async fn jwks_server(keys: Arc<std::sync::Mutex<Vec<Jwk>>>, hits: Arc<AtomicUsize>) -> String {
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let keys = keys.clone();
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    axum::Json(JwkSet {
                        keys: keys.lock().unwrap().clone(),
                    })
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        format!("http://{addr}/.well-known/jwks.json")
    }

    #[tokio::test]
    async fn remote_jwks_is_cached_and_refetched_on_unknown_kid_rate_limited() {
        let old = key("old");
        let new = key("new");
        let keys = Arc::new(std::sync::Mutex::new(vec![old.jwk.clone()]));
        let hits = Arc::new(AtomicUsize::new(0));
        let url = jwks_server(keys.clone(), hits.clone()).await;
        let v = Verifier::from_jwks_url(
            ISS,
            AUD,
            &url,
            RemoteJwksOptions {
                min_refetch: Duration::from_millis(300),
                ..RemoteJwksOptions::default()
            },
        );
        v.verify(&sign(&old, &claims())).await.unwrap();
        v.verify(&sign(&old, &claims())).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1, "keys are cached");

        // Rotation at the issuer: the new kid is unknown until a refetch, which
        // is allowed only after `min_refetch`.
        keys.lock().unwrap().push(new.jwk.clone());
        assert_eq!(
            v.verify(&sign(&new, &claims())).await,
            Err(AuthError::UnknownKey)
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1, "refetch is rate-limited");
        tokio::time::sleep(Duration::from_millis(350)).await;
        v.verify(&sign(&new, &claims())).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // Random kids cannot force more fetches inside the window.
        for i in 0..5 {
            let _ = v.verify(&sign(&key(&format!("x{i}")), &claims())).await;
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // Old and new both verify during the rotation.
        v.verify(&sign(&old, &claims())).await.unwrap();
    }

    #[tokio::test]
    async fn unreachable_jwks_is_unavailable_not_accepted() {
        let k = key("k1");
        let v = Verifier::from_jwks_url(
            ISS,
            AUD,
            "http://127.0.0.1:9/jwks.json",
            RemoteJwksOptions::default(),
        );
        assert_eq!(
            v.verify(&sign(&k, &claims())).await,
            Err(AuthError::KeysUnavailable)
        );
    }

    fn app(v: &Verifier) -> Router {
        let admin = Router::new()
            .route("/admin", get(|| async { "admin ok" }))
            .layer(require_role("admin"));
        Router::new()
            .route("/me", get(|p: Principal| async move { p.subject.clone() }))
            .route("/public", get(|| async { "hello" }))
            .merge(admin)
            .layer(v.layer())
    }

    async fn call(
        app: &Router,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, http::HeaderMap, String) {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn layer_extractor_and_roles() {
        let k = key("k1");
        let v = verifier(&[&k]);
        let app = app(&v);
        let good = sign(&k, &claims());

        let (s, _, body) = call(&app, "/me", Some(&good)).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "acct-1"));

        let (s, h, body) = call(&app, "/me", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
        assert!(
            h[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert!(body.contains("unauthorized"));

        let mut expired = claims();
        expired["exp"] = json!(now() - 600);
        let (s, h, body) = call(&app, "/public", Some(&sign(&k, &expired))).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "an invalid token is refused even on public routes"
        );
        assert!(
            h[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        assert!(!body.contains(&sign(&k, &expired)[..20]));

        assert_eq!(call(&app, "/public", None).await.0, StatusCode::OK);
        assert_eq!(call(&app, "/admin", None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            call(&app, "/admin", Some(&good)).await.0,
            StatusCode::FORBIDDEN
        );
        let mut admin = claims();
        admin["roles"] = json!(["admin"]);
        let (s, _, body) = call(&app, "/admin", Some(&sign(&k, &admin))).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "admin ok"));
    }

    #[tokio::test]
    async fn es256_keys_are_supported() {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let jwk: Jwk = serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256", "use": "sig",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        }))
        .unwrap();
        let v = Verifier::from_shared(ISS, AUD, SharedJwks::new(JwkSet { keys: vec![jwk] }));
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec1".into());
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        let token = jsonwebtoken::encode(&header, &claims(), &encoding).unwrap();
        assert_eq!(v.verify(&token).await.unwrap().subject, "acct-1");
        // The same key under an EdDSA header is refused.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            b64json(&json!({"alg": "EdDSA", "kid": "ec1"})),
            parts[1],
            parts[2]
        );
        assert_eq!(v.verify(&forged).await, Err(AuthError::Algorithm));
    }
}
