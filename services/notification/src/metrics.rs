//! The notification service's own metrics (besides the runtime's per-route ones).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, Opts, Registry};

/// Send attempts by channel and outcome: `sent`, `retried` (failed, will
/// try again), `failed` (refused for good or given up; email); webhooks
/// end `dead_lettered` instead of `failed` (replayable).
pub(crate) fn deliveries() -> &'static IntCounterVec {
    static METRIC: LazyLock<IntCounterVec> = LazyLock::new(|| {
        // Invariant: constant, valid options, so construction cannot fail.
        #[allow(clippy::expect_used)]
        IntCounterVec::new(
            Opts::new(
                "berth_notification_deliveries_total",
                "Notification send attempts, by channel and outcome",
            ),
            &["channel", "outcome"],
        )
        .expect("constant counter options")
    });
    &METRIC
}

/// Failed webhook attempts by reason: `status` (an answer other than 2xx
/// or 410), `timeout`, `connect`, `request`, `refused` (egress guard,
/// disabled or deleted endpoint), `gone` (410: endpoint disabled).
pub(crate) fn webhook_failures() -> &'static IntCounterVec {
    static METRIC: LazyLock<IntCounterVec> = LazyLock::new(|| {
        // Invariant: constant, valid options, so construction cannot fail.
        #[allow(clippy::expect_used)]
        IntCounterVec::new(
            Opts::new(
                "berth_notification_webhook_failures_total",
                "Failed webhook attempts, by reason",
            ),
            &["reason"],
        )
        .expect("constant counter options")
    });
    &METRIC
}

pub(crate) fn register(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(deliveries().clone()))?;
    registry.register(Box::new(webhook_failures().clone()))
}
