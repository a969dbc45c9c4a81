//! Outbound messages, written once and used by every service that sends
//! them (the user service's account mails and codes, the notification
//! service's booking messages).
//!
//! - [`MailSender`]: [`SmtpMailer`] (lettre; STARTTLS, implicit TLS or, on a
//!   trusted network, plain), [`MailboxMailer`] (each message an `.eml` file
//!   in a folder: `berth dev` without SMTP) and [`MemoryMailer`] (tests).
//! - [`SmsSender`]: [`TwilioSms`] (the Twilio Messages API shape),
//!   [`FolderSms`] (each text a file: `berth dev` without a provider) and
//!   [`MemorySms`] (tests).
//!
//! Every failure says whether trying again can help ([`SendError`]), so a
//! caller that retries stops at a permanently refused address. [`Guarded`]
//! puts either sender behind its provider's circuit breaker.

mod guarded;
mod mail;
mod settings;
mod sms;

pub use guarded::Guarded;
pub use mail::{Invite, Mail, MailSender, MailboxMailer, MemoryMailer, SmtpMailer};
pub use settings::{SmtpConfig, SmtpSecurity, smtp_from_settings, twilio_from_settings};
pub use sms::{FolderSms, MemorySms, SmsSender, TwilioConfig, TwilioSms};

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider or the address refuses it for good (SMTP 5xx, an
    /// invalid address, an SMS number the provider rejects): do not retry.
    #[error("{0}")]
    Permanent(String),
    /// The provider is down, slow or busy: try again later.
    #[error("{0}")]
    Transient(String),
}

impl SendError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
    }
}
