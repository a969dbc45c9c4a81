//! The notification service against real things: PostgreSQL, Redis (the
//! booking stream and consumer groups), the availability and booking
//! services composed in process, and a real SMTP server (PyPI `aiosmtpd`)
//! whose received messages are parsed as a mail client would, and a webhook
//! receiver verifying signatures with the Standard Webhooks reference
//! implementation (PyPI `standardwebhooks`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod flows;
mod reminders;
mod streams;
mod texts;
mod webhooks;
