//! The notification service's own metrics (besides the runtime's per-route ones).

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

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

/// Due reminders by how they ended: `sent` (handed to the email sender),
/// `stale` (the booking changed or is no longer confirmed: dropped),
/// `skipped_late` (the appointment had started).
pub(crate) fn reminders() -> &'static IntCounterVec {
    static METRIC: LazyLock<IntCounterVec> = LazyLock::new(|| {
        // Invariant: constant, valid options, so construction cannot fail.
        #[allow(clippy::expect_used)]
        IntCounterVec::new(
            Opts::new(
                "berth_notification_reminders_total",
                "Due reminders, by outcome",
            ),
            &["outcome"],
        )
        .expect("constant counter options")
    });
    &METRIC
}

/// Seconds from a reminder's due time to its hand-over to the sender.
pub(crate) fn reminder_lateness() -> &'static Histogram {
    static METRIC: LazyLock<Histogram> = LazyLock::new(|| {
        // Invariant: constant, valid options, so construction cannot fail.
        #[allow(clippy::expect_used)]
        Histogram::with_opts(
            HistogramOpts::new(
                "berth_notification_reminder_lateness_seconds",
                "Seconds between a reminder's due time and its hand-over to the sender",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
            ]),
        )
        .expect("constant histogram options")
    });
    &METRIC
}

pub(crate) fn register(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(deliveries().clone()))?;
    registry.register(Box::new(webhook_failures().clone()))?;
    registry.register(Box::new(reminders().clone()))?;
    registry.register(Box::new(reminder_lateness().clone()))
}
