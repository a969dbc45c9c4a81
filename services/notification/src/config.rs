//! The notification service's settings; the defaults suit production.

use std::time::Duration;

use crate::error::NotificationError;
use crate::webhooks::WebhookConfig;

#[derive(Debug, Clone)]
pub struct NotificationConfig {
    /// Redis stream of booking events (consumer group `notification.bookings`).
    pub booking_stream_key: String,
    /// Redis stream of payment events (consumer group `notification.payments`).
    pub payment_stream_key: String,
    /// How long a taken delivery keeps other workers off it; if its sender
    /// dies, another sends it after this.
    pub lease: Duration,
    /// First retry delay of a failed send; doubles per attempt (with
    /// jitter) up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts before a delivery is given up as failed.
    pub max_attempts: u32,
    /// How often the worker looks for due deliveries written elsewhere.
    pub worker_interval: Duration,
    /// Deliveries taken per pass.
    pub batch: i64,
    /// Domain of invite `UID`s and `Message-ID`s; never change it, or
    /// calendars stop matching updates to the events they hold.
    pub id_domain: String,
    /// The invite's `ORGANIZER` (the address mail is sent from).
    pub organizer: String,
    /// A payment event whose booking is still unknown after this is
    /// dropped (its booking events are not coming).
    pub payment_wait: Duration,
    pub max_connections: u32,
    /// Outbound webhooks: retry schedule, timeout, secret rotation grace,
    /// and whether private destinations are allowed.
    pub webhooks: WebhookConfig,
    /// How long before a confirmed booking's start a reminder is emailed,
    /// one per offset (`service.reminders.offsets`, e.g. `["24h", "1h"]`;
    /// empty: none). Whole seconds; the same for every appointment type.
    pub reminder_offsets: Vec<Duration>,
    /// A folder of templates replacing the built-in ones of the same name
    /// (`service.templates.dir`, e.g. a mounted ConfigMap).
    pub templates_dir: Option<std::path::PathBuf>,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            booking_stream_key: "berth:events".to_owned(),
            payment_stream_key: "berth:payments".to_owned(),
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(30 * 60),
            // With the defaults: about two days of retrying.
            max_attempts: 100,
            worker_interval: Duration::from_secs(1),
            batch: 20,
            id_domain: "berth.dev".to_owned(),
            organizer: "no-reply@berth.dev".to_owned(),
            payment_wait: Duration::from_secs(600),
            max_connections: 10,
            webhooks: WebhookConfig::default(),
            reminder_offsets: vec![Duration::from_secs(24 * 3600), Duration::from_secs(3600)],
            templates_dir: None,
        }
    }
}

impl NotificationConfig {
    pub(crate) fn validate(&self) -> Result<(), NotificationError> {
        let bad = |m: String| Err(NotificationError::Config(m));
        for (name, value) in [
            ("lease", self.lease),
            ("retry_base", self.retry_base),
            ("retry_max", self.retry_max),
            ("worker_interval", self.worker_interval),
        ] {
            if value.is_zero() {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        if self.max_attempts == 0 || self.batch <= 0 {
            return bad("max_attempts and batch must be at least 1".into());
        }
        if self.booking_stream_key.is_empty() || self.payment_stream_key.is_empty() {
            return bad("stream keys must not be empty".into());
        }
        if self.id_domain.is_empty() || self.id_domain.contains(['@', '>', ' ']) {
            return bad(format!("id_domain {:?} is not a domain", self.id_domain));
        }
        let mut seen = std::collections::BTreeSet::new();
        for offset in &self.reminder_offsets {
            if offset.as_secs() == 0 || offset.as_secs() > MAX_REMINDER_OFFSET.as_secs() {
                return bad(format!(
                    "reminder offset {offset:?} must be between 1 s and 366 days"
                ));
            }
            if !seen.insert(offset.as_secs()) {
                return bad(format!("reminder offset {offset:?} is given twice"));
            }
        }
        self.webhooks
            .validate(self.lease)
            .map_err(NotificationError::Config)
    }
}

const MAX_REMINDER_OFFSET: Duration = Duration::from_secs(366 * 24 * 3600);

/// A reminder offset as configured: a whole number and a unit, `d`, `h`,
/// `m` or `s` (`"24h"`, `"90m"`), or several summed (`"1h30m"`).
pub fn parse_offset(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration such as \"24h\", \"90m\" or \"1h30m\"");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn offsets_parse_and_bad_ones_are_named() {
        assert_eq!(parse_offset("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_offset(" 1h30m ").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_offset("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_offset("45s").unwrap(), Duration::from_secs(45));
        for bad in ["", "24", "h", "1x", "0h", "-1h", "1.5h"] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
        let twice = NotificationConfig {
            reminder_offsets: vec![Duration::from_secs(60), Duration::from_secs(60)],
            ..NotificationConfig::default()
        };
        assert!(twice.validate().is_err());
        assert!(NotificationConfig::default().validate().is_ok());
    }
}
