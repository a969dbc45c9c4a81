use axum::response::IntoResponse;
use http::{HeaderValue, StatusCode, header};

use super::layer::bearer;
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
