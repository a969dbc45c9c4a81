//! Stripe's error bodies: `{"error": {"type", "code", "message", "param", ...}}`.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// Every way a Stripe API call can fail, each with Stripe's status and type.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ApiError {
    /// A parameter failed validation before the endpoint did anything;
    /// Stripe saves no idempotent result for it.
    #[error("{message}")]
    Param {
        code: &'static str,
        message: String,
        param: String,
    },
    /// 404 for an object that does not exist.
    #[error("No such {kind}: '{id}'")]
    Missing {
        kind: &'static str,
        id: String,
        param: Option<&'static str>,
    },
    /// 400 for an operation the object's status does not allow.
    #[error("{message}")]
    UnexpectedState {
        message: String,
        payment_intent: Value,
    },
    /// 400 from inside an operation (e.g. a refund larger than what is left).
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        param: Option<&'static str>,
    },
    /// 402: the card was declined; the intent is in the body.
    #[error("{message}")]
    Card {
        code: &'static str,
        decline_code: Option<&'static str>,
        message: String,
        charge: Option<String>,
        payment_intent: Value,
        payment_method: Option<Value>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error(
        "This API call cannot be made with a publishable API key. Please use a secret API key. You can find a list of your API keys at https://dashboard.stripe.com/account/apikeys."
    )]
    SecretKeyRequired,
    #[error(
        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{0}' if you meant to execute a different request."
    )]
    IdempotencyMismatch(String),
    #[error(
        "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): {0}. Please try again later."
    )]
    IdempotencyInFlight(String),
    /// An injected failure: Stripe's generic 500 (or the status asked for).
    #[error("An unknown error occurred")]
    Injected(u16),
    #[error(
        "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
    )]
    UnknownUrl { method: String, path: String },
}

impl ApiError {
    pub(crate) fn param(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        Self::Param {
            code,
            message: message.into(),
            param: param.to_owned(),
        }
    }

    pub(crate) fn missing(kind: &'static str, id: &str, param: Option<&'static str>) -> Self {
        Self::Missing {
            kind,
            id: id.to_owned(),
            param,
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Param { .. } | Self::UnexpectedState { .. } | Self::Invalid { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::IdempotencyMismatch(_) => StatusCode::BAD_REQUEST,
            // An id in the URL that does not exist is a 404; one named by a
            // parameter is a 400 with the same code.
            Self::Missing { param: None, .. } | Self::UnknownUrl { .. } => StatusCode::NOT_FOUND,
            Self::Missing { param: Some(_), .. } => StatusCode::BAD_REQUEST,
            Self::Card { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::Unauthorized(_) | Self::SecretKeyRequired => StatusCode::UNAUTHORIZED,
            Self::IdempotencyInFlight(_) => StatusCode::CONFLICT,
            Self::Injected(status) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// Whether Stripe saves this answer under the request's idempotency
    /// key: only once the endpoint began executing.
    pub(crate) fn saved(&self) -> bool {
        matches!(
            self,
            Self::UnexpectedState { .. } | Self::Invalid { .. } | Self::Card { .. }
        )
    }

    fn type_(&self) -> &'static str {
        match self {
            Self::Card { .. } => "card_error",
            Self::IdempotencyMismatch(_) | Self::IdempotencyInFlight(_) => "idempotency_error",
            Self::Injected(_) => "api_error",
            _ => "invalid_request_error",
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            Self::Param { code, .. } | Self::Invalid { code, .. } | Self::Card { code, .. } => {
                Some(code)
            }
            Self::Missing { .. } => Some("resource_missing"),
            Self::UnexpectedState { .. } => Some("payment_intent_unexpected_state"),
            Self::IdempotencyInFlight(_) => Some("idempotency_key_in_use"),
            Self::SecretKeyRequired => Some("secret_key_required"),
            _ => None,
        }
    }

    pub(crate) fn body(&self) -> Value {
        let mut e = Map::new();
        e.insert("type".into(), json!(self.type_()));
        e.insert("message".into(), json!(self.to_string()));
        if let Some(code) = self.code() {
            e.insert("code".into(), json!(code));
            e.insert(
                "doc_url".into(),
                json!(format!(
                    "https://stripe.com/docs/error-codes/{}",
                    code.replace('_', "-")
                )),
            );
        }
        match self {
            Self::Param { param, .. } => {
                e.insert("param".into(), json!(param));
            }
            Self::Missing { param: Some(p), .. } | Self::Invalid { param: Some(p), .. } => {
                e.insert("param".into(), json!(p));
            }
            Self::UnexpectedState { payment_intent, .. } => {
                e.insert("payment_intent".into(), payment_intent.clone());
            }
            Self::Card {
                decline_code,
                charge,
                payment_intent,
                payment_method,
                ..
            } => {
                if let Some(d) = decline_code {
                    e.insert("decline_code".into(), json!(d));
                }
                if let Some(c) = charge {
                    e.insert("charge".into(), json!(c));
                }
                e.insert("payment_intent".into(), payment_intent.clone());
                if let Some(pm) = payment_method {
                    e.insert("payment_method".into(), pm.clone());
                }
            }
            _ => {}
        }
        json!({ "error": e })
    }
}
