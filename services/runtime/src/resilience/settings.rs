//! Per-dependency resilience settings, as written by the operator into the
//! service's ConfigMap under `[dependencies.<name>]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a setting is invalid: (field path relative to the dependency, problem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting(pub String, pub String);

fn invalid(field: &str, problem: &str) -> InvalidSetting {
    InvalidSetting(field.to_owned(), problem.to_owned())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Share of failed calls in the window (0–1) that opens the breaker.
    pub failure_rate_threshold: f64,
    /// Length of the sliding window failures are counted over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Calls needed in the window before the rate is trusted.
    pub minimum_calls: u32,
    /// How long the breaker stays open before letting probes through.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// Successful probes needed in half-open to close again.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            window: Duration::from_secs(10),
            minimum_calls: 20,
            open_duration: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }
}

impl BreakerSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(self.failure_rate_threshold > 0.0 && self.failure_rate_threshold <= 1.0) {
            return Err(invalid(
                "breaker.failure_rate_threshold",
                "must be greater than 0 and at most 1",
            ));
        }
        if self.window < Duration::from_millis(10) {
            return Err(invalid("breaker.window", "must be at least 10ms"));
        }
        if self.minimum_calls == 0 {
            return Err(invalid("breaker.minimum_calls", "must be at least 1"));
        }
        if self.open_duration.is_zero() {
            return Err(invalid("breaker.open_duration", "must be greater than 0"));
        }
        if self.half_open_probes == 0 {
            return Err(invalid("breaker.half_open_probes", "must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Total attempts including the first; 1 disables retries.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub base_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Retries allowed as a share of recent first attempts (e.g. 0.2 = 20%).
    pub budget_ratio: f64,
    /// Retries per second always allowed, so low traffic can still retry.
    pub budget_min_per_second: u32,
    /// Window over which the budget is computed.
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl RetrySettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be at least 1"));
        }
        if self.base_backoff > self.max_backoff {
            return Err(invalid(
                "retry.base_backoff",
                "must not exceed retry.max_backoff",
            ));
        }
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            return Err(invalid("retry.budget_ratio", "must be between 0 and 1"));
        }
        if self.budget_window < Duration::from_millis(10) {
            return Err(invalid("retry.budget_window", "must be at least 10ms"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DependencySettings {
    /// Deadline for one attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub retry: RetrySettings,
    pub breaker: BreakerSettings,
}

impl Default for DependencySettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            retry: RetrySettings::default(),
            breaker: BreakerSettings::default(),
        }
    }
}

impl DependencySettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be greater than 0"));
        }
        self.retry.validate()?;
        self.breaker.validate()
    }
}
