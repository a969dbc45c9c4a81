//! Shared by the emulator's tests: a started emulator, a form-encoding
//! HTTP client, strict parsing with async-stripe's types, and a webhook
//! receiver that records what it gets.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use berth_stripe_emulator::{Config, Emulator, Endpoint, Running, WebhookRetry};
use serde_json::Value;

pub const KEY: &str = "sk_test_berth";
pub const SECRET: &str = "whsec_test_current";
pub const OLD_SECRET: &str = "whsec_test_previous";

pub async fn start() -> Running {
    start_with(Config::default()).await
}

pub async fn start_with(config: Config) -> Running {
    Emulator::start(Config {
        webhook_retry: WebhookRetry {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        },
        ..config
    })
    .await
    .unwrap()
}

/// A raw HTTP client speaking Stripe's form encoding.
pub struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub json: Value,
}

impl Resp {
    /// Parses with async-stripe's miniserde types, as its client does.
    pub fn parse<T: miniserde::Deserialize>(&self) -> T {
        miniserde::json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not a {}: {}", std::any::type_name::<T>(), self.body))
    }

    /// Parses a Stripe error body as async-stripe does.
    pub fn error(&self) -> stripe_shared::ApiErrors {
        *self.parse::<stripe_shared::Error>().error
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn id(&self) -> String {
        self.json["id"].as_str().unwrap().to_owned()
    }
}

impl Api {
    pub fn new(running: &Running) -> Self {
        Self::with_key(running, KEY)
    }

    pub fn with_key(running: &Running, key: &str) -> Self {
        Self {
            base: running.base_url.clone(),
            key: key.into(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let res = req.bearer_auth(&self.key).send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.text().await.unwrap();
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            json,
        }
    }

    pub async fn post(&self, path: &str, form: &str) -> Resp {
        self.post_with(path, form, None).await
    }

    pub async fn post_with(&self, path: &str, form: &str, idempotency_key: Option<&str>) -> Resp {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        self.send(req).await
    }

    pub async fn get(&self, path_and_query: &str) -> Resp {
        self.send(self.http.get(format!("{}{path_and_query}", self.base)))
            .await
    }

    /// A manual-capture intent confirmed with `pm`.
    pub async fn authorised(&self, amount: i64, pm: &str) -> Resp {
        let created = self
            .post(
                "/v1/payment_intents",
                &format!("amount={amount}&currency=eur&capture_method=manual&payment_method_types[]=card&metadata[booking_id]=b-{amount}"),
            )
            .await;
        assert_eq!(created.status, 200, "{}", created.body);
        self.post(
            &format!("/v1/payment_intents/{}/confirm", created.id()),
            &format!("payment_method={pm}"),
        )
        .await
    }

    /// A captured (succeeded) intent of `amount`.
    pub async fn captured(&self, amount: i64) -> String {
        let confirmed = self.authorised(amount, "pm_card_visa").await;
        assert_eq!(confirmed.status, 200, "{}", confirmed.body);
        let captured = self
            .post(
                &format!("/v1/payment_intents/{}/capture", confirmed.id()),
                "",
            )
            .await;
        assert_eq!(captured.status, 200, "{}", captured.body);
        captured.id()
    }
}

/// One webhook request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub signature: String,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// An endpoint that records every request and answers the statuses queued
/// in `answers` (200 once they run out).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (g, a) = (got.clone(), answers.clone());
        let app = axum::Router::new().route(
            "/webhooks/stripe",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (g, a) = (g.clone(), a.clone());
                async move {
                    let signature = headers
                        .get("stripe-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    g.lock().unwrap().push(Received { signature, body });
                    let status = a.lock().unwrap().pop_front().unwrap_or(200);
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks/stripe", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, got, answers }
    }

    pub fn endpoint(&self, secrets: &[&str]) -> Endpoint {
        Endpoint {
            url: self.url.clone(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..300 {
            let got = self.received();
            if got.len() >= count {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "expected {count} webhook requests, got {:?}",
            self.received()
        );
    }

    /// Event types in the order received.
    pub fn types(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect()
    }
}
