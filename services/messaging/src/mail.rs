//! Outbound email: the [`MailSender`] interface, SMTP (lettre), a mailbox
//! folder and an in-memory outbox. One message builder serves the SMTP and
//! mailbox senders, so what `berth dev` writes is what SMTP would carry.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::SendError;
use crate::settings::{SmtpConfig, SmtpSecurity};

/// One message: a plain-text body, optionally an HTML alternative and a
/// calendar invite.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    /// The plain-text part.
    pub body: String,
    pub html: Option<String>,
    pub invite: Option<Invite>,
    /// `Message-ID` without the angle brackets; a message sent again (after
    /// a crash mid-send) keeps it, so clients can tell the copies apart.
    pub message_id: Option<String>,
}

impl Mail {
    /// A plain-text message.
    pub fn text(
        to: impl Into<String>,
        subject: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        Self {
            to: to.into(),
            subject: subject.into(),
            body: body.into(),
            ..Self::default()
        }
    }
}

/// An iCalendar object sent with a message (RFC 6047): as the
/// `text/calendar; method=…` alternative calendar clients act on, and as an
/// `invite.ics` attachment for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// iTIP method: `REQUEST`, `CANCEL`.
    pub method: String,
    /// The VCALENDAR text.
    pub ics: String,
}

/// The bodies carry secrets (links with tokens) and personal data: never print them.
impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait MailSender: Send + Sync + 'static {
    async fn send(&self, mail: Mail) -> Result<(), SendError>;
}

fn parse_from(from: &str) -> Result<Mailbox, String> {
    from.parse()
        .map_err(|e| format!("smtp `from` address {from:?}: {e}"))
}

/// The RFC 5322 message of `mail`.
fn message(from: &Mailbox, mail: Mail) -> Result<Message, SendError> {
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|_| SendError::Permanent("invalid recipient address".to_owned()))?;
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject);
    if let Some(id) = mail.message_id {
        builder = builder.message_id(Some(format!("<{id}>")));
    }
    let built = if mail.html.is_none() && mail.invite.is_none() {
        builder.header(ContentType::TEXT_PLAIN).body(mail.body)
    } else {
        let mut alternative = MultiPart::alternative().singlepart(SinglePart::plain(mail.body));
        if let Some(html) = mail.html {
            alternative = alternative.singlepart(SinglePart::html(html));
        }
        match mail.invite {
            None => builder.multipart(alternative),
            Some(invite) => {
                let calendar = ContentType::parse(&format!(
                    "text/calendar; method={}; charset=utf-8",
                    invite.method
                ))
                .map_err(|e| SendError::Permanent(format!("calendar part: {e}")))?;
                let ics_type = ContentType::parse("application/ics")
                    .map_err(|e| SendError::Permanent(format!("calendar attachment: {e}")))?;
                alternative = alternative.singlepart(
                    SinglePart::builder()
                        .header(calendar)
                        .body(invite.ics.clone()),
                );
                builder.multipart(MultiPart::mixed().multipart(alternative).singlepart(
                    Attachment::new("invite.ics".to_owned()).body(invite.ics, ics_type),
                ))
            }
        }
    };
    built.map_err(|e| SendError::Permanent(e.to_string()))
}

/// Per SMTP command: a stuck server must not hold a sender for long.
const SMTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    pub fn new(config: &SmtpConfig) -> Result<Self, String> {
        let builder = match config.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            }
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                    .map_err(|e| e.to_string())?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(|e| e.to_string())?,
        };
        let mut builder = builder.port(config.port).timeout(Some(SMTP_TIMEOUT));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from: parse_from(&config.from)?,
        })
    }
}

/// Refusals that are about the recipient or the message itself; anything
/// else (the server down, busy, or refusing our credentials) may pass later.
const PERMANENT_SMTP: [u16; 5] = [501, 550, 551, 553, 554];

fn smtp_error(error: lettre::transport::smtp::Error) -> SendError {
    let code = error
        .status()
        .and_then(|c| c.to_string().parse::<u16>().ok());
    match code {
        Some(code) if error.is_permanent() && PERMANENT_SMTP.contains(&code) => {
            SendError::Permanent(error.to_string())
        }
        _ => SendError::Transient(error.to_string()),
    }
}

#[async_trait]
impl MailSender for SmtpMailer {
    async fn send(&self, mail: Mail) -> Result<(), SendError> {
        let message = message(&self.from, mail)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(smtp_error)
    }
}

/// Writes each message as `<id>.eml` into a folder, for `berth dev` without
/// an SMTP server: open the file in a mail client, or its invite in a
/// calendar.
pub struct MailboxMailer {
    transport: AsyncFileTransport<Tokio1Executor>,
    from: Mailbox,
    dir: PathBuf,
}

impl MailboxMailer {
    /// Creates `dir` if needed.
    pub fn new(dir: impl Into<PathBuf>, from: &str) -> Result<Self, String> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("mailbox {} cannot be created: {e}", dir.display()))?;
        Ok(Self {
            transport: AsyncFileTransport::new(&dir),
            from: parse_from(from)?,
            dir,
        })
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[async_trait]
impl MailSender for MailboxMailer {
    async fn send(&self, mail: Mail) -> Result<(), SendError> {
        let message = message(&self.from, mail)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| SendError::Transient(e.to_string()))
    }
}

/// Keeps messages in memory (development and tests).
#[derive(Clone, Default)]
pub struct MemoryMailer {
    outbox: Arc<Mutex<Vec<Mail>>>,
}

impl MemoryMailer {
    pub fn messages(&self) -> Vec<Mail> {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl MailSender for MemoryMailer {
    async fn send(&self, mail: Mail) -> Result<(), SendError> {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(mail);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_mailbox_keeps_each_message_with_its_parts_and_invite() {
        let dir = tempfile::tempdir().unwrap();
        let mailbox =
            MailboxMailer::new(dir.path().join("mail"), "Berth <no-reply@berth.test>").unwrap();
        let mail = Mail {
            html: Some("<p>Hello</p>".into()),
            invite: Some(Invite {
                method: "REQUEST".into(),
                ics: "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n".into(),
            }),
            message_id: Some("d1@berth.test".into()),
            ..Mail::text("ada@example.test", "Booked", "Hello")
        };
        mailbox.send(mail).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(mailbox.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].extension().unwrap(), "eml");
        let raw = std::fs::read_to_string(&files[0]).unwrap();
        for expected in [
            "Message-ID: <d1@berth.test>",
            "multipart/alternative",
            "text/html",
            "text/calendar; method=REQUEST",
            "invite.ics",
        ] {
            assert!(raw.contains(expected), "{expected} missing from\n{raw}");
        }
    }

    #[tokio::test]
    async fn an_invalid_recipient_is_refused_for_good() {
        let memory_from: Mailbox = "a@b.test".parse().unwrap();
        let error = message(&memory_from, Mail::text("not an address", "s", "b")).unwrap_err();
        assert!(error.is_permanent());
    }
}
