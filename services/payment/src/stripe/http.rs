//! async-stripe's requests, sent through the runtime's resilient HTTP
//! client (timeout, circuit breaker, retries only for safe methods or an
//! `Idempotency-Key`, trace context): async-stripe builds each request and
//! parses each answer, this module only carries them.

use std::sync::Arc;

use berth_runtime::client::{HttpClient, https_client};
use berth_runtime::resilience::Dependency;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use stripe_client_core::{CustomizedStripeRequest, StripeClient, StripeClientErr, StripeMethod};
use tower::ServiceExt;

/// Why a Stripe call did not return the object it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeCallError {
    /// Stripe answered with an error object.
    #[error("Stripe answered {status} {kind}{}: {}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(), message.as_deref().unwrap_or("no message"))]
    Api {
        status: u16,
        /// `invalid_request_error`, `card_error`, `idempotency_error`, `api_error`.
        kind: String,
        code: Option<String>,
        message: Option<String>,
        /// The answer is one Stripe saved for this idempotency key earlier
        /// (`Idempotent-Replayed: true`).
        replayed: bool,
    },
    /// No answer (connection, timeout, open breaker): the call may or may
    /// not have taken effect; repeating it with its idempotency key is safe.
    #[error("Stripe unreachable: {0}")]
    Transport(String),
    /// An answer that does not parse as what was asked for.
    #[error("Stripe's answer did not parse: {0}")]
    Decode(String),
}

impl StripeClientErr for StripeCallError {
    fn deserialize_err(msg: impl std::fmt::Display) -> Self {
        Self::Decode(msg.to_string())
    }
}

impl StripeCallError {
    /// Worth trying again later with the same idempotency key.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Decode(_) => true,
            // 409: the same key is in flight; 429: rate limited; 5xx: Stripe.
            Self::Api { status, .. } => matches!(status, 409 | 429) || *status >= 500,
        }
    }

    /// A server error Stripe saved under the key: repeating the key only
    /// replays it, so whether the call took effect must be found out some
    /// other way before a new key is used.
    pub fn is_saved_server_error(&self) -> bool {
        matches!(self, Self::Api { status, replayed: true, .. } if *status >= 500)
    }

    /// Stripe refuses the call because of the object's state (e.g.
    /// capturing an intent that is no longer capturable).
    pub fn is_unexpected_state(&self) -> bool {
        matches!(self, Self::Api { code: Some(code), .. } if code.ends_with("unexpected_state"))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status: 404, .. })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(rename = "type")]
    kind: String,
    code: Option<String>,
    message: Option<String>,
}

/// Stripe's HTTP API at `api_base` (`https://api.stripe.com/` or a local
/// stand-in) with one secret key.
#[derive(Clone)]
pub struct StripeHttp {
    http: HttpClient,
    api_base: Arc<str>,
    authorization: HeaderValue,
    version: HeaderValue,
}

impl StripeHttp {
    pub fn new(
        api_base: &str,
        secret_key: &str,
        dependency: Arc<Dependency>,
    ) -> Result<Self, String> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {secret_key}"))
            .map_err(|_| "the Stripe API key is not a valid header value".to_owned())?;
        // Never printed by debug output of the request.
        authorization.set_sensitive(true);
        let api_base = if api_base.ends_with('/') {
            api_base.to_owned()
        } else {
            format!("{api_base}/")
        };
        Ok(Self {
            http: https_client(dependency),
            api_base: api_base.into(),
            authorization,
            version: HeaderValue::from_static(stripe_shared::version::VERSION.as_str()),
        })
    }

    async fn send(&self, request: CustomizedStripeRequest) -> Result<Bytes, StripeCallError> {
        let (builder, overrides) = request.into_pieces();
        let mut uri = format!("{}v1{}", self.api_base, builder.path);
        if let Some(query) = &builder.query {
            uri.push('?');
            uri.push_str(query);
        }
        let method = match builder.method {
            StripeMethod::Get => Method::GET,
            StripeMethod::Post => Method::POST,
            StripeMethod::Delete => Method::DELETE,
        };
        let mut http = Request::builder()
            .method(method)
            .uri(uri)
            .header(AUTHORIZATION, self.authorization.clone())
            .header("stripe-version", self.version.clone());
        if let Some(key) = overrides
            .request_strategy
            .as_ref()
            .and_then(|s| s.get_key())
        {
            http = http.header("idempotency-key", key.as_str());
        }
        if builder.body.is_some() {
            http = http.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let body = Full::new(Bytes::from(builder.body.unwrap_or_default()));
        let request = http
            .body(body)
            .map_err(|e| StripeCallError::Transport(format!("building the request: {e}")))?;
        let response = self
            .http
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| StripeCallError::Transport(e.to_string()))?;
        let status = response.status();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| StripeCallError::Transport(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .map(|b| b.error);
        Err(StripeCallError::Api {
            status: status.as_u16(),
            kind: error
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |e| e.kind.clone()),
            code: error.as_ref().and_then(|e| e.code.clone()),
            message: error.and_then(|e| e.message),
            replayed,
        })
    }
}

impl StripeClient for StripeHttp {
    type Err = StripeCallError;

    fn execute(
        &self,
        request: CustomizedStripeRequest,
    ) -> impl std::future::Future<Output = Result<Bytes, StripeCallError>> + Send {
        self.send(request)
    }
}
