//! A sender behind its provider's circuit breaker (`[dependencies.smtp]`,
//! `[dependencies.sms]`): while the provider keeps failing, sends fail at
//! once as transient (the caller retries them on its backoff) instead of
//! each waiting for a timeout, and the breaker's state shows in the
//! runtime's metrics and alerts. A refusal of one message (permanent) is
//! the provider working, not failing.

use std::sync::Arc;

use async_trait::async_trait;
use berth_runtime::resilience::Dependency;

use crate::{Mail, MailSender, SendError, SmsSender};

pub struct Guarded<S: ?Sized> {
    inner: Arc<S>,
    dependency: Arc<Dependency>,
}

impl<S: ?Sized> Guarded<S> {
    pub fn new(inner: Arc<S>, dependency: Arc<Dependency>) -> Self {
        Self { inner, dependency }
    }

    async fn guard<F>(&self, send: F) -> Result<(), SendError>
    where
        F: std::future::Future<Output = Result<(), SendError>>,
    {
        let permit = self.dependency.breaker.try_acquire().map_err(|open| {
            SendError::Transient(format!(
                "{} is failing: circuit open, not tried",
                open.dependency
            ))
        })?;
        let result = send.await;
        permit.record(!matches!(result, Err(SendError::Transient(_))));
        result
    }
}

#[async_trait]
impl MailSender for Guarded<dyn MailSender> {
    async fn send(&self, mail: Mail) -> Result<(), SendError> {
        self.guard(self.inner.send(mail)).await
    }
}

#[async_trait]
impl SmsSender for Guarded<dyn SmsSender> {
    async fn send(&self, to: &str, body: &str) -> Result<(), SendError> {
        self.guard(self.inner.send(to, body)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use berth_runtime::resilience::clock::ManualClock;
    use berth_runtime::resilience::{BreakerSettings, Dependencies, DependencySettings};

    use super::*;

    /// Fails transiently while `down`, counting the calls that reach it.
    struct Flaky {
        calls: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl SmsSender for Flaky {
        async fn send(&self, _: &str, _: &str) -> Result<(), SendError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(SendError::Transient("provider down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_failing_provider_is_not_called_until_the_breaker_probes() {
        let clock = Arc::new(ManualClock::default());
        let settings = DependencySettings {
            breaker: BreakerSettings {
                minimum_calls: 4,
                open_duration: Duration::from_secs(30),
                half_open_probes: 1,
                ..BreakerSettings::default()
            },
            ..DependencySettings::default()
        };
        let dependencies = Dependencies::unobserved(
            BTreeMap::from([("sms".to_owned(), settings)]),
            clock.clone(),
        );
        let flaky = Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            down: true.into(),
        });
        let inner: Arc<dyn SmsSender> = flaky.clone();
        let guarded = Guarded::new(inner, dependencies.get("sms"));
        for _ in 0..4 {
            assert!(guarded.send("+4930123456", "hi").await.is_err());
        }
        let refused = guarded.send("+4930123456", "hi").await.unwrap_err();
        assert!(!refused.is_permanent(), "retried later, not given up");
        assert!(refused.to_string().contains("circuit open"), "{refused}");
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            4,
            "the open breaker did not call"
        );

        // Back up: after the open time one probe goes through and closes it.
        flaky.down.store(false, Ordering::SeqCst);
        clock.advance(Duration::from_secs(31));
        guarded.send("+4930123456", "hi").await.unwrap();
        guarded.send("+4930123456", "hi").await.unwrap();
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 6);
    }
}
