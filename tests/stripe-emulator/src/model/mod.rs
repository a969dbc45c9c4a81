//! Stripe's objects as the emulator keeps them, and their JSON shapes.

pub(crate) mod card;
pub(crate) mod event;
pub(crate) mod intent;
pub(crate) mod refund;

pub(crate) use card::{Outcome, PaymentMethod, TestCard};
pub(crate) use event::Event;
pub(crate) use intent::{Intent, Status};
pub(crate) use refund::Refund;

/// The API version async-stripe 1.0.0-rc.10 targets
/// (`stripe_shared::version::VERSION`); events carry it.
pub const API_VERSION: &str = "2026-09-30.endive";
