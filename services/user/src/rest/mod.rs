//! REST handlers and the route table.

mod admin;
mod auth;
mod email;
mod me;
mod phone;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use berth_runtime::auth::require_role;
use http::HeaderMap;
use http::request::Parts;
use serde::Serialize;
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::Account;
use crate::{Users, oidc};

/// What the document starts from: the tags' descriptions.
#[derive(utoipa::OpenApi)]
#[openapi(
    tags(
        (name = "auth", description = "Sign-up, login, tokens and account recovery"),
        (name = "me", description = "The signed-in account"),
        (name = "users", description = "Account administration"),
        (name = "jwks", description = "Public keys for verifying access tokens"),
    )
)]
struct BaseDoc;

/// The route table. [`Users::rest_routes`] serves it and [`openapi`]
/// documents it, so the two cannot drift apart.
struct RouteTable {
    /// Served behind the bearer verifier, which needs the service's keys and
    /// so is added in [`Users::rest_routes`].
    authenticated: OpenApiRouter<Users>,
    public: OpenApiRouter<Users>,
}

fn route_table() -> RouteTable {
    let me = OpenApiRouter::default()
        .routes(routes!(me::get_me, me::patch_me, me::delete_me))
        .routes(routes!(me::resend_verification));
    let admin = OpenApiRouter::default()
        .routes(routes!(admin::put_roles))
        .layer(require_role("admin"));
    let public = OpenApiRouter::default()
        .routes(routes!(auth::jwks))
        .routes(routes!(auth::signup))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(email::verify_email))
        .routes(routes!(email::forgot_password))
        .routes(routes!(email::reset_password))
        .routes(routes!(phone::phone_start))
        .routes(routes!(phone::phone_verify))
        .routes(routes!(oidc::start))
        .routes(routes!(oidc::callback));
    RouteTable {
        authenticated: me.merge(admin),
        public,
    }
}

/// The OpenAPI document of the user service's REST API.
pub fn openapi() -> OpenApi {
    let RouteTable {
        authenticated,
        public,
    } = route_table();
    let mut doc = BaseDoc::openapi();
    doc.merge(authenticated.into_openapi());
    doc.merge(public.into_openapi());
    berth_runtime::openapi::finish(doc, "Berth user API")
}

impl Users {
    /// The service's public REST routes.
    pub fn rest_routes(&self) -> Router {
        let RouteTable {
            authenticated,
            public,
        } = route_table();
        let authenticated = Router::from(authenticated).layer(self.inner.verifier.layer());
        Router::from(public)
            .merge(authenticated)
            .with_state(self.clone())
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

/// An account.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Account)]
struct AccountView {
    id: String,
    // Always sent, as `null` when unset.
    #[schema(required, format = Email)]
    email: Option<String>,
    email_verified: bool,
    /// E.164.
    #[schema(required)]
    phone: Option<String>,
    phone_verified: bool,
    #[schema(required)]
    display_name: Option<String>,
    /// Any of `customer`, `staff`, `admin`.
    roles: Vec<String>,
    #[schema(format = DateTime)]
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

    #[test]
    fn openapi_document_is_complete() {
        let defects = berth_runtime::openapi::defects(
            &openapi(),
            &[
                "GET /v1/me",
                "PATCH /v1/me",
                "DELETE /v1/me",
                "POST /v1/me/email/verification",
                "PUT /v1/users/{id}/roles",
                "GET /.well-known/jwks.json",
                "POST /v1/auth/signup",
                "POST /v1/auth/login",
                "POST /v1/auth/refresh",
                "POST /v1/auth/logout",
                "POST /v1/auth/email/verify",
                "POST /v1/auth/password/forgot",
                "POST /v1/auth/password/reset",
                "POST /v1/auth/phone/start",
                "POST /v1/auth/phone/verify",
                "GET /v1/auth/oidc/{provider}/start",
                "GET /v1/auth/oidc/{provider}/callback",
            ],
        );
        assert!(defects.is_empty(), "{defects:#?}");
    }
}
