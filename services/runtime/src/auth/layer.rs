//! Tower layers: bearer verification and role gates.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header;

use super::principal::forbidden;
use super::{AuthError, Principal, Verifier};

pub(super) fn bearer(parts: &http::HeaderMap) -> Result<Option<&str>, AuthError> {
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
    pub(super) verifier: Verifier,
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
