//! Stripe's list objects: newest first, `limit`, `starting_after`,
//! `ending_before`, `created` (an integer or `created[gt|gte|lt|lte]`).

use serde_json::{Value, json};

use super::errors::ApiError;
use super::form::Params;

/// One listable object: creation order, timestamp, id, JSON.
pub(crate) struct Item {
    pub seq: u64,
    pub created: i64,
    pub id: String,
    pub json: Value,
}

pub(crate) const LIST_PARAMS: [&str; 4] = ["limit", "starting_after", "ending_before", "created"];

pub(crate) fn limit(p: &Params) -> Result<usize, ApiError> {
    match p.int("limit")? {
        None => Ok(10),
        Some(n @ 1..=100) => Ok(n as usize),
        Some(_) => Err(ApiError::param(
            "parameter_invalid_integer",
            "limit",
            "This value must be less than or equal to 100 and greater than or equal to 1 (limit).",
        )),
    }
}

/// Keeps the items whose `created` passes the filter.
fn created_filter(p: &Params) -> Result<impl Fn(i64) -> bool, ApiError> {
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    if p.is_str("created") {
        let t = p.int("created")?.unwrap_or_default();
        (lo, hi) = (t, t);
    } else if let Some(range) = p.hash("created")? {
        range.only(&["gt", "gte", "lt", "lte"])?;
        if let Some(t) = range.int("gt")? {
            lo = lo.max(t.saturating_add(1));
        }
        if let Some(t) = range.int("gte")? {
            lo = lo.max(t);
        }
        if let Some(t) = range.int("lt")? {
            hi = hi.min(t.saturating_sub(1));
        }
        if let Some(t) = range.int("lte")? {
            hi = hi.min(t);
        }
    }
    Ok(move |c: i64| c >= lo && c <= hi)
}

/// `kind` names the object in "No such ..." for a bad cursor.
pub(crate) fn page(
    mut items: Vec<Item>,
    p: &Params,
    url: &str,
    kind: &'static str,
) -> Result<Value, ApiError> {
    let limit = limit(p)?;
    let keep = created_filter(p)?;
    items.retain(|i| keep(i.created));
    items.sort_by_key(|i| std::cmp::Reverse(i.seq));
    let position = |param: &'static str| -> Result<Option<usize>, ApiError> {
        match p.text(param)? {
            None => Ok(None),
            Some(id) => items
                .iter()
                .position(|i| i.id == id)
                .map(Some)
                .ok_or_else(|| ApiError::missing(kind, &id, Some(param))),
        }
    };
    let (start, end) = match (position("starting_after")?, position("ending_before")?) {
        (Some(after), _) => (after + 1, (after + 1 + limit).min(items.len())),
        (None, Some(before)) => (before.saturating_sub(limit), before),
        (None, None) => (0, limit.min(items.len())),
    };
    let ending_before = p.text("ending_before")?.is_some() && p.text("starting_after")?.is_none();
    let has_more = if ending_before {
        start > 0
    } else {
        end < items.len()
    };
    let data: Vec<Value> = items.drain(start..end).map(|i| i.json).collect();
    Ok(json!({ "object": "list", "data": data, "has_more": has_more, "url": url }))
}
