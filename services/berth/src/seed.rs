//! Demo data for `berth dev`, created through the public REST API (in
//! process, no network) so it exercises the same validation a user's
//! requests do. Idempotent: a restart reuses what exists.

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::components::StartError;

pub const DEMO_RESOURCE: &str = "Demo room";
pub const DEMO_EMAIL: &str = "demo@berth.dev";
pub const DEMO_PASSWORD: &str = "demo-password";

pub const PAID_TYPE: &str = "Paid consultation";

pub struct Demo {
    pub resource_id: String,
    pub appointment_type_id: String,
    /// A priced type (25.00 EUR; full refund until 24 h before, half after).
    pub paid_type_id: String,
    pub next_slot: Option<String>,
}

async fn call(
    app: &Router,
    token: Option<&str>,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), StartError> {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let request = request
        .body(body)
        .map_err(|e| StartError::service("seed", e))?;
    let response = app
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| StartError::service("seed", e))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| StartError::service("seed", e))?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_client_error() || status.is_server_error() {
        return Err(StartError::service(
            "seed",
            format!("{uri}: {status}: {value}"),
        ));
    }
    Ok((status, value))
}

fn id_of(value: &Value) -> Result<String, StartError> {
    value["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| StartError::service("seed", format!("no id in {value}")))
}

/// Ensures the demo resource (open 08:00–20:00 UTC every day) with a free
/// 30-minute appointment type, and finds its next open slot.
pub async fn ensure_demo(app: &Router) -> Result<Demo, StartError> {
    // Logs in like a user would; the demo user has every role.
    let (_, login) = call(
        app,
        None,
        Method::POST,
        "/v1/auth/login",
        Some(json!({ "email": DEMO_EMAIL, "password": DEMO_PASSWORD })),
    )
    .await?;
    let token = login["access_token"]
        .as_str()
        .ok_or_else(|| StartError::service("seed", "login answered without an access token"))?;
    let token = Some(token);
    let (_, resources) = call(app, token, Method::GET, "/v1/resources?limit=100", None).await?;
    let existing = resources["items"]
        .as_array()
        .and_then(|items| items.iter().find(|r| r["name"] == DEMO_RESOURCE).cloned());
    let resource_id = match existing {
        Some(resource) => id_of(&resource)?,
        None => {
            let (_, resource) = call(
                app,
                token,
                Method::POST,
                "/v1/resources",
                Some(json!({ "name": DEMO_RESOURCE, "time_zone": "UTC" })),
            )
            .await?;
            let id = id_of(&resource)?;
            let day = json!([{ "start": "08:00", "end": "20:00" }]);
            let week: serde_json::Map<String, Value> = [
                "monday",
                "tuesday",
                "wednesday",
                "thursday",
                "friday",
                "saturday",
                "sunday",
            ]
            .iter()
            .map(|d| ((*d).to_owned(), day.clone()))
            .collect();
            call(
                app,
                token,
                Method::PUT,
                &format!("/v1/resources/{id}/schedule"),
                Some(Value::Object(week)),
            )
            .await?;
            id
        }
    };

    let (_, types) = call(
        app,
        token,
        Method::GET,
        &format!("/v1/resources/{resource_id}/appointment-types"),
        None,
    )
    .await?;
    let named = |name: &str| {
        types
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name).cloned())
    };
    let types_uri = format!("/v1/resources/{resource_id}/appointment-types");
    let appointment_type_id = match named("Consultation") {
        Some(t) => id_of(&t)?,
        None => {
            let (_, t) = call(
                app,
                token,
                Method::POST,
                &types_uri,
                Some(json!({ "name": "Consultation", "duration_minutes": 30, "currency": "EUR" })),
            )
            .await?;
            id_of(&t)?
        }
    };
    let paid_type_id = match named(PAID_TYPE) {
        Some(t) => id_of(&t)?,
        None => {
            let (_, t) = call(
                app,
                token,
                Method::POST,
                &types_uri,
                Some(json!({
                    "name": PAID_TYPE,
                    "duration_minutes": 30,
                    "price_minor": 2500,
                    "currency": "EUR",
                    "cancellation_policy": { "full_refund_notice_hours": 24, "late_refund_percent": 50 },
                })),
            )
            .await?;
            id_of(&t)?
        }
    };

    let (_, slots) = call(
        app,
        token,
        Method::GET,
        &format!("/v1/resources/{resource_id}/slots?type={appointment_type_id}"),
        None,
    )
    .await?;
    let next_slot = slots["slots"]
        .as_array()
        .and_then(|s| s.first())
        .and_then(|s| s["start_utc"].as_str())
        .map(str::to_owned);
    Ok(Demo {
        resource_id,
        appointment_type_id,
        paid_type_id,
        next_slot,
    })
}
