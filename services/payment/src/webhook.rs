//! Stripe's webhook signature, checked on the raw body before anything is
//! stored: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` where each
//! `v1` is HMAC-SHA256 over `"<t>.<body>"` keyed by an endpoint secret. Any
//! `v1` matching any configured secret passes (Stripe sends one per active
//! secret while a secret is rolled; we may hold the old and the new), the
//! comparison is constant-time (`Mac::verify_slice`), and `t` must be within
//! the tolerance of now, so a captured request cannot be replayed later.
//!
//! Our own code rather than async-stripe-webhook's `construct_event`: that
//! one takes one secret and parses the whole event with the SDK's types, so
//! an event type the SDK does not know would be refused after Stripe signed
//! it; here the body is verified, then stored as it came.

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Stripe's default: five minutes either way.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("no signature matches")]
    NoMatch,
    #[error("the signature's timestamp is {0} s away from now (at most {TOLERANCE_SECS} s)")]
    Stale(i64),
}

/// Verifies `header` over `body` at `now` (Unix seconds).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("expected key=value pairs"))?;
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t is not a number"))?,
                );
            }
            // A value that is not hex cannot match; skip it like others do.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t= timestamp"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1= signature"));
    }
    let mut matched = false;
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // Every candidate is checked (no early exit on the first match), so
        // timing does not tell which secret or position matched.
        for signature in &signatures {
            matched |= mac.clone().verify_slice(signature).is_ok();
        }
    }
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    // Checked after the signature: a stale but authentic request is told
    // so; a forged one learns nothing about the clock.
    let skew = (now - timestamp).abs();
    if skew > tolerance_secs {
        return Err(SignatureError::Stale(skew));
    }
    Ok(())
}

/// The fields of an event the service needs; the intent itself is always
/// fetched from Stripe, never taken from the event.
#[derive(Debug, Deserialize)]
pub struct EventHead {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: EventObject,
}

#[derive(Debug, Deserialize)]
pub struct EventObject {
    pub id: Option<String>,
    pub object: Option<String>,
    /// Set on charges and refunds: the intent they belong to.
    pub payment_intent: Option<String>,
}

impl EventHead {
    /// The PaymentIntent this event is about, if any.
    pub fn intent_id(&self) -> Option<&str> {
        match self.data.object.object.as_deref() {
            Some("payment_intent") => self.data.object.id.as_deref(),
            _ => self.data.object.payment_intent.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    const NOW: i64 = 1_800_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_correct_signature_passes() {
        let header = format!("t={NOW},v1={}", sign("whsec_a", NOW, BODY));
        assert_eq!(
            verify(Some(&header), BODY, &secrets(&["whsec_a"]), NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn any_v1_against_any_secret_passes_for_rotation() {
        let old = sign("whsec_old", NOW, BODY);
        let new = sign("whsec_new", NOW, BODY);
        let header = format!("t={NOW},v1={old},v1={new},v0=ignored");
        assert_eq!(
            verify(Some(&header), BODY, &secrets(&["whsec_new"]), NOW, 300),
            Ok(())
        );
        let header = format!("t={NOW},v1={new}");
        assert_eq!(
            verify(
                Some(&header),
                BODY,
                &secrets(&["whsec_old", "whsec_new"]),
                NOW,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn wrong_secret_tampered_body_and_stale_time_fail() {
        let good = sign("whsec_a", NOW, BODY);
        let header = format!("t={NOW},v1={good}");
        assert_eq!(
            verify(Some(&header), BODY, &secrets(&["whsec_b"]), NOW, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(
                Some(&header),
                br#"{"id":"evt_2"}"#,
                &secrets(&["whsec_a"]),
                NOW,
                300
            ),
            Err(SignatureError::NoMatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = format!("t={},v1={good}", NOW + 1);
        assert_eq!(
            verify(Some(&moved), BODY, &secrets(&["whsec_a"]), NOW, 300),
            Err(SignatureError::NoMatch)
        );
        for skew in [301, -301, 3 * 86_400] {
            let t = NOW - skew;
            let header = format!("t={t},v1={}", sign("whsec_a", t, BODY));
            assert_eq!(
                verify(Some(&header), BODY, &secrets(&["whsec_a"]), NOW, 300),
                Err(SignatureError::Stale(skew.abs()))
            );
        }
        let edge = NOW - 300;
        let header = format!("t={edge},v1={}", sign("whsec_a", edge, BODY));
        assert_eq!(
            verify(Some(&header), BODY, &secrets(&["whsec_a"]), NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_fail() {
        let s = secrets(&["whsec_a"]);
        assert_eq!(
            verify(None, BODY, &s, NOW, 300),
            Err(SignatureError::Missing)
        );
        for header in ["", "garbage", "t=abc,v1=00", "v1=00", "t=1", "t=1,v1=zz"] {
            assert!(
                matches!(
                    verify(Some(header), BODY, &s, NOW, 300),
                    Err(SignatureError::Malformed(_))
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn the_intent_is_found_on_intents_charges_and_refunds() {
        let intent: EventHead = serde_json::from_str(
            r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","object":"payment_intent"}}}"#,
        )
        .unwrap();
        assert_eq!(intent.intent_id(), Some("pi_1"));
        let refund: EventHead = serde_json::from_str(
            r#"{"id":"evt_2","type":"refund.created","data":{"object":{"id":"re_1","object":"refund","payment_intent":"pi_1"}}}"#,
        )
        .unwrap();
        assert_eq!(refund.intent_id(), Some("pi_1"));
    }
}
