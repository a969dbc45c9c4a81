//! Phone numbers as every service stores and compares them: E.164
//! (`+` and 8 to 15 digits), after dropping the spaces, dashes and
//! brackets people type. The database constraints on phone columns accept
//! exactly what [`e164`] returns.

/// `"+44 (1632) 960-961"` → `Some("+441632960961")`; `None` if it is not
/// an E.164 number once the separators are gone.
pub fn e164(input: &str) -> Option<String> {
    let phone: String = input
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = phone.strip_prefix('+')?;
    ((8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()))
        .then_some(phone)
}

/// `+441632960961` → `+44********61`: enough to tell numbers apart in logs.
pub fn masked(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() < 6 {
        return "***".to_owned();
    }
    let (head, rest) = chars.split_at(3);
    let (middle, tail) = rest.split_at(rest.len() - 2);
    let mut out: String = head.iter().collect();
    out.extend(std::iter::repeat_n('*', middle.len()));
    out.extend(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_go_and_the_shape_is_checked() {
        assert_eq!(e164("+44 (1632) 960-961").as_deref(), Some("+441632960961"));
        assert_eq!(e164("+4930123456").as_deref(), Some("+4930123456"));
        assert_eq!(e164("01632960961"), None);
        assert_eq!(e164("+44 1632 96096x"), None);
        assert_eq!(e164("+1234567"), None);
        assert_eq!(e164("+1234567890123456"), None);
    }

    #[test]
    fn masking_keeps_the_ends() {
        assert_eq!(masked("+441632960961"), "+44********61");
        assert_eq!(masked("+1"), "***");
    }
}
