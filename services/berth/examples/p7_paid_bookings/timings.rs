//! P7's latencies of the paid round, from the database's times and the
//! clients' (one clock: every process runs on this machine).

use std::time::Duration;

use crate::ms;
use crate::support::load::percentile;

pub struct Timings {
    /// Authorisation webhook received → paid, where it came first.
    webhook_to_paid: Vec<Duration>,
    /// Paid before its authorisation webhook arrived: an earlier webhook
    /// (`payment_intent.created`, delivered after the customer paid) woke
    /// the saga, which reads the intent from Stripe itself.
    paid_before_webhook: usize,
    /// The customer's confirmation answered → paid.
    confirm_to_paid: Vec<Duration>,
    /// The customer's confirmation answered → authorisation webhook received.
    confirm_to_webhook: Vec<Duration>,
}

impl Timings {
    pub fn of(timeline: &[(String, i64, i64)], confirmed: &[(String, i64)]) -> Self {
        let confirmed: std::collections::HashMap<&str, i64> =
            confirmed.iter().map(|(i, at)| (i.as_str(), *at)).collect();
        let span = |from: i64, to: i64| Duration::from_micros((to - from).max(0).unsigned_abs());
        let mut t = Timings {
            webhook_to_paid: Vec::new(),
            paid_before_webhook: 0,
            confirm_to_paid: Vec::new(),
            confirm_to_webhook: Vec::new(),
        };
        for (intent, webhook, paid) in timeline {
            if paid >= webhook {
                t.webhook_to_paid.push(span(*webhook, *paid));
            } else {
                t.paid_before_webhook += 1;
            }
            if let Some(at) = confirmed.get(intent.as_str()) {
                t.confirm_to_paid.push(span(*at, *paid));
                t.confirm_to_webhook.push(span(*at, *webhook));
            }
        }
        t.webhook_to_paid.sort();
        t.confirm_to_paid.sort();
        t.confirm_to_webhook.sort();
        t
    }

    pub fn print(&self) {
        let line = |what: &str, all: &[Duration]| {
            if all.is_empty() {
                println!("  {what}: none measured");
            } else {
                println!(
                    "  {what} (n = {}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    all.len(),
                    ms(percentile(all, 0.5)),
                    ms(percentile(all, 0.99)),
                    ms(percentile(all, 1.0))
                );
            }
        };
        line(
            "webhook -> paid (amount_capturable_updated received -> paid step)",
            &self.webhook_to_paid,
        );
        println!(
            "    paid before that webhook arrived (woken by an earlier one): {}",
            self.paid_before_webhook
        );
        line(
            "customer's confirmation answered -> paid",
            &self.confirm_to_paid,
        );
        line(
            "customer's confirmation answered -> that webhook received",
            &self.confirm_to_webhook,
        );
    }
}
