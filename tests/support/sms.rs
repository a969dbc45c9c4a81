//! A Twilio-shaped SMS provider for tests: an HTTP server accepting
//! `POST /2010-04-01/Accounts/{sid}/Messages.json` (form `To`, `From`,
//! `Body`, basic auth) and recording what was sent; it can be told to
//! answer every request with an error status instead (an outage, or a
//! number the provider refuses).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[derive(Debug, Clone)]
pub struct SentSms {
    pub account_sid: String,
    pub authorization: Option<String>,
    pub to: String,
    pub from: String,
    pub body: String,
}

#[derive(Clone)]
pub struct SmsSink {
    pub base_url: String,
    sent: Arc<Mutex<Vec<SentSms>>>,
    failing: Arc<Mutex<Option<u16>>>,
}

#[derive(Clone)]
struct SinkState {
    sent: Arc<Mutex<Vec<SentSms>>>,
    failing: Arc<Mutex<Option<u16>>>,
}

impl SmsSink {
    pub async fn start() -> Self {
        let sent: Arc<Mutex<Vec<SentSms>>> = Arc::default();
        let failing: Arc<Mutex<Option<u16>>> = Arc::default();
        let app = axum::Router::new()
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(receive))
            .with_state(SinkState {
                sent: sent.clone(),
                failing: failing.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            base_url: format!("http://{addr}"),
            sent,
            failing,
        }
    }

    /// From now on every request is answered with `status` (nothing is
    /// recorded as sent); `None` goes back to accepting.
    pub fn fail_with(&self, status: Option<u16>) {
        *self.failing.lock().unwrap() = status;
    }

    pub fn sent(&self) -> Vec<SentSms> {
        self.sent.lock().unwrap().clone()
    }

    /// The 6-digit code in the last message to `to`.
    pub fn last_code(&self, to: &str) -> String {
        let sent = self.sent();
        let message = sent
            .iter()
            .rev()
            .find(|m| m.to == to)
            .expect("no SMS to that number");
        message
            .body
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 6)
            .expect("no 6-digit code in the SMS")
            .to_owned()
    }
}

async fn receive(
    State(state): State<SinkState>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let failing = *state.failing.lock().unwrap();
    if let Some(status) = failing {
        return (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(serde_json::json!({"code": 21211, "message": "refused by the test"})),
        );
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    state.sent.lock().unwrap().push(SentSms {
        account_sid: sid,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        to: get("To"),
        from: get("From"),
        body: get("Body"),
    });
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"sid": "SM0000", "status": "queued"})),
    )
}
