//! Events: retrieve, and list newest first with Stripe's `type` filter
//! (a `*` wildcard allowed, e.g. `payment_intent.*`) or `types[]`.

use serde_json::Value;

use super::Ctx;
use super::errors::ApiError;
use super::form::Params;
use super::list::{self, Item, LIST_PARAMS};
use crate::model::Event;
use crate::state::State;

pub(crate) fn retrieve(st: &mut State, ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&[])?;
    st.events
        .get(ctx.id())
        .map(Event::to_json)
        .ok_or_else(|| ApiError::missing("event", ctx.id(), None))
}

pub(crate) fn list(st: &mut State, _ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    p.only(&[&LIST_PARAMS[..], &["type", "types", "delivery_success"]].concat())?;
    let mut patterns: Vec<String> = p.string_list("types")?.unwrap_or_default();
    if let Some(t) = p.text("type")? {
        patterns.push(t);
    }
    let items = st
        .events
        .values()
        .filter(|e| patterns.is_empty() || patterns.iter().any(|pat| type_matches(pat, &e.type_)))
        .map(|e| Item {
            seq: e.seq,
            created: e.created,
            id: e.id.clone(),
            json: e.to_json(),
        })
        .collect();
    list::page(items, p, "/v1/events", "event")
}

fn type_matches(pattern: &str, type_: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => type_.starts_with(prefix),
        None => pattern == type_,
    }
}
