//! The sender: takes due deliveries under a lease, sends them (email
//! through the mail sender, texts through the SMS sender), and writes
//! the outcome. A failed send is retried with exponential backoff and
//! jitter; a permanent refusal (or `max_attempts`) ends it `failed`,
//! recorded with the reason. A sender that dies mid-send leaves its lease
//! to lapse, and the message is sent by whoever takes it next.

use std::time::Duration;

use berth_messaging::{Invite, Mail, SendError};
use tokio_util::sync::CancellationToken;

use crate::Notifications;
use crate::metrics;
use crate::model::{Delivery, EMAIL, SMS, after, masked, now};
use crate::store::Outcome;

pub(crate) fn spawn(notifications: Notifications, stop: CancellationToken) {
    tokio::spawn(async move {
        let config = notifications.inner.config.clone();
        while !stop.is_cancelled() {
            let full = match notifications.send_due().await {
                Ok(taken) => taken >= usize::try_from(config.batch).unwrap_or(usize::MAX),
                Err(error) => {
                    tracing::warn!(%error, "notification sender: cannot take deliveries; will retry");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = notifications.inner.sender_wake.notified() => {}
                _ = tokio::time::sleep(config.worker_interval) => {}
            }
        }
    });
}

impl Notifications {
    /// One pass: sends what is due now. Returns how many were taken.
    pub(crate) async fn send_due(&self) -> Result<usize, crate::NotificationError> {
        let config = &self.inner.config;
        let start = now();
        let taken = self
            .inner
            .store
            .take_due(start, after(start, config.lease), config.batch)
            .await?;
        let count = taken.len();
        let sends = taken.into_iter().map(|delivery| self.send_one(delivery));
        // The sends of one pass go side by side.
        futures::future::join_all(sends).await;
        Ok(count)
    }

    async fn send_one(&self, delivery: Delivery) {
        let config = &self.inner.config;
        let result = match delivery.channel.as_str() {
            EMAIL => match &self.inner.mailer {
                Some(mailer) => mailer.send(mail(&delivery, &config.id_domain)).await,
                // Planned while SMTP was configured; it is not now.
                None => Err(SendError::Transient("no SMTP server is configured".into())),
            },
            SMS => match &self.inner.sms {
                Some(sms) => sms.send(&delivery.recipient, &delivery.body).await,
                // Planned while a provider was configured; there is none now.
                None => Err(SendError::Transient(
                    "no text provider is configured".into(),
                )),
            },
            other => Err(SendError::Permanent(format!("unknown channel {other}"))),
        };
        let outcome = match result {
            Ok(()) => Outcome::Sent,
            Err(error) if error.is_permanent() => Outcome::Failed {
                error: error.to_string(),
            },
            Err(error)
                if delivery.attempts >= i32::try_from(config.max_attempts).unwrap_or(i32::MAX) =>
            {
                Outcome::Failed {
                    error: format!("gave up after {} attempts: {error}", delivery.attempts),
                }
            }
            Err(error) => Outcome::Retry {
                at: after(
                    now(),
                    backoff(config.retry_base, config.retry_max, delivery.attempts),
                ),
                error: error.to_string(),
            },
        };
        let label = match &outcome {
            Outcome::Sent => "sent",
            Outcome::Retry { .. } => "retried",
            Outcome::Failed { .. } => "failed",
        };
        metrics::deliveries()
            .with_label_values(&[delivery.channel.as_str(), label])
            .inc();
        let to = masked(&delivery.recipient);
        match &outcome {
            Outcome::Sent => {
                tracing::info!(delivery = %delivery.id, %to, kind = %delivery.kind, "message sent")
            }
            Outcome::Retry { error, .. } => {
                tracing::warn!(delivery = %delivery.id, %to, attempts = delivery.attempts, %error, "sending failed; will retry")
            }
            Outcome::Failed { error } => {
                tracing::warn!(delivery = %delivery.id, %to, %error, "message not delivered; giving up")
            }
        }
        match self.inner.store.finish(&delivery, &outcome, now()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %delivery.id, "the send outlived its lease; another sender has it")
            }
            // The lease lapses and the message is sent again: at least once.
            Err(error) => {
                tracing::warn!(delivery = %delivery.id, %error, "the outcome of a send was not saved")
            }
        }
    }
}

/// Full jitter over an exponential step: `attempts` 1 → up to `base`, 2 →
/// up to 2·`base`, …, never above `max`, never below half the step.
fn backoff(base: Duration, max: Duration, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let step = base.saturating_mul(1u32 << exponent).min(max);
    let half = step / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn mail(delivery: &Delivery, id_domain: &str) -> Mail {
    Mail {
        to: delivery.recipient.clone(),
        subject: delivery.subject.clone(),
        body: delivery.body.clone(),
        html: delivery.html.clone(),
        invite: match (&delivery.invite_method, &delivery.ics) {
            (Some(method), Some(ics)) => Some(Invite {
                method: method.clone(),
                ics: ics.clone(),
            }),
            _ => None,
        },
        message_id: Some(format!("{}@{id_domain}", delivery.id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        for attempts in 1..40 {
            let d = backoff(base, max, attempts);
            assert!(d <= max, "{attempts}: {d:?}");
        }
        assert!(backoff(base, max, 1) <= base);
        assert!(backoff(base, max, 5) >= Duration::from_secs(16));
    }
}
