//! Integration tests of the booking service, on PostgreSQL and SQLite.
//! PostgreSQL and Redis come from the local stack: `scripts/stack up` and
//! `eval "$(scripts/stack env)"`; without `DATABASE_URL` those tests fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod common;

mod accounts;
mod authz;
mod bad_input;
mod idempotency;
mod lifecycle;
mod outbox;
mod pagination;
mod saga;
mod texts;
