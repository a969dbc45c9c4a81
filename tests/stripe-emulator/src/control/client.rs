//! `Control`: the typed client of `/_emulator/`, for tests and `berth dev`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::types::{
    ActionBody, ActionOutcome, DeliveryRecord, EndpointsBody, Queued, StateSnapshot,
};
use crate::Endpoint;
use crate::faults::Faults;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("control API answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("timed out after {0:?} waiting for webhook deliveries")]
    Timeout(Duration),
}

/// Drives a running emulator (in-process or its own process).
#[derive(Debug, Clone)]
pub struct Control {
    base_url: String,
    http: reqwest::Client,
}

impl Control {
    /// `base_url` as printed by the emulator, e.g. `http://127.0.0.1:41234`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_emulator{path}", self.base_url)
    }

    async fn read<T: DeserializeOwned>(res: reqwest::Response) -> Result<T, ControlError> {
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            return Err(ControlError::Status {
                status: status.as_u16(),
                body,
            });
        }
        Ok(res.json().await?)
    }

    async fn empty(res: reqwest::Response) -> Result<(), ControlError> {
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let body = res.text().await.unwrap_or_default();
        Err(ControlError::Status {
            status: status.as_u16(),
            body,
        })
    }

    /// Replaces every fault with `faults`.
    pub async fn set_faults(&self, faults: &Faults) -> Result<(), ControlError> {
        let res = self
            .http
            .post(self.url("/faults"))
            .json(faults)
            .send()
            .await?;
        Self::read::<Faults>(res).await.map(|_| ())
    }

    /// The faults in force (with what is left of `fail_next`).
    pub async fn faults(&self) -> Result<Faults, ControlError> {
        Self::read(self.http.get(self.url("/faults")).send().await?).await
    }

    pub async fn clear_faults(&self) -> Result<(), ControlError> {
        Self::empty(self.http.delete(self.url("/faults")).send().await?).await
    }

    /// The authorisation of a `requires_capture` intent lapses; answers the intent.
    pub async fn expire(&self, intent_id: &str) -> Result<Value, ControlError> {
        let url = self.url(&format!("/payment_intents/{intent_id}/expire"));
        Self::read(self.http.post(url).send().await?).await
    }

    /// Completes or fails a `requires_action` intent's authentication.
    pub async fn action(
        &self,
        intent_id: &str,
        outcome: ActionOutcome,
    ) -> Result<Value, ControlError> {
        let url = self.url(&format!("/payment_intents/{intent_id}/action"));
        Self::read(
            self.http
                .post(url)
                .json(&ActionBody { outcome })
                .send()
                .await?,
        )
        .await
    }

    /// Sends the event again to every endpoint, freshly signed; answers how many were queued.
    pub async fn redeliver(&self, event_id: &str) -> Result<usize, ControlError> {
        let url = self.url(&format!("/events/{event_id}/redeliver"));
        Self::read::<Queued>(self.http.post(url).send().await?)
            .await
            .map(|q| q.queued)
    }

    /// Releases deliveries kept by `hold`; answers how many were released.
    pub async fn flush(&self) -> Result<usize, ControlError> {
        let res = self.http.post(self.url("/webhooks/flush")).send().await?;
        Self::read::<Queued>(res).await.map(|q| q.queued)
    }

    /// Replaces the webhook endpoints.
    pub async fn set_webhooks(&self, endpoints: Vec<Endpoint>) -> Result<(), ControlError> {
        let res = self
            .http
            .post(self.url("/webhooks"))
            .json(&EndpointsBody { endpoints })
            .send()
            .await?;
        Self::empty(res).await
    }

    pub async fn webhooks(&self) -> Result<Vec<Endpoint>, ControlError> {
        let body: EndpointsBody =
            Self::read(self.http.get(self.url("/webhooks")).send().await?).await?;
        Ok(body.endpoints)
    }

    /// Every delivery attempt so far, in the order made.
    pub async fn deliveries(&self) -> Result<Vec<DeliveryRecord>, ControlError> {
        Self::read(self.http.get(self.url("/deliveries")).send().await?).await
    }

    /// Polls until at least `count` attempts were made.
    pub async fn wait_for_deliveries(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<DeliveryRecord>, ControlError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = self.deliveries().await?;
            if d.len() >= count {
                return Ok(d);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every intent and refund: the Stripe side of a money check.
    pub async fn state(&self) -> Result<StateSnapshot, ControlError> {
        Self::read(self.http.get(self.url("/state")).send().await?).await
    }
}
