//! Ledger scenarios shared by the PostgreSQL, SQLite and gRPC tests: the
//! same guarantees must hold on every backend and over the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_availability::Availability;
use berth_ledger::{CancellationPolicy, ClaimReceipt, ClaimRequest, Ledger, LedgerError};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{Fixture, day_at};

pub fn request(resource: Uuid, ty: Uuid, start: DateTime<Utc>, owner: &str) -> ClaimRequest {
    ClaimRequest {
        resource_id: resource,
        appointment_type_id: ty,
        start,
        seats: 1,
        hold_for: None,
        owner: owner.to_owned(),
    }
}

fn minutes(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

#[track_caller]
fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, LedgerError>) {
    assert!(
        matches!(result, Err(LedgerError::SlotUnavailable(_))),
        "expected SlotUnavailable, got {result:?}"
    );
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, LedgerError>) {
    assert!(
        matches!(result, Err(LedgerError::Invalid(_))),
        "expected Invalid, got {result:?}"
    );
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, LedgerError>) {
    assert!(
        matches!(result, Err(LedgerError::NotFound(_))),
        "expected NotFound, got {result:?}"
    );
}

/// What [`race`] measured.
pub struct RaceReport {
    pub elapsed: Duration,
    pub winners: usize,
}

/// 64 concurrent claims (spread over `ledgers`, each task starting
/// `stagger * i` after the first) for a handful of slots:
/// - 10:00 and 10:30 of the capacity-1 type, 8 contenders each;
/// - 14:00 and 14:30 of the capacity-3 type, 8 contenders each;
/// - 12:00 contested by both types (8 each): whichever type wins, the other
///   gets nothing, since their slots overlap;
/// - 16:00 of the capacity-3 type, 16 contenders.
///
/// Exactly `capacity` claims win per slot, every loser gets
/// `SlotUnavailable`, and the ledger checker finds nothing.
pub async fn race(
    av: &Availability,
    ledgers: &[Arc<dyn Ledger>],
    fx: &Fixture,
    day: u64,
    stagger: Duration,
) -> RaceReport {
    let at = |h, m| day_at(day, h, m);
    let mut plan = Vec::new();
    for i in 0..16 {
        plan.push((fx.single, at(10, 30 * (i % 2))));
    }
    for i in 0..16 {
        plan.push((fx.group, at(14, 30 * (i % 2))));
    }
    for i in 0..16 {
        plan.push((if i % 2 == 0 { fx.single } else { fx.group }, at(12, 0)));
    }
    for _ in 0..16 {
        plan.push((fx.group, at(16, 0)));
    }
    assert_eq!(plan.len(), 64);

    let started = Instant::now();
    let tasks: Vec<_> = plan
        .iter()
        .enumerate()
        .map(|(i, &(ty, start))| {
            let ledger = ledgers[i % ledgers.len()].clone();
            // One racer per ledger at a time, so replicas still contend.
            let wave = u32::try_from(i / ledgers.len()).unwrap();
            let request = request(fx.resource, ty, start, &format!("racer-{i}"));
            tokio::spawn(async move {
                tokio::time::sleep(stagger * wave).await;
                ledger.claim(request).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();

    let mut won: BTreeMap<DateTime<Utc>, Vec<Uuid>> = BTreeMap::new();
    for ((ty, start), result) in plan.iter().zip(&results) {
        match result {
            Ok(receipt) => {
                assert_eq!(receipt.start, *start);
                assert_eq!(receipt.appointment_type_id, *ty);
                won.entry(*start).or_default().push(*ty);
            }
            Err(LedgerError::SlotUnavailable(_)) => {}
            Err(other) => panic!("a racer failed with {other:?} instead of SlotUnavailable"),
        }
    }
    let count = |h, m| won.get(&at(h, m)).map_or(0, Vec::len);
    assert_eq!(count(10, 0), 1, "capacity-1 slot 10:00");
    assert_eq!(count(10, 30), 1, "capacity-1 slot 10:30");
    assert_eq!(count(14, 0), 3, "capacity-3 slot 14:00");
    assert_eq!(count(14, 30), 3, "capacity-3 slot 14:30");
    assert_eq!(count(16, 0), 3, "capacity-3 slot 16:00");
    let noon = &won[&at(12, 0)];
    assert!(
        noon.iter().all(|t| *t == noon[0]),
        "two types share 12:00: {noon:?}"
    );
    let noon_capacity = if noon[0] == fx.single { 1 } else { 3 };
    assert_eq!(noon.len(), noon_capacity, "winners at 12:00");

    // The full slots are no longer offered.
    let slots = fx
        .api
        .slots(fx.resource, fx.group, at(0, 0), at(23, 59))
        .await;
    for (h, m) in [(14, 0), (14, 30), (16, 0)] {
        assert!(
            !slots.iter().any(|(s, _)| *s == at(h, m)),
            "{h}:{m:02} still offered"
        );
    }
    let overlaps = av.find_overlaps().await.unwrap();
    assert!(overlaps.is_empty(), "ledger unsound: {overlaps:#?}");
    RaceReport {
        elapsed,
        winners: results.iter().filter(|r| r.is_ok()).count(),
    }
}

/// Holds lapse by themselves: their capacity is free again without any
/// sweeper, and a late confirm says `HoldExpired`.
pub async fn hold_expiry(av: &Availability, ledger: &dyn Ledger, fx: &Fixture) {
    let start = day_at(3, 9, 0);
    let held = ledger
        .claim(ClaimRequest {
            hold_for: Some(Duration::from_millis(1500)),
            ..request(fx.resource, fx.single, start, "holder")
        })
        .await
        .unwrap();
    assert!(held.expires_at.is_some());
    assert_unavailable(
        ledger
            .claim(request(fx.resource, fx.single, start, "second"))
            .await,
    );
    let offered = |slots: &[(DateTime<Utc>, u64)]| slots.iter().any(|(s, _)| *s == start);
    assert!(!offered(
        &fx.api
            .slots(fx.resource, fx.single, start, start + minutes(30))
            .await
    ));

    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(
        offered(
            &fx.api
                .slots(fx.resource, fx.single, start, start + minutes(30))
                .await
        ),
        "an expired hold must free its slot"
    );
    let second = ledger
        .claim(request(fx.resource, fx.single, start, "second"))
        .await
        .unwrap();
    assert_eq!(
        ledger.confirm(held.claim_id).await,
        Err(LedgerError::HoldExpired)
    );
    assert_eq!(
        ledger.reschedule(held.claim_id, start + minutes(60)).await,
        Err(LedgerError::HoldExpired)
    );
    ledger.release(held.claim_id).await.unwrap();
    assert_eq!(
        ledger.confirm(second.claim_id).await.unwrap().expires_at,
        None
    );

    // Capacity 3: three short holds fill the slot, then lapse together.
    let group_start = day_at(3, 15, 0);
    let hold = |owner: &str| ClaimRequest {
        hold_for: Some(Duration::from_millis(1500)),
        ..request(fx.resource, fx.group, group_start, owner)
    };
    for owner in ["h1", "h2", "h3"] {
        ledger.claim(hold(owner)).await.unwrap();
    }
    assert_unavailable(ledger.claim(hold("h4")).await);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    for owner in ["n1", "n2", "n3"] {
        ledger
            .claim(request(fx.resource, fx.group, group_start, owner))
            .await
            .unwrap();
    }
    assert_unavailable(
        ledger
            .claim(request(fx.resource, fx.group, group_start, "n4"))
            .await,
    );

    // A hold confirmed in time stays.
    let kept = ledger
        .claim(ClaimRequest {
            hold_for: Some(Duration::from_secs(60)),
            ..request(fx.resource, fx.single, day_at(3, 11, 0), "keeper")
        })
        .await
        .unwrap();
    let confirmed = ledger.confirm(kept.claim_id).await.unwrap();
    assert_eq!(confirmed.expires_at, None);
    assert_eq!(confirmed.resource_owner, super::OWNER);
    assert_eq!(confirmed.claim_id, kept.claim_id);
    assert!(av.find_overlaps().await.unwrap().is_empty());
}

/// Reschedule is claim-new-then-release-old in one transaction.
pub async fn reschedule(av: &Availability, ledger: &dyn Ledger, fx: &Fixture) {
    let at = |h, m| day_at(4, h, m);
    let a = ledger
        .claim(request(fx.resource, fx.single, at(10, 0), "a"))
        .await
        .unwrap();
    ledger
        .claim(request(fx.resource, fx.single, at(11, 0), "b"))
        .await
        .unwrap();

    // New slot taken: nothing changes, the old slot stays held.
    assert_unavailable(ledger.reschedule(a.claim_id, at(11, 0)).await);
    assert_unavailable(
        ledger
            .claim(request(fx.resource, fx.single, at(10, 0), "x"))
            .await,
    );
    // Not a slot at all.
    assert_invalid(ledger.reschedule(a.claim_id, at(10, 7)).await);

    let moved = ledger.reschedule(a.claim_id, at(12, 0)).await.unwrap();
    assert_eq!(moved.claim_id, a.claim_id);
    assert_eq!((moved.start, moved.end), (at(12, 0), at(12, 30)));
    assert_eq!(moved.price_minor, a.price_minor);
    assert_eq!(moved.resource_owner, super::OWNER);
    ledger
        .claim(request(fx.resource, fx.single, at(10, 0), "c"))
        .await
        .unwrap();
    assert_unavailable(
        ledger
            .claim(request(fx.resource, fx.single, at(12, 0), "d"))
            .await,
    );
    // Moving to the same start is a no-op.
    assert_eq!(
        ledger.reschedule(a.claim_id, at(12, 0)).await.unwrap(),
        moved
    );

    // Seats: moving into a shared slot takes one of its seats.
    let g = ledger
        .claim(request(fx.resource, fx.group, at(14, 0), "g"))
        .await
        .unwrap();
    ledger
        .claim(request(fx.resource, fx.group, at(14, 30), "g1"))
        .await
        .unwrap();
    ledger
        .claim(request(fx.resource, fx.group, at(14, 30), "g2"))
        .await
        .unwrap();
    ledger.reschedule(g.claim_id, at(14, 30)).await.unwrap();
    assert_unavailable(
        ledger
            .claim(request(fx.resource, fx.group, at(14, 30), "g3"))
            .await,
    );
    assert_not_found(ledger.reschedule(Uuid::new_v4(), at(15, 0)).await);
    assert!(av.find_overlaps().await.unwrap().is_empty());
}

/// Release is idempotent; a released slot is free again.
pub async fn release(av: &Availability, ledger: &dyn Ledger, fx: &Fixture) {
    let start = day_at(5, 9, 30);
    let r = ledger
        .claim(request(fx.resource, fx.single, start, "r"))
        .await
        .unwrap();
    ledger.release(r.claim_id).await.unwrap();
    ledger.release(r.claim_id).await.unwrap();
    ledger.release(Uuid::new_v4()).await.unwrap();
    assert_not_found(ledger.confirm(r.claim_id).await);
    ledger
        .claim(request(fx.resource, fx.single, start, "s"))
        .await
        .unwrap();
    assert!(av.find_overlaps().await.unwrap().is_empty());
}

/// Claiming again with the same owner and slot returns the same receipt.
pub async fn claim_idempotent(ledger: &dyn Ledger, fx: &Fixture) -> ClaimReceipt {
    let start = day_at(6, 10, 0);
    let first = ledger
        .claim(request(fx.resource, fx.single, start, "o"))
        .await
        .unwrap();
    let again = ledger
        .claim(request(fx.resource, fx.single, start, "o"))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(
        first.resource_owner,
        super::OWNER,
        "receipts name the owner"
    );
    assert_eq!(first.price_minor, 2500);
    assert_eq!(first.currency, "EUR");

    let group = day_at(6, 14, 0);
    let two = ClaimRequest {
        seats: 2,
        ..request(fx.resource, fx.group, group, "p")
    };
    let g = ledger.claim(two.clone()).await.unwrap();
    assert_eq!(g.price_minor, 5000);
    assert_eq!(ledger.claim(two).await.unwrap(), g);
    // Same owner, same slot, different seats: a different request.
    assert_invalid(
        ledger
            .claim(request(fx.resource, fx.group, group, "p"))
            .await,
    );

    ledger.release(first.claim_id).await.unwrap();
    let fresh = ledger
        .claim(request(fx.resource, fx.single, start, "o"))
        .await
        .unwrap();
    assert_ne!(fresh.claim_id, first.claim_id);
    fresh
}

/// Every receipt carries the cancellation policy its claim was made under:
/// a later change of the appointment type does not reach existing claims
/// (repeat, confirm), while new claims, on either claim path, and
/// reschedules take the type's current policy.
pub async fn cancellation_policy(av: &Availability, ledger: &dyn Ledger, fx: &Fixture) {
    let policy = |hours: u64, percent: u8| {
        Some(CancellationPolicy {
            full_refund_notice: Duration::from_secs(hours * 3600),
            late_refund_percent: percent,
        })
    };
    let ty = fx
        .api
        .appointment_type(
            fx.resource,
            json!({"name": "refundable", "duration_minutes": 30, "horizon_minutes": 60 * 24 * 30,
                   "price_minor": 4000, "currency": "EUR",
                   "cancellation_policy": {"full_refund_notice_hours": 24, "late_refund_percent": 50}}),
        )
        .await;
    let set_policy = async |policy: serde_json::Value| {
        let r = fx
            .api
            .patch(
                &format!("/v1/appointment-types/{ty}"),
                json!({ "cancellation_policy": policy }),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let at = |h, m| day_at(11, h, m);
    let hold = |start, owner: &str| ClaimRequest {
        hold_for: Some(Duration::from_secs(600)),
        ..request(fx.resource, ty, start, owner)
    };
    let held = ledger.claim(hold(at(9, 0), "a")).await.unwrap();
    assert_eq!(held.cancellation_policy, policy(24, 50));
    let plain = ledger
        .claim(request(fx.resource, fx.single, at(15, 0), "p"))
        .await
        .unwrap();
    assert_eq!(plain.cancellation_policy, None, "a type without a policy");

    set_policy(json!({"full_refund_notice_hours": 2, "late_refund_percent": 100})).await;
    assert_eq!(
        ledger.claim(hold(at(9, 0), "a")).await.unwrap(),
        held,
        "a repeat gets the policy of claim time"
    );
    let confirmed = ledger.confirm(held.claim_id).await.unwrap();
    assert_eq!(confirmed.cancellation_policy, policy(24, 50));
    let fresh = ledger
        .claim(request(fx.resource, ty, at(10, 0), "b"))
        .await
        .unwrap();
    assert_eq!(fresh.cancellation_policy, policy(2, 100));
    // A lapsed hold in reach sends the next claim through the locked
    // transaction (on PostgreSQL; SQLite always takes it).
    ledger
        .claim(ClaimRequest {
            hold_for: Some(Duration::from_millis(300)),
            ..request(fx.resource, ty, at(11, 0), "lapsing")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let locked = ledger
        .claim(request(fx.resource, ty, at(11, 0), "c"))
        .await
        .unwrap();
    assert_eq!(locked.cancellation_policy, policy(2, 100));
    let moved = ledger.reschedule(held.claim_id, at(12, 0)).await.unwrap();
    assert_eq!(moved.cancellation_policy, policy(2, 100), "made anew");
    assert_eq!(moved.price_minor, held.price_minor, "the price stays");
    assert_eq!(
        ledger.confirm(held.claim_id).await.unwrap(),
        moved,
        "as stored"
    );

    set_policy(serde_json::Value::Null).await;
    let free = ledger
        .claim(request(fx.resource, ty, at(13, 0), "d"))
        .await
        .unwrap();
    assert_eq!(free.cancellation_policy, None, "cleared: a full refund");
    assert_eq!(
        ledger
            .confirm(fresh.claim_id)
            .await
            .unwrap()
            .cancellation_policy,
        policy(2, 100)
    );
    assert!(av.find_overlaps().await.unwrap().is_empty());
}

/// Claims that break the rules are refused and write nothing.
pub async fn invalid_claims(av: &Availability, ledger: &dyn Ledger, fx: &Fixture) {
    let before = av.table_counts().await.unwrap();
    let ok = day_at(7, 10, 0);
    let req = |ty, start| request(fx.resource, ty, start, "v");
    assert_invalid(
        ledger
            .claim(ClaimRequest {
                seats: 0,
                ..req(fx.single, ok)
            })
            .await,
    );
    assert_invalid(
        ledger
            .claim(ClaimRequest {
                seats: 2,
                ..req(fx.single, ok)
            })
            .await,
    );
    assert_invalid(
        ledger
            .claim(ClaimRequest {
                owner: String::new(),
                ..req(fx.single, ok)
            })
            .await,
    );
    assert_invalid(
        ledger
            .claim(ClaimRequest {
                owner: "a\0b".into(),
                ..req(fx.single, ok)
            })
            .await,
    );
    assert_invalid(
        ledger
            .claim(ClaimRequest {
                hold_for: Some(Duration::ZERO),
                ..req(fx.single, ok)
            })
            .await,
    );
    assert_invalid(ledger.claim(req(fx.single, day_at(7, 10, 10))).await); // off the grid
    assert_invalid(
        ledger
            .claim(req(fx.single, day_at(0, 0, 0) - minutes(60)))
            .await,
    ); // past
    assert_invalid(ledger.claim(req(fx.single, day_at(45, 10, 0))).await); // beyond the horizon
    assert_not_found(
        ledger
            .claim(request(Uuid::new_v4(), fx.single, ok, "v"))
            .await,
    );
    assert_not_found(ledger.claim(req(Uuid::new_v4(), ok)).await);
    let other = fx.api.resource("Other", "UTC").await;
    let foreign = fx
        .api
        .appointment_type(
            other,
            json!({"name": "x", "duration_minutes": 30, "currency": "EUR"}),
        )
        .await;
    assert_not_found(ledger.claim(req(foreign, ok)).await);

    // A closed date override removes the day's slots.
    let closed = day_at(8, 10, 0);
    let r = fx
        .api
        .put(
            &format!("/v1/resources/{}/overrides", fx.resource),
            json!({"date": closed.date_naive(), "hours": {"kind": "closed"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let before_claims = av.table_counts().await.unwrap();
    assert_invalid(ledger.claim(req(fx.single, closed)).await);
    assert_eq!(av.table_counts().await.unwrap()["claims"], before["claims"]);
    assert_eq!(av.table_counts().await.unwrap(), before_claims);
}

/// Buffers are enforced by the ledger, not only by the slot listing.
pub async fn buffers(ledger: &dyn Ledger, fx: &Fixture) {
    let consult = fx
        .api
        .appointment_type(
            fx.resource,
            json!({"name": "consult", "duration_minutes": 60, "buffer_after_minutes": 30,
                   "horizon_minutes": 60 * 24 * 30, "currency": "EUR"}),
        )
        .await;
    let at = |h, m| day_at(9, h, m);
    ledger
        .claim(request(fx.resource, consult, at(10, 0), "c"))
        .await
        .unwrap();
    // 11:00 is inside consult's after-buffer; 11:30 is free.
    assert_unavailable(
        ledger
            .claim(request(fx.resource, fx.single, at(11, 0), "s"))
            .await,
    );
    ledger
        .claim(request(fx.resource, fx.single, at(11, 30), "s"))
        .await
        .unwrap();
    // A consult at 11:00 would overlap the 11:30 booking itself.
    assert_unavailable(
        ledger
            .claim(request(fx.resource, consult, at(11, 0), "c2"))
            .await,
    );
}

/// SQL that copies claim `$1` into a new block `$2` at `[$3, $4)`, for a
/// test writing behind the ledger's back; `tables` prefixes the table names
/// (a schema on PostgreSQL).
pub fn copy_into_block_sql(tables: &str) -> String {
    format!(
        "INSERT INTO {tables}blocks (id, resource_id, appointment_type_id, starts_at, ends_at, capacity) \
         SELECT $2, resource_id, appointment_type_id, $3, $4, 1 FROM {tables}claims WHERE id = $1"
    )
}

/// SQL that copies claim `$1` as claim `$5` into block `$2` at `[$3, $4)`.
pub fn copy_claim_sql(tables: &str) -> String {
    format!(
        "INSERT INTO {tables}claims (id, block_id, resource_id, appointment_type_id, starts_at, ends_at, seats, \
           buffer_before_minutes, buffer_after_minutes, price_minor, currency, owner, expires_at, created_at) \
         SELECT $5, $2, resource_id, appointment_type_id, $3, $4, seats, buffer_before_minutes, \
           buffer_after_minutes, price_minor, currency, owner, expires_at, created_at \
         FROM {tables}claims WHERE id = $1"
    )
}

/// The ledger checker on a sound ledger with touching slots and one shared
/// group slot (nothing to report), then after rows are written behind the
/// ledger's back: `corrupt(template, start, end)` removes the overlap
/// guard, copies the template claim into a new block at `[start, end)` and
/// returns the new claim's id. The checker must name exactly the pairs that
/// overlap, each once: a claim across three touching slots, a long one over
/// a later slot, and a short one that touches that slot but lies inside the
/// long one.
pub async fn checker_names_overlaps<F>(av: &Availability, fx: &Fixture, corrupt: F)
where
    F: AsyncFn(Uuid, DateTime<Utc>, DateTime<Utc>) -> Uuid,
{
    let at = |h, m| day_at(4, h, m);
    let mut booked = BTreeMap::new();
    for (h, m) in [(10, 0), (10, 30), (11, 0), (13, 0)] {
        let receipt = av
            .claim(request(fx.resource, fx.single, at(h, m), "checked"))
            .await
            .unwrap();
        booked.insert((h, m), receipt.claim_id);
    }
    for seat in 0..3 {
        av.claim(request(
            fx.resource,
            fx.group,
            at(15, 0),
            &format!("seat-{seat}"),
        ))
        .await
        .unwrap();
    }
    let sound = av.find_overlaps().await.unwrap();
    assert!(sound.is_empty(), "sound ledger reported: {sound:#?}");

    let template = booked[&(10, 0)];
    let across = corrupt(template, at(10, 15), at(11, 15)).await;
    let long = corrupt(template, at(12, 0), at(14, 0)).await;
    let inside = corrupt(template, at(13, 30), at(13, 45)).await;

    let mut expected: Vec<(Uuid, Uuid)> = vec![
        (across, booked[&(10, 0)]),
        (across, booked[&(10, 30)]),
        (across, booked[&(11, 0)]),
        (long, booked[&(13, 0)]),
        (long, inside),
    ];
    for pair in &mut expected {
        *pair = (pair.0.min(pair.1), pair.0.max(pair.1));
    }
    expected.sort();
    let found = av.find_overlaps().await.unwrap();
    let mut claim_pairs = Vec::new();
    let mut block_pairs = 0;
    for problem in &found {
        if let Some(rest) = problem.split_once(": live claims ").map(|(_, r)| r) {
            let ids: Vec<Uuid> = rest
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            assert_eq!(ids.len(), 2, "{problem}");
            claim_pairs.push((ids[0], ids[1]));
        } else if problem.starts_with("blocks ") && problem.ends_with(" overlap") {
            block_pairs += 1;
        } else {
            panic!("unexpected problem: {problem}");
        }
    }
    claim_pairs.sort();
    assert_eq!(claim_pairs, expected, "claim pairs: {found:#?}");
    assert_eq!(block_pairs, expected.len(), "block pairs: {found:#?}");
}
