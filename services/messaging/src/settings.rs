//! Where the senders are, and reading that from a service's `[service]`
//! settings (`service.smtp.*`, `service.sms.*`), once for every service.

use crate::sms::TwilioConfig;

/// How to reach the SMTP server.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SmtpSecurity {
    /// Plain SMTP (local sinks and relays on a trusted network only).
    None,
    /// STARTTLS upgrade (port 587).
    #[default]
    StartTls,
    /// Implicit TLS (port 465).
    Tls,
}

#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `From:` address, e.g. `Berth <no-reply@example.com>`.
    pub from: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

fn table<'a>(service: &'a toml::Table, name: &str) -> Option<&'a toml::Table> {
    service.get(name).and_then(|v| v.as_table())
}

fn text<'a>(table: &'a toml::Table, key: &str) -> Option<&'a str> {
    table
        .get(key)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
}

/// `service.smtp.{host, port, security, username, password, from}`
/// (`BERTH_SERVICE__SMTP__HOST`, …); `None` when no host is set. Errors
/// name the setting.
pub fn smtp_from_settings(service: &toml::Table) -> Result<Option<SmtpConfig>, String> {
    let Some(smtp) = table(service, "smtp") else {
        return Ok(None);
    };
    let Some(host) = text(smtp, "host") else {
        return Ok(None);
    };
    let security = match text(smtp, "security").unwrap_or("starttls") {
        "none" => SmtpSecurity::None,
        "starttls" => SmtpSecurity::StartTls,
        "tls" => SmtpSecurity::Tls,
        other => {
            return Err(format!(
                "service.smtp.security {other:?} must be none, starttls or tls"
            ));
        }
    };
    let default_port = match security {
        SmtpSecurity::None => 25,
        SmtpSecurity::StartTls => 587,
        SmtpSecurity::Tls => 465,
    };
    // From a file the port is a number; from the environment it may be text.
    let port = match smtp.get("port") {
        None => default_port,
        Some(toml::Value::Integer(n)) => u16::try_from(*n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("service.smtp.port {n} is not a TCP port"))?,
        Some(toml::Value::String(s)) => s
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("service.smtp.port {s:?} is not a TCP port"))?,
        Some(other) => return Err(format!("service.smtp.port {other} is not a TCP port")),
    };
    let from = text(smtp, "from")
        .ok_or("service.smtp.from is required with service.smtp.host (the From: address)")?;
    Ok(Some(SmtpConfig {
        host: host.to_owned(),
        port,
        security,
        username: text(smtp, "username").map(str::to_owned),
        password: text(smtp, "password").map(str::to_owned),
        from: from.to_owned(),
    }))
}

/// `service.sms.{base_url, account_sid, auth_token, from}`; `None` when no
/// account is set.
pub fn twilio_from_settings(service: &toml::Table) -> Result<Option<TwilioConfig>, String> {
    let Some(sms) = table(service, "sms") else {
        return Ok(None);
    };
    let Some(account_sid) = text(sms, "account_sid") else {
        return Ok(None);
    };
    let required = |key: &str| {
        text(sms, key)
            .map(str::to_owned)
            .ok_or_else(|| format!("service.sms.{key} is required with service.sms.account_sid"))
    };
    Ok(Some(TwilioConfig {
        base_url: text(sms, "base_url")
            .unwrap_or(TwilioConfig::DEFAULT_BASE_URL)
            .to_owned(),
        account_sid: account_sid.to_owned(),
        auth_token: required("auth_token")?,
        from: required("from")?,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn smtp_settings_default_by_security_and_name_what_is_wrong() {
        assert!(smtp_from_settings(&settings("")).unwrap().is_none());
        let smtp = smtp_from_settings(&settings(
            "[smtp]\nhost = \"mail\"\nfrom = \"Berth <b@x.test>\"",
        ))
        .unwrap()
        .unwrap();
        assert_eq!((smtp.port, smtp.security), (587, SmtpSecurity::StartTls));
        let smtp = smtp_from_settings(&settings(
            "[smtp]\nhost = \"mail\"\nport = \"2525\"\nsecurity = \"none\"\nfrom = \"b@x.test\"",
        ))
        .unwrap()
        .unwrap();
        assert_eq!((smtp.port, smtp.security), (2525, SmtpSecurity::None));
        let error = smtp_from_settings(&settings("[smtp]\nhost = \"mail\"")).unwrap_err();
        assert!(error.contains("service.smtp.from"), "{error}");
        let error = smtp_from_settings(&settings(
            "[smtp]\nhost = \"mail\"\nfrom = \"b@x.test\"\nport = 70000",
        ))
        .unwrap_err();
        assert!(error.contains("service.smtp.port"), "{error}");
    }

    #[test]
    fn sms_settings_need_a_token_and_sender() {
        assert!(twilio_from_settings(&settings("")).unwrap().is_none());
        assert!(twilio_from_settings(&settings("[sms]\naccount_sid = \"AC1\"")).is_err());
        let sms = twilio_from_settings(&settings(
            "[sms]\naccount_sid = \"AC1\"\nauth_token = \"t\"\nfrom = \"+1500\"",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(sms.base_url, TwilioConfig::DEFAULT_BASE_URL);
    }
}
