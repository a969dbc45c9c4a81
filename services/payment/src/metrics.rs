//! The payment service's own metrics (besides the runtime's per-route ones).

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Saga transitions by state reached.
pub(crate) fn transitions() -> &'static IntCounterVec {
    static METRIC: LazyLock<IntCounterVec> = LazyLock::new(|| {
        // Invariant: constant, valid options, so construction cannot fail.
        #[allow(clippy::expect_used)]
        IntCounterVec::new(
            Opts::new(
                "berth_payment_transitions_total",
                "Payment saga transitions, by state reached",
            ),
            &["state"],
        )
        .expect("constant counter options")
    });
    &METRIC
}

/// Seconds from a Stripe event's receipt to the saga reaching a state
/// (`paid`, `failed`): how quickly a payment confirms a booking.
pub(crate) fn webhook_to_state() -> &'static HistogramVec {
    static METRIC: LazyLock<HistogramVec> = LazyLock::new(|| {
        // Invariant: constant, valid options, so construction cannot fail.
        #[allow(clippy::expect_used)]
        HistogramVec::new(
            HistogramOpts::new(
                "berth_payment_webhook_to_state_seconds",
                "From a Stripe webhook's receipt to the saga ending in a state",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["state"],
        )
        .expect("constant histogram options")
    });
    &METRIC
}

/// What the reconciler found on its last pass, by kind (`stuck`, `drift`,
/// `open_authorisations`).
pub(crate) fn reconciler_findings() -> &'static IntGaugeVec {
    static METRIC: LazyLock<IntGaugeVec> = LazyLock::new(|| {
        // Invariant: constant, valid options, so construction cannot fail.
        #[allow(clippy::expect_used)]
        IntGaugeVec::new(
            Opts::new(
                "berth_payment_reconciler_findings",
                "Payments the reconciler's last pass found stuck or disagreeing with Stripe",
            ),
            &["kind"],
        )
        .expect("constant gauge options")
    });
    &METRIC
}

pub(crate) fn register(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(transitions().clone()))?;
    registry.register(Box::new(webhook_to_state().clone()))?;
    registry.register(Box::new(reconciler_findings().clone()))
}
