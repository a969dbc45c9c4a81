//! The emulator over real HTTP on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod common;
mod control;
mod idempotency;
mod process;
mod refunds;
mod state_machine;
mod stripe_client;
mod types;
mod webhooks;
