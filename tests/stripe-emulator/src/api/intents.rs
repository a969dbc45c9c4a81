//! PaymentIntents: create, retrieve, update, confirm, capture, cancel,
//! list, search, and the status machine behind them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Ctx;
use super::auth::KeyKind;
use super::errors::ApiError;
use super::form::Params;
use super::list::{self, Item, LIST_PARAMS};
use crate::model::{Intent, Outcome, PaymentMethod, Status, TestCard};
use crate::state::{Origin, State};

const CAPTURE_METHODS: &[&str] = &["automatic", "automatic_async", "manual"];
const CONFIRMABLE: &[Status] = &[
    Status::RequiresPaymentMethod,
    Status::RequiresConfirmation,
    Status::RequiresAction,
];

pub(crate) fn create(st: &mut State, ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&[
        "amount",
        "currency",
        "capture_method",
        "confirmation_method",
        "confirm",
        "description",
        "metadata",
        "payment_method",
        "payment_method_types",
        "allowed_payment_method_types",
        "automatic_payment_methods",
        "receipt_email",
        "return_url",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "setup_future_usage",
    ])?;
    let amount = p.positive("amount")?.ok_or_else(|| missing("amount"))?;
    let currency = currency(p)?;
    let capture_method = p
        .one_of("capture_method", CAPTURE_METHODS)?
        .unwrap_or_else(|| "automatic_async".into());
    let confirmation_method = p
        .one_of("confirmation_method", &["automatic", "manual"])?
        .unwrap_or_else(|| "automatic".into());
    let metadata = metadata(p)?.unwrap_or_default();
    // API 2026-09-30 names the list `allowed_payment_method_types`; older
    // versions (and stripe-mock) `payment_method_types`.
    let allowed = p.string_list("allowed_payment_method_types")?;
    let types = match (p.string_list("payment_method_types")?, &allowed) {
        (Some(_), Some(_)) => {
            return Err(ApiError::param(
                "parameter_invalid_string",
                "payment_method_types",
                "You may only specify one of these parameters: allowed_payment_method_types, payment_method_types.",
            ));
        }
        (Some(t), None) => Some(t),
        (None, a) => a.clone(),
    };
    let automatic = match p.hash("automatic_payment_methods")? {
        None => None,
        Some(apm) => {
            apm.only(&["enabled", "allow_redirects"])?;
            let enabled = apm
                .bool("enabled")?
                .ok_or_else(|| missing("automatic_payment_methods[enabled]"))?;
            let allow = apm.one_of("allow_redirects", &["always", "never"])?;
            enabled.then(|| allow.unwrap_or_else(|| "always".into()))
        }
    };
    if types.is_some() && automatic.is_some() {
        return Err(ApiError::param(
            "parameter_invalid_string",
            "payment_method_types",
            "You may only specify one of these parameters: automatic_payment_methods, payment_method_types.",
        ));
    }
    let confirm = p.bool("confirm")?.unwrap_or(false);
    let payment_method = match p.text("payment_method")? {
        Some(pm) => Some(resolve_payment_method(st, &pm)?),
        None => None,
    };
    if confirm && payment_method.is_none() {
        return Err(no_payment_method());
    }
    setup_future_usage(p)?;

    // Since 2023-08-16 an intent without explicit types uses automatic payment methods.
    let automatic = match (&types, automatic) {
        (None, None) => Some("always".to_owned()),
        (_, a) => a,
    };
    let id = format!("pi_3{}", st.random(23));
    let secret = format!("{id}_secret_{}", st.random(25));
    let seq = st.next_seq();
    let intent = Intent {
        id: id.clone(),
        seq,
        amount,
        amount_capturable: 0,
        amount_received: 0,
        amount_refunded: 0,
        currency,
        capture_method,
        confirmation_method,
        client_secret: secret,
        created: State::now(),
        canceled_at: None,
        cancellation_reason: None,
        description: p.text("description")?,
        metadata,
        status: if payment_method.is_some() {
            Status::RequiresConfirmation
        } else {
            Status::RequiresPaymentMethod
        },
        payment_method: payment_method.clone(),
        payment_method_types: types.unwrap_or_else(|| vec!["card".into()]),
        allowed_payment_method_types: allowed,
        automatic_payment_methods: automatic,
        last_payment_error: None,
        next_action: None,
        latest_charge: None,
        receipt_email: p.text("receipt_email")?,
        statement_descriptor: p.text("statement_descriptor")?,
        statement_descriptor_suffix: p.text("statement_descriptor_suffix")?,
        setup_future_usage: p.text("setup_future_usage")?,
    };
    let json = intent.to_json();
    st.intents.insert(id.clone(), intent);
    st.emit(&ctx.origin, "payment_intent.created", json.clone(), None);
    match payment_method {
        Some(pm) if confirm => authorise(st, &ctx.origin, &id, &pm),
        _ => Ok(json),
    }
}

pub(crate) fn retrieve(st: &mut State, ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&["client_secret"])?;
    let intent = load(st, ctx.id())?;
    check_client_secret(intent, ctx, p)?;
    Ok(intent.to_json())
}

pub(crate) fn update(st: &mut State, ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&["amount", "description", "metadata", "receipt_email"])?;
    let amount = p.positive("amount")?;
    let metadata = metadata(p)?;
    let description = p.str("description")?;
    let receipt_email = p.str("receipt_email")?;
    let intent = load_mut(st, ctx.id())?;
    if amount.is_some() && !CONFIRMABLE.contains(&intent.status) {
        return Err(unexpected(
            intent,
            format!(
                "This PaymentIntent's amount could not be updated because it has a status of {}. You may only update the amount of a PaymentIntent with one of the following statuses: requires_payment_method, requires_confirmation, requires_action.",
                intent.status.as_str()
            ),
        ));
    }
    if let Some(a) = amount {
        intent.amount = a;
    }
    if let Some(m) = metadata {
        merge_metadata(&mut intent.metadata, m);
    }
    if let Some(d) = description {
        intent.description = (!d.is_empty()).then_some(d);
    }
    if let Some(e) = receipt_email {
        intent.receipt_email = (!e.is_empty()).then_some(e);
    }
    Ok(intent.to_json())
}

pub(crate) fn confirm(st: &mut State, ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&[
        "payment_method",
        "client_secret",
        "return_url",
        "receipt_email",
        "setup_future_usage",
        "off_session",
        "use_stripe_sdk",
    ])?;
    let requested = p.text("payment_method")?;
    setup_future_usage(p)?;
    let intent = load(st, ctx.id())?;
    check_client_secret(intent, ctx, p)?;
    if !CONFIRMABLE.contains(&intent.status) {
        return Err(unexpected(
            intent,
            format!(
                "You cannot confirm this PaymentIntent because it has a status of {}. Only a PaymentIntent with one of the following statuses may be confirmed: requires_payment_method, requires_confirmation, requires_action.",
                intent.status.as_str()
            ),
        ));
    }
    let existing = intent.payment_method.clone();
    let pm = match requested {
        Some(pm) => resolve_payment_method(st, &pm)?,
        None => existing.ok_or_else(no_payment_method)?,
    };
    if let Some(email) = p.text("receipt_email")? {
        load_mut(st, ctx.id())?.receipt_email = Some(email);
    }
    authorise(st, &ctx.origin, ctx.id(), &pm)
}

pub(crate) fn capture(st: &mut State, ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&[
        "amount_to_capture",
        "metadata",
        "statement_descriptor",
        "statement_descriptor_suffix",
    ])?;
    let requested = p.positive("amount_to_capture")?;
    let metadata = metadata(p)?;
    let intent = load_mut(st, ctx.id())?;
    if intent.status != Status::RequiresCapture {
        return Err(unexpected(
            intent,
            format!(
                "This PaymentIntent could not be captured because it has a status of {}. Only a PaymentIntent with one of the following statuses may be captured: requires_capture.",
                intent.status.as_str()
            ),
        ));
    }
    let amount = requested.unwrap_or(intent.amount_capturable);
    if amount > intent.amount_capturable {
        return Err(ApiError::Invalid {
            code: "amount_too_large",
            message: format!(
                "The amount to capture ({amount}) must be less than or equal to the amount capturable ({}).",
                intent.amount_capturable
            ),
            param: Some("amount_to_capture"),
        });
    }
    intent.status = Status::Succeeded;
    intent.amount_received = amount;
    intent.amount_capturable = 0;
    if let Some(m) = metadata {
        merge_metadata(&mut intent.metadata, m);
    }
    let json = intent.to_json();
    st.emit(&ctx.origin, "payment_intent.succeeded", json.clone(), None);
    Ok(json)
}

pub(crate) fn cancel(st: &mut State, ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&["cancellation_reason"])?;
    let reason = p.one_of(
        "cancellation_reason",
        &[
            "duplicate",
            "fraudulent",
            "requested_by_customer",
            "abandoned",
        ],
    )?;
    let intent = load(st, ctx.id())?;
    if !intent.status.cancelable() {
        return Err(unexpected(
            intent,
            format!(
                "You cannot cancel this PaymentIntent because it has a status of {}. Only a PaymentIntent with one of the following statuses may be canceled: requires_payment_method, requires_capture, requires_confirmation, requires_action, processing.",
                intent.status.as_str()
            ),
        ));
    }
    Ok(cancel_now(st, &ctx.origin, ctx.id(), reason))
}

/// Cancels a non-terminal intent (also the control API's expiry).
pub(crate) fn cancel_now(
    st: &mut State,
    origin: &Origin,
    id: &str,
    reason: Option<String>,
) -> Value {
    let Some(intent) = st.intents.get_mut(id) else {
        return Value::Null;
    };
    intent.status = Status::Canceled;
    intent.canceled_at = Some(State::now());
    intent.cancellation_reason = reason;
    intent.amount_capturable = 0;
    intent.next_action = None;
    let json = intent.to_json();
    st.emit(origin, "payment_intent.canceled", json.clone(), None);
    json
}

pub(crate) fn list(st: &mut State, _ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&[&LIST_PARAMS[..], &["customer"]].concat())?;
    let items = st.intents.values().map(item).collect();
    list::page(items, p, "/v1/payment_intents", "payment_intent")
}

/// Stripe's search language, as far as Berth needs it:
/// `metadata['k']:'v'` and `status:'v'` clauses joined by `AND`.
pub(crate) fn search(st: &mut State, _ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&["query", "limit", "page"])?;
    let query = p.required("query")?;
    let clauses = parse_query(&query).ok_or_else(|| {
        ApiError::param(
            "parameter_invalid_string",
            "query",
            format!("We were unable to parse your search query. Try using the format `metadata[\"key\"]:\"value\"` to query for metadata or key:\"value\" to query for other fields. (query: {query})"),
        )
    })?;
    let limit = list::limit(p)?;
    let offset = match p.text("page")? {
        None => 0,
        Some(page) => page
            .strip_prefix("page_")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                ApiError::param("parameter_invalid_string", "page", "Invalid page token.")
            })?,
    };
    let mut hits: Vec<&Intent> = st
        .intents
        .values()
        .filter(|i| clauses.iter().all(|c| c.matches(i)))
        .collect();
    hits.sort_by_key(|i| std::cmp::Reverse(i.seq));
    let has_more = hits.len() > offset + limit;
    let data: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|i| i.to_json())
        .collect();
    Ok(json!({
        "object": "search_result",
        "data": data,
        "has_more": has_more,
        "next_page": has_more.then(|| format!("page_{}", offset + limit)),
        "url": "/v1/payment_intents/search"
    }))
}

enum Clause {
    Metadata(String, String),
    Status(String),
}

impl Clause {
    fn matches(&self, i: &Intent) -> bool {
        match self {
            Self::Metadata(k, v) => i.metadata.get(k) == Some(v),
            Self::Status(s) => i.status.as_str() == s,
        }
    }
}

fn parse_query(query: &str) -> Option<Vec<Clause>> {
    query
        .split(" AND ")
        .map(|c| parse_clause(c.trim()))
        .collect()
}

fn parse_clause(c: &str) -> Option<Clause> {
    let quoted = |s: &str| -> Option<String> {
        let q = s.chars().next().filter(|q| *q == '\'' || *q == '"')?;
        s.strip_prefix(q)?.strip_suffix(q).map(str::to_owned)
    };
    if let Some(rest) = c.strip_prefix("metadata[") {
        let (key, value) = rest.split_once("]:")?;
        return Some(Clause::Metadata(quoted(key)?, quoted(value)?));
    }
    let value = c.strip_prefix("status:")?;
    Some(Clause::Status(quoted(value)?))
}

/// Confirms with a payment method: the card decides what happens.
pub(crate) fn authorise(
    st: &mut State,
    origin: &Origin,
    id: &str,
    pm: &str,
) -> Result<Value, ApiError> {
    let card = st
        .payment_methods
        .get(pm)
        .map(|m| m.card)
        .unwrap_or(TestCard::Visa);
    match card.outcome() {
        Outcome::Authorised => Ok(succeed(st, origin, id, pm)),
        Outcome::RequiresAction => {
            let source = st.new_id("src");
            let intent = load_mut(st, id)?;
            intent.status = Status::RequiresAction;
            intent.payment_method = Some(pm.to_owned());
            intent.last_payment_error = None;
            intent.next_action = Some(json!({
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {
                    "type": "three_d_secure_redirect",
                    "stripe_js": format!("https://hooks.stripe.com/redirect/authenticate/{source}"),
                    "source": source
                }
            }));
            let json = intent.to_json();
            st.emit(origin, "payment_intent.requires_action", json.clone(), None);
            Ok(json)
        }
        Outcome::Declined { decline_code } => {
            let message = match decline_code {
                "insufficient_funds" => "Your card has insufficient funds.",
                _ => "Your card was declined.",
            };
            Err(fail(
                st,
                origin,
                id,
                pm,
                "card_declined",
                Some(decline_code),
                message,
            ))
        }
    }
}

/// A successful authorisation (or completed authentication).
pub(crate) fn succeed(st: &mut State, origin: &Origin, id: &str, pm: &str) -> Value {
    let charge = format!("ch_3{}", st.random(23));
    st.charges.insert(charge.clone(), id.to_owned());
    let Some(intent) = st.intents.get_mut(id) else {
        return Value::Null;
    };
    intent.payment_method = Some(pm.to_owned());
    intent.latest_charge = Some(charge);
    intent.last_payment_error = None;
    intent.next_action = None;
    let event = if intent.is_manual() {
        intent.status = Status::RequiresCapture;
        intent.amount_capturable = intent.amount;
        "payment_intent.amount_capturable_updated"
    } else {
        intent.status = Status::Succeeded;
        intent.amount_received = intent.amount;
        "payment_intent.succeeded"
    };
    let json = intent.to_json();
    st.emit(origin, event, json.clone(), None);
    json
}

/// A failed payment attempt: back to requires_payment_method with
/// `last_payment_error`, and the 402 Stripe answers.
pub(crate) fn fail(
    st: &mut State,
    origin: &Origin,
    id: &str,
    pm: &str,
    code: &'static str,
    decline_code: Option<&'static str>,
    message: &str,
) -> ApiError {
    let charge = (code == "card_declined").then(|| format!("ch_3{}", st.random(23)));
    if let Some(c) = &charge {
        st.charges.insert(c.clone(), id.to_owned());
    }
    let pm_json = st.payment_methods.get(pm).map(PaymentMethod::to_json);
    let mut error = json!({
        "type": "card_error",
        "code": code,
        "doc_url": format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")),
        "message": message,
    });
    if let Some(obj) = error.as_object_mut() {
        if let Some(d) = decline_code {
            obj.insert("decline_code".into(), json!(d));
        }
        if let Some(c) = &charge {
            obj.insert("charge".into(), json!(c));
        }
        if let Some(m) = &pm_json {
            obj.insert("payment_method".into(), m.clone());
        }
    }
    let Some(intent) = st.intents.get_mut(id) else {
        return ApiError::missing("payment_intent", id, None);
    };
    intent.status = Status::RequiresPaymentMethod;
    intent.payment_method = None;
    intent.next_action = None;
    if charge.is_some() {
        intent.latest_charge = charge.clone();
    }
    intent.last_payment_error = Some(error);
    let json = intent.to_json();
    st.emit(origin, "payment_intent.payment_failed", json.clone(), None);
    ApiError::Card {
        code,
        decline_code,
        message: message.to_owned(),
        charge,
        payment_intent: json,
        payment_method: pm_json,
    }
}

pub(crate) fn load<'a>(st: &'a State, id: &str) -> Result<&'a Intent, ApiError> {
    st.intents
        .get(id)
        .ok_or_else(|| ApiError::missing("payment_intent", id, None))
}

pub(crate) fn load_mut<'a>(st: &'a mut State, id: &str) -> Result<&'a mut Intent, ApiError> {
    st.intents
        .get_mut(id)
        .ok_or_else(|| ApiError::missing("payment_intent", id, None))
}

pub(crate) fn unexpected(intent: &Intent, message: String) -> ApiError {
    ApiError::UnexpectedState {
        message,
        payment_intent: intent.to_json(),
    }
}

fn item(i: &Intent) -> Item {
    Item {
        seq: i.seq,
        created: i.created,
        id: i.id.clone(),
        json: i.to_json(),
    }
}

/// A test token makes a fresh PaymentMethod; a `pm_...` made before is reused.
fn resolve_payment_method(st: &mut State, token: &str) -> Result<String, ApiError> {
    if st.payment_methods.contains_key(token) {
        return Ok(token.to_owned());
    }
    let card = TestCard::from_token(token)
        .ok_or_else(|| ApiError::missing("PaymentMethod", token, Some("payment_method")))?;
    let id = format!("pm_1{}", st.random(23));
    st.payment_methods.insert(
        id.clone(),
        PaymentMethod {
            id: id.clone(),
            card,
            created: State::now(),
        },
    );
    Ok(id)
}

/// Stripe.js calls with a publishable key and must prove the client secret.
fn check_client_secret(intent: &Intent, ctx: &Ctx, p: &Params) -> Result<(), ApiError> {
    match p.text("client_secret")? {
        Some(s) if s != intent.client_secret => Err(ApiError::Invalid {
            code: "payment_intent_invalid_parameter",
            message: "The client_secret provided does not match the client_secret associated with the PaymentIntent.".into(),
            param: Some("client_secret"),
        }),
        None if ctx.key == KeyKind::Publishable => Err(missing("client_secret")),
        _ => Ok(()),
    }
}

fn currency(p: &Params) -> Result<String, ApiError> {
    let c = p.required("currency")?.to_ascii_lowercase();
    if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_lowercase()) {
        Ok(c)
    } else {
        Err(ApiError::param(
            "parameter_invalid_string",
            "currency",
            format!(
                "Invalid currency: {c}. Stripe currently supports these currencies: usd, eur, gbp, ..."
            ),
        ))
    }
}

/// Stripe's limits: 50 keys, keys up to 40 characters, values up to 500.
fn metadata(p: &Params) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(m) = p.string_map("metadata")? else {
        return Ok(None);
    };
    if m.len() > 50 {
        return Err(ApiError::param(
            "parameter_invalid_hash",
            "metadata",
            "Invalid metadata: metadata cannot have more than 50 keys",
        ));
    }
    if let Some((k, _)) = m.iter().find(|(k, v)| k.len() > 40 || v.len() > 500) {
        return Err(ApiError::param(
            "parameter_invalid_string",
            &format!("metadata[{k}]"),
            "Metadata keys can be at most 40 characters and values at most 500 characters.",
        ));
    }
    Ok(Some(m))
}

/// An empty value unsets the key, as on Stripe.
fn merge_metadata(into: &mut BTreeMap<String, String>, update: BTreeMap<String, String>) {
    if update.is_empty() {
        into.clear();
    }
    for (k, v) in update {
        if v.is_empty() {
            into.remove(&k);
        } else {
            into.insert(k, v);
        }
    }
}

fn setup_future_usage(p: &Params) -> Result<(), ApiError> {
    p.one_of("setup_future_usage", &["off_session", "on_session"])
        .map(|_| ())
}

fn missing(param: &str) -> ApiError {
    ApiError::param(
        "parameter_missing",
        param,
        format!("Missing required param: {param}."),
    )
}

fn no_payment_method() -> ApiError {
    ApiError::param(
        "parameter_missing",
        "payment_method",
        "You cannot confirm this PaymentIntent because it's missing a payment method. You can either update the PaymentIntent with a payment method and then confirm it again, or confirm it again directly with a payment method.",
    )
}
