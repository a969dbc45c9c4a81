//! Payment integration tests: real PostgreSQL (and Redis when set), the
//! real availability and booking services, the Stripe-API emulator, and
//! webhooks over HTTP. Each test says which defence it checks; removing
//! that defence makes it fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod faults;
mod flows;
mod input;
mod race;
mod webhooks;
