//! The webhook sender: takes due deliveries under a lease, signs and posts
//! them through the egress guard, and writes what came of it.

use std::time::Duration;

use reqwest::Url;
use tokio_util::sync::CancellationToken;

use crate::Notifications;
use crate::metrics;
use crate::model::{after, now};
use crate::store::WebhookOutcome;
use crate::webhooks::{WebhookDelivery, signature};

pub(crate) fn spawn(notifications: Notifications, stop: CancellationToken) {
    tokio::spawn(async move {
        let config = notifications.inner.config.clone();
        while !stop.is_cancelled() {
            let full = match notifications.send_due_webhooks().await {
                Ok(taken) => taken >= usize::try_from(config.batch).unwrap_or(usize::MAX),
                Err(error) => {
                    tracing::warn!(%error, "webhook sender: cannot take deliveries; will retry");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = notifications.inner.webhook_wake.notified() => {}
                _ = tokio::time::sleep(config.worker_interval) => {}
            }
        }
    });
}

/// How one attempt went, before the schedule decides what follows.
enum Attempt {
    Delivered(u16),
    /// The receiver says the endpoint is gone for good: disable it.
    Gone,
    /// Not to be retried (refused by the egress guard, endpoint disabled
    /// or deleted, unusable secret).
    Refused(String),
    Failed {
        status: Option<u16>,
        reason: &'static str,
        error: String,
    },
}

impl Notifications {
    /// One pass: sends the webhooks due now. Returns how many were taken.
    pub(crate) async fn send_due_webhooks(&self) -> Result<usize, crate::NotificationError> {
        let config = &self.inner.config;
        let start = now();
        let taken = self
            .inner
            .store
            .take_due_webhooks(start, after(start, config.lease), config.batch)
            .await?;
        let count = taken.len();
        futures::future::join_all(taken.into_iter().map(|d| self.send_webhook(d))).await;
        Ok(count)
    }

    async fn send_webhook(&self, delivery: WebhookDelivery) {
        let attempt = match self.attempt(&delivery).await {
            Ok(attempt) => attempt,
            Err(error) => {
                // The endpoint could not be read: the lease lapses, and the
                // delivery is tried again (this attempt counts).
                tracing::warn!(delivery = %delivery.id, %error, "webhook: cannot read its endpoint");
                return;
            }
        };
        let config = &self.inner.config.webhooks;
        let outcome = match attempt {
            Attempt::Delivered(status) => WebhookOutcome::Sent { status },
            Attempt::Gone => {
                let reason = format!("the receiver answered 410 Gone at {}", now().to_rfc3339());
                match self
                    .inner
                    .store
                    .disable_endpoint(delivery.endpoint_id, &reason, now())
                    .await
                {
                    Ok(true) => {
                        tracing::warn!(endpoint = %delivery.endpoint_id, "webhook endpoint answered 410 Gone; disabled");
                        metrics::webhook_failures()
                            .with_label_values(&["gone"])
                            .inc();
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(endpoint = %delivery.endpoint_id, %error, "webhook endpoint answered 410 Gone but could not be disabled");
                    }
                }
                WebhookOutcome::Dead {
                    status: Some(410),
                    error: "410 Gone: endpoint disabled".into(),
                }
            }
            Attempt::Refused(error) => {
                metrics::webhook_failures()
                    .with_label_values(&["refused"])
                    .inc();
                WebhookOutcome::Dead {
                    status: None,
                    error,
                }
            }
            Attempt::Failed {
                status,
                reason,
                error,
            } => {
                metrics::webhook_failures()
                    .with_label_values(&[reason])
                    .inc();
                match config.retry_delay(delivery.round_attempts()) {
                    Some(delay) => WebhookOutcome::Retry {
                        at: after(now(), delay),
                        status,
                        error,
                    },
                    None => WebhookOutcome::Dead {
                        status,
                        error: format!(
                            "gave up after {} attempts: {error}",
                            delivery.round_attempts()
                        ),
                    },
                }
            }
        };
        let label = match &outcome {
            WebhookOutcome::Sent { .. } => "sent",
            WebhookOutcome::Retry { .. } => "retried",
            WebhookOutcome::Dead { .. } => "dead_lettered",
        };
        metrics::deliveries()
            .with_label_values(&["webhook", label])
            .inc();
        match &outcome {
            WebhookOutcome::Sent { status } => {
                tracing::info!(delivery = %delivery.id, endpoint = %delivery.endpoint_id, event_type = %delivery.event_type, status, "webhook sent")
            }
            WebhookOutcome::Retry { at, error, .. } => {
                tracing::warn!(delivery = %delivery.id, endpoint = %delivery.endpoint_id, attempts = delivery.round_attempts(), next = %at, %error, "webhook failed; will retry")
            }
            WebhookOutcome::Dead { error, .. } => {
                tracing::warn!(delivery = %delivery.id, endpoint = %delivery.endpoint_id, %error, "webhook dead-lettered")
            }
        }
        match self
            .inner
            .store
            .finish_webhook(&delivery, &outcome, now())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %delivery.id, "the webhook outlived its lease; another sender has it")
            }
            Err(error) => {
                tracing::warn!(delivery = %delivery.id, %error, "the outcome of a webhook was not saved")
            }
        }
    }

    async fn attempt(&self, d: &WebhookDelivery) -> Result<Attempt, crate::NotificationError> {
        let Some(endpoint) = self.inner.store.endpoint(d.endpoint_id).await? else {
            return Ok(Attempt::Refused("the endpoint was deleted".into()));
        };
        if !endpoint.enabled() {
            return Ok(Attempt::Refused(format!(
                "the endpoint is disabled: {}",
                endpoint.disabled_reason.as_deref().unwrap_or("")
            )));
        }
        let url = match Url::parse(&endpoint.url) {
            Ok(url) => url,
            Err(e) => return Ok(Attempt::Refused(format!("stored URL is invalid: {e}"))),
        };
        // Checked again now, whatever was checked at registration: the
        // guard's resolver connects only to the public addresses it checked.
        let client = match self.inner.egress.client_for(&url) {
            Ok(client) => client,
            Err(refused) => return Ok(Attempt::Refused(format!("webhook {refused}"))),
        };
        let sent_at = now();
        let id = d.id.to_string();
        let timestamp = sent_at.timestamp();
        let signature = match signature(
            &endpoint.signing_secrets(sent_at),
            &id,
            timestamp,
            &d.payload,
        ) {
            Ok(signature) => signature,
            Err(error) => return Ok(Attempt::Refused(error)),
        };
        let timeout = self.inner.config.webhooks.timeout;
        let result = client
            .post(url)
            .timeout(timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.payload.clone())
            .send()
            .await;
        Ok(match result {
            Ok(response) => classify(response.status().as_u16()),
            Err(error) => failed(error, timeout),
        })
    }
}

fn classify(status: u16) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered(status),
        410 => Attempt::Gone,
        _ => Attempt::Failed {
            status: Some(status),
            reason: "status",
            error: format!("the receiver answered HTTP {status}"),
        },
    }
}

fn failed(error: reqwest::Error, timeout: Duration) -> Attempt {
    if let Some(refused) = berth_runtime::egress::refusal(&error) {
        return Attempt::Refused(format!("webhook {refused}"));
    }
    // The URL may carry the receiver's own token: kept out of the log.
    let error = error.without_url();
    let (reason, error) = if error.is_timeout() {
        ("timeout", format!("no answer within {timeout:?}"))
    } else if error.is_connect() {
        ("connect", format!("cannot connect: {error}"))
    } else {
        ("request", format!("request failed: {error}"))
    };
    Attempt::Failed {
        status: None,
        reason,
        error,
    }
}
