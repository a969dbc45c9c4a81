//! Account emails: verification and password-reset links, each carrying a
//! one-time token that is stored only as a hash.

use crate::crypto::sha256;
use crate::store::{self, Account, secs};
use crate::{UserError, Users};
use berth_messaging::Mail;

pub(crate) const PURPOSE_VERIFY: &str = "verify-email";
pub(crate) const PURPOSE_RESET: &str = "reset-password";

impl Users {
    pub(crate) async fn send_mail(
        &self,
        to: &str,
        subject: &str,
        body: String,
    ) -> Result<(), UserError> {
        self.inner
            .mailer
            .send(Mail::text(to, subject, body))
            .await
            .map_err(|e| UserError::Delivery(e.to_string()))
    }

    pub(crate) async fn send_verification(&self, account: &Account) -> Result<(), UserError> {
        let Some(email) = &account.email else {
            return Ok(());
        };
        let token = self.random_token()?;
        let ttl = secs(self.config().limits.email_token_ttl.as_secs());
        self.inner
            .store
            .insert_one_time(
                &sha256(&token),
                &account.id,
                PURPOSE_VERIFY,
                store::now() + ttl,
            )
            .await?;
        let link = format!(
            "{}/verify-email?token={token}",
            self.config().public_url.trim_end_matches('/')
        );
        self.send_mail(
            email,
            "Confirm your email address",
            format!("Confirm your email address for Berth:\n\n{link}\n\nThis link expires in 24 hours.\n"),
        )
        .await?;
        tracing::info!(account = %account.id, "verification email sent");
        Ok(())
    }

    /// Mails a password-reset link to `email` for `account_id`.
    pub(crate) async fn send_password_reset(
        &self,
        account_id: &str,
        email: &str,
    ) -> Result<(), UserError> {
        let limits = &self.config().limits;
        let token = self.random_token()?;
        let ttl = secs(limits.reset_token_ttl.as_secs());
        self.inner
            .store
            .insert_one_time(
                &sha256(&token),
                account_id,
                PURPOSE_RESET,
                store::now() + ttl,
            )
            .await?;
        let link = format!(
            "{}/reset-password?token={token}",
            self.config().public_url.trim_end_matches('/')
        );
        self.send_mail(
            email,
            "Reset your password",
            format!("Someone asked to reset your Berth password. If it was you, open:\n\n{link}\n\nThis link expires in 30 minutes. Otherwise ignore this message.\n"),
        )
        .await?;
        tracing::info!(account = %account_id, "password reset email sent");
        Ok(())
    }
}
