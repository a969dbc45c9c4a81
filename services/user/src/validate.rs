//! Normalisation and validation of email addresses and phone numbers.

use berth_runtime::Problem;

pub(crate) fn normalize_email(email: &str) -> Result<String, Problem> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(Problem::validation("`email` is not a valid address"))
    }
}

pub(crate) fn normalize_phone(phone: &str) -> Result<String, Problem> {
    berth_runtime::phone::e164(phone)
        .ok_or_else(|| Problem::validation("`phone` must be in E.164 form, e.g. +441632960961"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_phones_are_normalised() {
        assert_eq!(normalize_email(" A@Example.COM ").unwrap(), "a@example.com");
        assert!(normalize_email("nope").is_err());
        assert!(normalize_email("a@b").is_err());
        assert_eq!(normalize_phone("+44 1632 960961").unwrap(), "+441632960961");
        assert!(normalize_phone("01632960961").is_err());
    }
}
