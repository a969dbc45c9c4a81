//! Faults a test switches on through the control API.

use serde::{Deserialize, Serialize};

/// Everything that can go wrong on purpose. `POST /_emulator/faults`
/// replaces the whole set; omitted fields are off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every Stripe API call, after its idempotency key is
    /// reserved (so a concurrent retry sees it in flight).
    pub api_latency_ms: u64,
    /// Share (0–1) of API calls answered 500 before any effect, drawn
    /// from the seeded RNG; never saved under an idempotency key.
    pub api_error_rate: f64,
    /// Deterministic failures of the next matching calls.
    pub fail_next: Vec<FailNext>,
    /// Each webhook delivery is sent twice.
    pub duplicate: bool,
    /// Each batch of due deliveries is sent newest first.
    pub reorder: bool,
    /// Deliveries wait for `POST /_emulator/webhooks/flush`.
    pub hold: bool,
    /// Wait before each delivery.
    pub delay_ms: u64,
    /// Sign with a secret no endpoint has.
    pub bad_signature: bool,
    /// Sign with a timestamp this many seconds in the past.
    pub stale_timestamp_secs: u64,
}

/// The next `count` API calls matching `method` and `path_prefix` fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailNext {
    #[serde(default = "one")]
    pub count: u32,
    /// e.g. `POST`; any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// e.g. `/v1/payment_intents`; any path when absent.
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default = "internal_error")]
    pub status: u16,
    /// Perform the operation, then answer `status`; that answer is what
    /// the idempotency key saves, as Stripe does after a failure mid-way.
    #[serde(default)]
    pub after_effect: bool,
}

fn one() -> u32 {
    1
}

fn internal_error() -> u16 {
    500
}

impl FailNext {
    pub fn new(method: &str, path_prefix: &str) -> Self {
        Self {
            count: 1,
            method: Some(method.to_owned()),
            path_prefix: Some(path_prefix.to_owned()),
            status: 500,
            after_effect: false,
        }
    }

    pub fn after_effect(mut self) -> Self {
        self.after_effect = true;
        self
    }

    pub fn times(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// What the fault layer decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    None,
    Before(u16),
    After(u16),
}

impl Faults {
    /// Takes one use of the first matching `fail_next` rule.
    pub(crate) fn take_fail_next(&mut self, method: &str, path: &str) -> Injected {
        let Some(i) = self
            .fail_next
            .iter()
            .position(|f| f.count > 0 && f.matches(method, path))
        else {
            return Injected::None;
        };
        let rule = &mut self.fail_next[i];
        rule.count -= 1;
        let injected = if rule.after_effect {
            Injected::After(rule.status)
        } else {
            Injected::Before(rule.status)
        };
        if rule.count == 0 {
            self.fail_next.remove(i);
        }
        injected
    }
}
