//! Outbound SMS: the [`SmsSender`] interface, a Twilio-style HTTP provider,
//! a folder of text files (`berth dev` without a provider) and an
//! in-memory sink for tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::SendError;

#[async_trait]
pub trait SmsSender: Send + Sync + 'static {
    async fn send(&self, to: &str, body: &str) -> Result<(), SendError>;
}

/// Twilio Messages API (or any provider with the same shape):
/// `POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`,
/// form `To`, `From`, `Body`, HTTP basic auth `account_sid:auth_token`.
#[derive(Clone)]
pub struct TwilioConfig {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    pub from: String,
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl TwilioConfig {
    pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
}

pub struct TwilioSms {
    config: TwilioConfig,
    client: reqwest::Client,
}

impl TwilioSms {
    pub fn new(config: TwilioConfig) -> Self {
        Self {
            config,
            client: reqwest::Client::new(),
        }
    }
}

#[async_trait]
impl SmsSender for TwilioSms {
    async fn send(&self, to: &str, body: &str) -> Result<(), SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.config.base_url.trim_end_matches('/'),
            self.config.account_sid
        );
        let response = self
            .client
            .post(url)
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .form(&[("To", to), ("From", &self.config.from), ("Body", body)])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| {
                SendError::Transient(format!("sms provider unreachable: {}", e.without_url()))
            })?;
        let status = response.status();
        let message = format!("sms provider answered {status}");
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() && !matches!(status.as_u16(), 401 | 403 | 408 | 429) {
            // The request itself is refused (e.g. an invalid number); our
            // credentials or the provider's load may change, that will not.
            Err(SendError::Permanent(message))
        } else {
            Err(SendError::Transient(message))
        }
    }
}

/// Writes each text as a file in a folder (`<micros>-<number>.txt`:
/// `To:`, a blank line, the text), so a developer can read login codes and
/// booking texts without a provider.
pub struct FolderSms {
    dir: std::path::PathBuf,
}

impl FolderSms {
    /// Creates `dir` if needed.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Result<Self, String> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("text folder {} cannot be created: {e}", dir.display()))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[async_trait]
impl SmsSender for FolderSms {
    async fn send(&self, to: &str, body: &str) -> Result<(), SendError> {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default();
        let digits: String = to.chars().filter(char::is_ascii_digit).collect();
        let path = self.dir.join(format!("{micros}-{digits}.txt"));
        tokio::fs::write(&path, format!("To: {to}\n\n{body}\n"))
            .await
            .map_err(|e| SendError::Transient(format!("{}: {e}", path.display())))
    }
}

/// Keeps messages in memory (tests).
#[derive(Clone, Default)]
pub struct MemorySms {
    sent: Arc<Mutex<Vec<(String, String)>>>,
}

impl MemorySms {
    pub fn messages(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl SmsSender for MemorySms {
    async fn send(&self, to: &str, body: &str) -> Result<(), SendError> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((to.to_owned(), body.to_owned()));
        Ok(())
    }
}
