//! The notification service's own metrics (besides the runtime's per-route ones).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, Opts, Registry};

/// Send attempts by channel and outcome: `sent`, `retried` (failed, will
/// try again), `failed` (refused for good or given up).
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

pub(crate) fn register(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(deliveries().clone()))
}
