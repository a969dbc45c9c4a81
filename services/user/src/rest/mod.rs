//! REST handlers and the route table.

mod admin;
mod auth;
mod email;
mod me;
mod phone;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::routing::{get, post, put};
use berth_runtime::auth::require_role;
use http::HeaderMap;
use http::request::Parts;
use serde::Serialize;

use crate::store::Account;
use crate::{Users, oidc};

impl Users {
    /// The service's public REST routes.
    pub fn rest_routes(&self) -> Router {
        let me = Router::new()
            .route(
                "/v1/me",
                get(me::get_me).patch(me::patch_me).delete(me::delete_me),
            )
            .route("/v1/me/email/verification", post(me::resend_verification))
            .with_state(self.clone());
        let admin = Router::new()
            .route("/v1/users/{id}/roles", put(admin::put_roles))
            .layer(require_role("admin"))
            .with_state(self.clone());
        let public = Router::new()
            .route("/.well-known/jwks.json", get(auth::jwks))
            .route("/v1/auth/signup", post(auth::signup))
            .route("/v1/auth/login", post(auth::login))
            .route("/v1/auth/refresh", post(auth::refresh))
            .route("/v1/auth/logout", post(auth::logout))
            .route("/v1/auth/email/verify", post(email::verify_email))
            .route("/v1/auth/password/forgot", post(email::forgot_password))
            .route("/v1/auth/password/reset", post(email::reset_password))
            .route("/v1/auth/phone/start", post(phone::phone_start))
            .route("/v1/auth/phone/verify", post(phone::phone_verify))
            .route("/v1/auth/oidc/{provider}/start", get(oidc::start))
            .route("/v1/auth/oidc/{provider}/callback", get(oidc::callback))
            .with_state(self.clone());
        public.merge(me.merge(admin).layer(self.inner.verifier.layer()))
    }
}

/// The client address: the last `X-Forwarded-For` hop (the one our own
/// ingress added) when [`crate::UserConfig::trust_forwarded_for`], else the TCP
/// peer when the server records it (`into_make_service_with_connect_info`).
/// `None` when unknown: per-address limits are then skipped rather than
/// putting every client into one bucket.
fn client_address(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_forwarded: bool,
) -> Option<String> {
    let forwarded = if trust_forwarded {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    } else {
        None
    };
    forwarded.or_else(|| peer.map(|p| p.ip().to_string()))
}

/// The client address of a request (see [`client_address`]).
struct ClientAddr(Option<String>);

impl FromRequestParts<Users> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, users: &Users) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        Ok(Self(client_address(
            &parts.headers,
            peer,
            users.config().trust_forwarded_for,
        )))
    }
}

#[derive(Serialize)]
struct AccountView {
    id: String,
    email: Option<String>,
    email_verified: bool,
    phone: Option<String>,
    phone_verified: bool,
    display_name: Option<String>,
    roles: Vec<String>,
    created_at: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id.clone(),
            email: a.email.clone(),
            email_verified: a.email_verified,
            phone: a.phone.clone(),
            phone_verified: a.phone_verified,
            display_name: a.display_name.clone(),
            roles: a.roles.clone(),
            created_at: chrono::DateTime::from_timestamp(a.created_at, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn forwarded_for_uses_the_last_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.0.0.1"),
        );
        assert_eq!(client_address(&h, None, true).as_deref(), Some("10.0.0.1"));
        assert_eq!(client_address(&h, None, false), None);
        assert_eq!(client_address(&HeaderMap::new(), None, true), None);
    }
}
