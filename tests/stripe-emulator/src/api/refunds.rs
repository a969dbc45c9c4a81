//! Refunds of succeeded PaymentIntents; the total never exceeds what was received.

use serde_json::Value;

use super::Ctx;
use super::errors::ApiError;
use super::form::Params;
use super::intents::{load, unexpected};
use super::list::{self, Item, LIST_PARAMS};
use crate::model::{Refund, Status};
use crate::state::State;

pub(crate) fn create(st: &mut State, ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&["payment_intent", "charge", "amount", "reason", "metadata"])?;
    let amount = p.positive("amount")?;
    let reason = p.one_of(
        "reason",
        &["duplicate", "fraudulent", "requested_by_customer"],
    )?;
    let metadata = p.string_map("metadata")?.unwrap_or_default();
    let intent_id = match (p.text("payment_intent")?, p.text("charge")?) {
        (Some(pi), _) => {
            load(st, &pi)
                .map_err(|_| ApiError::missing("payment_intent", &pi, Some("payment_intent")))?;
            pi
        }
        (None, Some(ch)) => st
            .charges
            .get(&ch)
            .cloned()
            .ok_or_else(|| ApiError::missing("charge", &ch, Some("charge")))?,
        (None, None) => {
            return Err(ApiError::param(
                "parameter_missing",
                "payment_intent",
                "One of the following params should be provided for this request: payment_intent or charge.",
            ));
        }
    };
    let intent = load(st, &intent_id)?;
    let charge = intent.latest_charge.clone().unwrap_or_default();
    let payment_method = intent.payment_method.clone();
    if intent.status != Status::Succeeded {
        return Err(unexpected(
            intent,
            format!(
                "This PaymentIntent ({intent_id}) does not have a successful charge to refund."
            ),
        ));
    }
    let remaining = intent.amount_received - intent.amount_refunded;
    if remaining <= 0 {
        return Err(ApiError::Invalid {
            code: "charge_already_refunded",
            message: format!("Charge {charge} has already been refunded."),
            param: None,
        });
    }
    let amount = amount.unwrap_or(remaining);
    if amount > remaining {
        return Err(ApiError::Invalid {
            code: "amount_too_large",
            message: format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})"
            ),
            param: Some("amount"),
        });
    }
    let currency = intent.currency.clone();
    let id = format!("re_3{}", st.random(23));
    let balance_transaction = format!("txn_3{}", st.random(23));
    let seq = st.next_seq();
    let refund = Refund {
        id: id.clone(),
        seq,
        amount,
        balance_transaction,
        charge: Some(charge),
        created: State::now(),
        currency,
        metadata,
        payment_intent: intent_id.clone(),
        payment_method,
        reason,
    };
    if let Some(intent) = st.intents.get_mut(&intent_id) {
        intent.amount_refunded += amount;
    }
    let json = refund.to_json();
    st.refunds.insert(id, refund);
    st.emit(&ctx.origin, "refund.created", json.clone(), None);
    Ok(json)
}

pub(crate) fn retrieve(st: &mut State, ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&[])?;
    st.refunds
        .get(ctx.id())
        .map(Refund::to_json)
        .ok_or_else(|| ApiError::missing("refund", ctx.id(), None))
}

pub(crate) fn list(st: &mut State, _ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&[&LIST_PARAMS[..], &["payment_intent", "charge"]].concat())?;
    let pi = p.text("payment_intent")?;
    let charge = p.text("charge")?;
    let items = st
        .refunds
        .values()
        .filter(|r| pi.as_ref().is_none_or(|pi| &r.payment_intent == pi))
        .filter(|r| charge.is_none() || r.charge == charge)
        .map(|r| Item {
            seq: r.seq,
            created: r.created,
            id: r.id.clone(),
            json: r.to_json(),
        })
        .collect();
    list::page(items, p, "/v1/refunds", "refund")
}
