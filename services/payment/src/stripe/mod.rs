//! The Stripe calls the saga makes, each with the idempotency key of its
//! saga step, and what it reads back ([`IntentView`]). Requests and answers
//! are async-stripe's own types (`stripe_core`), carried by [`StripeHttp`].

mod http;

use std::collections::HashMap;

use berth_runtime::resilience::Dependency;
use std::sync::Arc;
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_core::payment_intent::{
    CancelPaymentIntent, CancelPaymentIntentCancellationReason, CapturePaymentIntent,
    CreatePaymentIntent, ListPaymentIntent, RetrievePaymentIntent,
};
use stripe_core::refund::{CreateRefund, ListRefund};
use stripe_core::{PaymentIntent, PaymentIntentCaptureMethod, PaymentIntentStatus};

pub use http::{StripeCallError, StripeHttp};

use crate::saga::rules::{IntentStatus, IntentView};

/// Metadata keys Berth writes on every intent and refund.
pub const BOOKING_ID: &str = "booking_id";
pub const PAYMENT_ID: &str = "payment_id";
pub const REFUND_KEY: &str = "berth_refund";

type Result<T> = std::result::Result<T, StripeCallError>;

/// A created or fetched intent: what the saga decides on, plus what the
/// client needs to pay.
#[derive(Debug, Clone)]
pub struct Intent {
    pub id: String,
    pub client_secret: Option<String>,
    /// `metadata[payment_id]`: the Berth payment that asked for it.
    pub payment_id: Option<String>,
    pub view: IntentView,
}

#[derive(Clone)]
pub struct Stripe {
    http: StripeHttp,
}

fn key(raw: &str) -> Result<RequestStrategy> {
    IdempotencyKey::new(raw)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| StripeCallError::Decode(format!("idempotency key {raw:?}: {e}")))
}

/// What this payment asks Stripe for.
pub struct NewIntent<'a> {
    pub payment_id: &'a str,
    pub booking_id: &'a str,
    pub amount_minor: i64,
    /// ISO 4217, any case.
    pub currency: &'a str,
    pub description: String,
}

impl Stripe {
    pub fn new(
        api_base: &str,
        secret_key: &str,
        dependency: Arc<Dependency>,
    ) -> std::result::Result<Self, String> {
        Ok(Self {
            http: StripeHttp::new(api_base, secret_key, dependency)?,
        })
    }

    /// A PaymentIntent with manual capture: the card is authorised when the
    /// customer pays, captured only once the booking's time is secured.
    pub async fn create_intent(
        &self,
        new: &NewIntent<'_>,
        idempotency_key: &str,
    ) -> Result<Intent> {
        let currency = new
            .currency
            .to_ascii_lowercase()
            .parse::<stripe_types::Currency>()
            .map_err(|_| StripeCallError::Decode(format!("currency {:?}", new.currency)))?;
        let metadata = HashMap::from([
            (BOOKING_ID.to_owned(), new.booking_id.to_owned()),
            (PAYMENT_ID.to_owned(), new.payment_id.to_owned()),
        ]);
        let intent = CreatePaymentIntent::new(new.amount_minor, currency)
            .capture_method(PaymentIntentCaptureMethod::Manual)
            .allowed_payment_method_types(vec![
                stripe_shared::PaymentIntentAllowedPaymentMethodTypes::Card,
            ])
            .metadata(metadata)
            .description(new.description.clone())
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.http)
            .await?;
        Ok(intent_of(intent))
    }

    pub async fn intent(&self, id: &str) -> Result<Intent> {
        let intent = RetrievePaymentIntent::new(id)
            .customize()
            .send(&self.http)
            .await?;
        Ok(intent_of(intent))
    }

    pub async fn capture(&self, id: &str, idempotency_key: &str) -> Result<Intent> {
        let intent = CapturePaymentIntent::new(id)
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.http)
            .await?;
        Ok(intent_of(intent))
    }

    pub async fn cancel(&self, id: &str, idempotency_key: &str) -> Result<Intent> {
        let intent = CancelPaymentIntent::new(id)
            .cancellation_reason(CancelPaymentIntentCancellationReason::RequestedByCustomer)
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.http)
            .await?;
        Ok(intent_of(intent))
    }

    /// Refunds `amount_minor` of the intent; `refund_key` marks the refund
    /// (metadata) so a lost answer can be found again.
    pub async fn refund(
        &self,
        intent_id: &str,
        amount_minor: i64,
        refund_key: &str,
    ) -> Result<i64> {
        let refund = CreateRefund::new()
            .payment_intent(intent_id)
            .amount(amount_minor)
            .metadata(HashMap::from([(
                REFUND_KEY.to_owned(),
                refund_key.to_owned(),
            )]))
            .customize()
            .request_strategy(key(refund_key)?)
            .send(&self.http)
            .await?;
        Ok(refund.amount)
    }

    /// The refund of `intent_id` marked `refund_key`, if Stripe has one
    /// (finding out whether a call whose answer was lost took effect).
    pub async fn find_refund(&self, intent_id: &str, refund_key: &str) -> Result<Option<i64>> {
        let page = ListRefund::new()
            .payment_intent(intent_id)
            .limit(100)
            .customize()
            .send(&self.http)
            .await?;
        Ok(page
            .data
            .iter()
            .find(|r| {
                r.metadata
                    .as_ref()
                    .and_then(|m| m.get(REFUND_KEY))
                    .map(String::as_str)
                    == Some(refund_key)
            })
            .map(|r| r.amount))
    }

    /// Everything refunded of `intent_id` so far (succeeded or pending).
    pub async fn refunded_total(&self, intent_id: &str) -> Result<i64> {
        let page = ListRefund::new()
            .payment_intent(intent_id)
            .limit(100)
            .customize()
            .send(&self.http)
            .await?;
        Ok(page
            .data
            .iter()
            .filter(|r| !matches!(r.status.as_deref(), Some("failed" | "canceled")))
            .map(|r| r.amount)
            .sum())
    }

    /// Intents created at or after `since` (Unix seconds), oldest page first
    /// after `starting_after`: for finding an intent whose creation answer
    /// was lost, and for the reconciler's drift check.
    pub async fn intents_since(
        &self,
        since: i64,
        starting_after: Option<&str>,
    ) -> Result<(Vec<Intent>, bool)> {
        let mut list = ListPaymentIntent::new()
            .created(stripe_types::RangeQueryTs::gte(since))
            .limit(100);
        if let Some(after) = starting_after {
            list = list.starting_after(after);
        }
        let page = list.customize().send(&self.http).await?;
        Ok((
            page.data.into_iter().map(intent_of).collect(),
            page.has_more,
        ))
    }
}

fn intent_of(intent: PaymentIntent) -> Intent {
    let status = match intent.status {
        PaymentIntentStatus::RequiresPaymentMethod => IntentStatus::RequiresPaymentMethod,
        PaymentIntentStatus::RequiresConfirmation => IntentStatus::RequiresConfirmation,
        PaymentIntentStatus::RequiresAction => IntentStatus::RequiresAction,
        PaymentIntentStatus::Processing => IntentStatus::Processing,
        PaymentIntentStatus::RequiresCapture => IntentStatus::RequiresCapture,
        PaymentIntentStatus::Succeeded => IntentStatus::Succeeded,
        PaymentIntentStatus::Canceled => IntentStatus::Canceled,
        // A status this SDK does not know: nothing to decide on yet.
        _ => IntentStatus::Processing,
    };
    Intent {
        id: intent.id.to_string(),
        client_secret: intent.client_secret.clone(),
        payment_id: intent.metadata.get(PAYMENT_ID).cloned(),
        view: IntentView {
            status,
            amount: intent.amount,
            amount_received: intent.amount_received,
            currency: intent.currency.to_string(),
            booking_id: intent.metadata.get(BOOKING_ID).cloned(),
            payment_error: intent.last_payment_error.is_some(),
            cancellation_reason: intent.cancellation_reason.map(|r| r.as_str().to_owned()),
        },
    }
}

/// Every request the saga sends, against stripe-mock (Stripe's OpenAPI
/// document served as a mock, started by `scripts/stack`): it refuses any
/// parameter, type or path Stripe would, and its answers must parse as
/// async-stripe's types.
#[cfg(test)]
mod contract {
    use std::sync::Arc;

    use berth_runtime::resilience::Dependencies;

    use super::*;

    fn stripe_mock() -> Stripe {
        let url = std::env::var("STRIPE_MOCK_URL").unwrap_or_else(|_| {
            panic!(
                "STRIPE_MOCK_URL is not set: run `scripts/stack up && eval \"$(scripts/stack env)\"` first"
            )
        });
        let dependencies =
            Arc::new(Dependencies::new(&prometheus::Registry::new(), Default::default()).unwrap());
        Stripe::new(&url, "sk_test_123", dependencies.get("stripe")).unwrap()
    }

    #[tokio::test]
    async fn every_call_the_saga_makes_is_one_stripe_accepts() {
        let stripe = stripe_mock();
        let intent = stripe
            .create_intent(
                &NewIntent {
                    payment_id: "01a23c5b-49a5-76ee-acdd-aece4c2c3b01",
                    booking_id: "01a23c5b-4988-7059-90f5-5eaf70cacc0a",
                    amount_minor: 4500,
                    currency: "EUR",
                    description: "Berth booking 01a23c5b-4988-7059-90f5-5eaf70cacc0a".into(),
                },
                "berth-test-create-0",
            )
            .await
            .unwrap();
        assert!(intent.id.starts_with("pi_"));
        stripe.intent(&intent.id).await.unwrap();
        stripe
            .capture(&intent.id, "berth-test-capture-0")
            .await
            .unwrap();
        stripe
            .cancel(&intent.id, "berth-test-cancel-0")
            .await
            .unwrap();
        stripe
            .refund(&intent.id, 100, "berth-test-refund-1")
            .await
            .unwrap();
        stripe
            .find_refund(&intent.id, "berth-test-refund-1")
            .await
            .unwrap();
        stripe.refunded_total(&intent.id).await.unwrap();
        let (page, _) = stripe.intents_since(1_700_000_000, None).await.unwrap();
        let after = page.last().map(|i| i.id.clone());
        stripe
            .intents_since(1_700_000_000, after.as_deref())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn stripe_mock_refuses_what_stripe_refuses() {
        // The contract test would prove nothing if the mock took anything.
        use stripe_client_core::{RequestBuilder, StripeMethod};
        let stripe = stripe_mock();
        let malformed = RequestBuilder::new(StripeMethod::Post, "/payment_intents")
            .form(&[("amount", "lots"), ("currency", "eur")])
            .customize::<PaymentIntent>()
            .send(&stripe.http)
            .await;
        assert!(
            matches!(malformed, Err(StripeCallError::Api { status: 400, .. })),
            "{malformed:?}"
        );
        let unknown = RequestBuilder::new(StripeMethod::Post, "/payment_intents")
            .form(&[
                ("amount", "100"),
                ("currency", "eur"),
                ("not_a_parameter", "x"),
            ])
            .customize::<PaymentIntent>()
            .send(&stripe.http)
            .await;
        assert!(
            matches!(unknown, Err(StripeCallError::Api { status: 400, .. })),
            "{unknown:?}"
        );
    }
}
