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
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
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
async fn a_remembered_token_still_expires_and_dies_with_its_key() {
    let k = key("k1");
    let keys = SharedJwks::new(JwkSet {
        keys: vec![k.jwk.clone()],
    });
    let v = Verifier::from_shared(ISS, AUD, keys.clone()).with_leeway(Duration::ZERO);
    let token = sign(&k, &claims());
    // The second check is answered from the verified-token cache.
    let hits = || {
        crate::metrics::cache_lookups()
            .with_label_values(&["verified_tokens", "hit"])
            .get()
    };
    assert!(v.verify(&token).await.is_ok());
    let before = hits();
    assert!(v.verify(&token).await.is_ok());
    assert!(hits() > before, "counted as a cache hit");
    // Retiring the key ends the token's validity at once.
    keys.set(JwkSet { keys: Vec::new() });
    assert_eq!(v.verify(&token).await, Err(AuthError::UnknownKey));
    keys.set(JwkSet {
        keys: vec![k.jwk.clone()],
    });
    // A remembered token still expires on time.
    let mut short = claims();
    short["exp"] = json!(now() + 1);
    let short = sign(&k, &short);
    assert!(v.verify(&short).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(v.verify(&short).await, Err(AuthError::Expired));
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
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims(), &trusted.encoding).unwrap();
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
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
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
