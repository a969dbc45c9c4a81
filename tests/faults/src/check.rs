//! The rules a run must keep, each a function of the history and the final
//! state. [`check`] runs them all and returns every violation found.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use uuid::Uuid;

use crate::history::{Final, FinalBooking, Op, Outcome, Request, Span, Told};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum Violation {
    /// More seats taken at `at` than the resource has (live claims, or
    /// live bookings).
    Overbooked {
        resource: Uuid,
        at: i64,
        seats: u32,
        capacity: u32,
        source: &'static str,
    },
    /// A client was told a state that the booking does not end in, and no
    /// unanswered request or payment can explain the difference.
    LostWrite {
        booking: Uuid,
        told: Told,
        found: Option<(String, i64)>,
    },
    /// A booking that no request in the history could have created.
    Phantom { booking: Uuid },
    /// One idempotency key made more than one booking.
    DoubleCreate {
        client: String,
        key: String,
        bookings: Vec<Uuid>,
    },
    /// A retry with the same key got a different answer than the first.
    SecondAnswer {
        client: String,
        key: String,
        first: (u16, String),
        later: (u16, String),
    },
}

/// Every violation in the run.
pub fn check(history: &[Op], end: &Final) -> Vec<Violation> {
    let mut found = overbooking(end);
    found.extend(lost_writes(history, end));
    found.extend(unexplained_bookings(history, end));
    found.extend(idempotency(history, end));
    found
}

/// Statuses that hold time.
const LIVE: [&str; 3] = ["held", "pending_payment", "confirmed"];

/// No instant of any resource holds more seats than its capacity, in the
/// ledger's live claims nor in the live bookings.
pub fn overbooking(end: &Final) -> Vec<Violation> {
    let claims = end.claims.iter().map(|c| (c.resource, c.span, c.seats));
    let bookings = end
        .bookings
        .iter()
        .filter(|b| LIVE.contains(&b.status.as_str()))
        .map(|b| (b.resource, b.span, b.seats));
    let mut found = over_capacity(claims, &end.capacity, "ledger");
    found.extend(over_capacity(bookings, &end.capacity, "bookings"));
    found
}

fn over_capacity(
    taken: impl Iterator<Item = (Uuid, Span, u32)>,
    capacity: &BTreeMap<Uuid, u32>,
    source: &'static str,
) -> Vec<Violation> {
    // Per resource: +seats at each start, −seats at each end; ends sort
    // before starts at the same instant (half-open spans touch, not overlap).
    let mut edges: BTreeMap<Uuid, Vec<(i64, i64)>> = BTreeMap::new();
    for (resource, span, seats) in taken {
        let e = edges.entry(resource).or_default();
        e.push((span.start, i64::from(seats)));
        e.push((span.end, -i64::from(seats)));
    }
    let mut found = Vec::new();
    for (resource, mut e) in edges {
        e.sort_unstable();
        let limit = capacity.get(&resource).copied().unwrap_or(1);
        let mut seats = 0i64;
        for (at, delta) in e {
            seats += delta;
            if seats > i64::from(limit) {
                found.push(Violation::Overbooked {
                    resource,
                    at,
                    seats: u32::try_from(seats).unwrap_or(u32::MAX),
                    capacity: limit,
                    source,
                });
                break;
            }
        }
    }
    found
}

/// Where a booking may go with no client request: holds lapse; a priced
/// booking's payment confirms it, fails it, or reinstates a lapsed hold.
fn moves_on_its_own(from: &str, to: &str, priced: bool) -> bool {
    let next: &[&str] = match (from, priced) {
        ("held", _) => &["expired"],
        ("pending_payment", true) => &["expired", "confirmed", "payment_failed"],
        ("expired", true) => &["pending_payment", "confirmed", "payment_failed"],
        _ => &[],
    };
    // One step, or two through `expired` (lapsed, then paid).
    next.contains(&to)
        || (priced && next.contains(&"expired") && moves_on_its_own("expired", to, priced))
}

/// Each booking ends in the latest state a client was told (the answer with
/// the highest version), or in one that an unanswered request on it, or
/// the booking moving on its own, explains.
pub fn lost_writes(history: &[Op], end: &Final) -> Vec<Violation> {
    let mut last_told: BTreeMap<Uuid, &Told> = BTreeMap::new();
    for op in history {
        if let Outcome::Ok { booking, .. } = &op.outcome {
            let newer = last_told
                .get(&booking.id)
                .is_none_or(|t| booking.version > t.version);
            if newer {
                last_told.insert(booking.id, booking);
            }
        }
    }
    let unanswered: BTreeSet<Uuid> = history
        .iter()
        .filter(|op| op.outcome == Outcome::Unknown)
        .filter_map(|op| op.request.booking())
        .collect();
    let finals: BTreeMap<Uuid, &FinalBooking> = end.bookings.iter().map(|b| (b.id, b)).collect();
    let mut found = Vec::new();
    for (id, told) in last_told {
        let lost = |found_as: Option<&FinalBooking>| Violation::LostWrite {
            booking: id,
            told: told.clone(),
            found: found_as.map(|b| (b.status.clone(), b.version)),
        };
        let Some(b) = finals.get(&id).copied() else {
            found.push(lost(None));
            continue;
        };
        let same = b.status == told.status && b.span == told.span;
        let explained = if b.version == told.version {
            same
        } else {
            b.version > told.version
                && (unanswered.contains(&id)
                    || (b.span == told.span && moves_on_its_own(&told.status, &b.status, b.priced)))
        };
        if !explained {
            found.push(lost(Some(b)));
        }
    }
    found
}

/// Every booking was made by a hold in the history: its creating key's
/// hold was answered with this booking or not answered at all.
pub fn unexplained_bookings(history: &[Op], end: &Final) -> Vec<Violation> {
    let mut found = Vec::new();
    for b in &end.bookings {
        let Some((client, key)) = &b.created_by else {
            found.push(Violation::Phantom { booking: b.id });
            continue;
        };
        let holds: Vec<&Op> = history
            .iter()
            .filter(|op| &op.client == client && &op.idempotency_key == key)
            .filter(|op| matches!(op.request, Request::Hold { .. }))
            .collect();
        let told_other: Vec<Uuid> = holds
            .iter()
            .filter_map(|op| match &op.outcome {
                Outcome::Ok { booking, .. } if booking.id != b.id => Some(booking.id),
                _ => None,
            })
            .collect();
        let could = holds.iter().any(|op| match &op.outcome {
            Outcome::Ok { booking, .. } => booking.id == b.id,
            Outcome::Unknown => true,
            Outcome::Refused { .. } => false,
        });
        if !told_other.is_empty() {
            let mut bookings = told_other;
            bookings.push(b.id);
            found.push(Violation::DoubleCreate {
                client: client.clone(),
                key: key.clone(),
                bookings,
            });
        } else if !could {
            found.push(Violation::Phantom { booking: b.id });
        }
    }
    found
}

/// Every answered retry of a key got the first answer, and no key made
/// two bookings.
pub fn idempotency(history: &[Op], end: &Final) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut first: BTreeMap<(&str, &str), (u16, &str)> = BTreeMap::new();
    let mut ordered: Vec<&Op> = history.iter().collect();
    ordered.sort_by_key(|op| op.completed);
    for op in ordered {
        let Outcome::Ok {
            status,
            body_digest,
            ..
        } = &op.outcome
        else {
            continue;
        };
        let key = (op.client.as_str(), op.idempotency_key.as_str());
        match first.get(&key) {
            None => {
                first.insert(key, (*status, body_digest));
            }
            Some(&(s, d)) if s != *status || d != body_digest => {
                found.push(Violation::SecondAnswer {
                    client: op.client.clone(),
                    key: op.idempotency_key.clone(),
                    first: (s, d.to_owned()),
                    later: (*status, body_digest.clone()),
                });
            }
            Some(_) => {}
        }
    }
    let mut made: BTreeMap<&(String, String), Vec<Uuid>> = BTreeMap::new();
    for b in &end.bookings {
        if let Some(by) = &b.created_by {
            made.entry(by).or_default().push(b.id);
        }
    }
    for ((client, key), bookings) in made {
        if bookings.len() > 1 {
            found.push(Violation::DoubleCreate {
                client: client.clone(),
                key: key.clone(),
                bookings,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests;
