//! A webhook receiver for tests that verifies signatures with the Standard
//! Webhooks reference implementation (PyPI `standardwebhooks`), not with
//! the code under test, and answers 200, 500, 410 or slowly on demand
//! (`webhooks/receiver.py`). Installed once into a cached virtualenv:
//!
//! ```sh
//! python3 -m venv ~/.cache/berth/webhook-venv
//! ~/.cache/berth/webhook-venv/bin/pip install standardwebhooks==1.1.0
//! ~/.cache/berth/webhook-venv/bin/python tests/support/webhooks/receiver.py 8099
//! ```

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

pub const STANDARDWEBHOOKS: &str = "standardwebhooks==1.1.0";

pub struct WebhookReceiver {
    pub port: u16,
    child: Child,
    http: reqwest::Client,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request's path (one receiver serves several endpoints).
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: Value,
    /// Indexes (into the secrets set by [`WebhookReceiver::set`]) of the
    /// secrets the reference library verified it with.
    pub verified_by: Vec<usize>,
    pub errors: Vec<Option<String>>,
    /// What the receiver was told to do with it.
    pub mode: String,
    /// When it arrived (Unix seconds).
    pub arrived: f64,
}

impl WebhookReceiver {
    pub fn start() -> Self {
        let python =
            super::python::venv_python("webhook-venv", STANDARDWEBHOOKS, "standardwebhooks");
        let port = super::free_port();
        let script = super::repo_root().join("tests/support/webhooks/receiver.py");
        let child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start the webhook receiver");
        super::wait_for_port(port, "webhook receiver");
        Self {
            port,
            child,
            http: reqwest::Client::new(),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// How to answer (`ok`, `fail` = 500, `gone` = 410, `slow`) and which
    /// secrets to verify with.
    pub async fn set(&self, mode: &str, secrets: &[&str]) {
        self.control(json!({"mode": mode, "secrets": secrets}))
            .await;
    }

    pub async fn control(&self, body: Value) {
        let r = self
            .http
            .post(self.url("/control"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    pub async fn received(&self) -> Vec<Received> {
        let all: Vec<Value> = self
            .http
            .get(self.url("/received"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.into_iter()
            .map(|r| {
                let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                Received {
                    path: text("path"),
                    id: text("id"),
                    timestamp: text("timestamp"),
                    signature: text("signature"),
                    content_type: text("content_type"),
                    body: serde_json::from_str(r["body"].as_str().unwrap_or("null"))
                        .unwrap_or(Value::Null),
                    verified_by: r["verified_by"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|i| i.as_u64())
                                .map(|i| i as usize)
                                .collect()
                        })
                        .unwrap_or_default(),
                    errors: r["errors"]
                        .as_array()
                        .map(|a| a.iter().map(|e| e.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default(),
                    mode: text("mode"),
                    arrived: r["arrived"].as_f64().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize, seconds: u64) -> Vec<Received> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        loop {
            let got = self.received().await;
            if got.len() >= n {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "expected {n} webhook(s), got {}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
