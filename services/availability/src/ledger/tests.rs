//! The group commit of [`Availability::claim`] against PostgreSQL (needs
//! the stack: `scripts/stack up && eval "$(scripts/stack env)"`).

use berth_slots::{LocalInterval, OverrideHours, WeeklyHours};
use chrono::{DurationRound, Weekday};
use sqlx::types::Json;

use super::*;
use crate::store::{SlotKey, TypeRow};
use crate::test_db as db;

struct Scratch {
    av: Availability,
    db: db::TestDb,
}

impl Scratch {
    async fn new() -> Scratch {
        let db = db::TestDb::create("ledger_unit").await;
        Scratch {
            av: Availability::connect(&db.url, None).await.unwrap(),
            db,
        }
    }

    async fn drop_db(self) {
        let Scratch { av, db } = self;
        drop(av);
        db.drop_now().await;
    }

    /// A resource open around the clock with a 30-minute type of `capacity` seats.
    async fn resource(&self, capacity: i64) -> (Uuid, Uuid) {
        let now = now();
        let day = [LocalInterval::parse("00:00", "24:00").unwrap()];
        let all = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ];
        let resource = ResourceRow {
            id: Uuid::now_v7(),
            name: "room".into(),
            time_zone: "UTC".into(),
            owner_id: "staff-1".into(),
            weekly: Json(WeeklyHours::on_days(&all, &day)),
            created_at: now,
            updated_at: now,
        };
        let ty = TypeRow {
            id: Uuid::now_v7(),
            resource_id: resource.id,
            name: "s".into(),
            duration_minutes: 30,
            interval_minutes: 30,
            buffer_before_minutes: 0,
            buffer_after_minutes: 0,
            min_notice_minutes: 0,
            horizon_minutes: 60 * 24 * 30,
            capacity,
            price_minor: 0,
            currency: "EUR".into(),
            full_refund_notice_hours: None,
            late_refund_percent: None,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.av.inner.store.write().await.unwrap();
        tx.insert_resource(&resource).await.unwrap();
        tx.insert_type(&ty).await.unwrap();
        tx.commit().await.unwrap();
        (resource.id, ty.id)
    }

    /// The views a batch of `reqs` would be decided on, read now.
    async fn views(&self, reqs: &[ClaimRequest]) -> Vec<Option<SlotView>> {
        let slots: Vec<SlotKey> = reqs
            .iter()
            .map(|r| (r.resource_id, r.appointment_type_id, r.start))
            .collect();
        self.av
            .inner
            .store
            .peek_slots(&slots, REACH, now())
            .await
            .unwrap()
            .unwrap()
    }

    /// Locks the resource's row in a transaction, as every ledger write does.
    async fn locked(&self, resource: Uuid) -> Tx {
        let mut tx = self.av.inner.store.write().await.unwrap();
        assert_eq!(
            tx.lock_resource(resource, None).await.unwrap(),
            RowLock::Locked
        );
        tx
    }

    async fn sound(&self) {
        assert_eq!(self.av.find_overlaps().await.unwrap(), Vec::<String>::new());
    }
}

fn tomorrow() -> DateTime<Utc> {
    (now() + TimeDelta::days(1))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap()
}

fn claim(resource: Uuid, ty: Uuid, start: DateTime<Utc>, owner: &str) -> ClaimRequest {
    ClaimRequest {
        resource_id: resource,
        appointment_type_id: ty,
        start,
        seats: 1,
        hold_for: Some(Duration::from_secs(600)),
        owner: owner.to_owned(),
    }
}

fn taken(outcome: &Result<ClaimReceipt, LedgerError>) -> bool {
    matches!(outcome, Err(LedgerError::SlotUnavailable(_)))
}

#[tokio::test]
async fn a_batch_decides_claims_on_one_resource_together() {
    let db = Scratch::new().await;
    let (single, single_ty) = db.resource(1).await;
    let (seats, seats_ty) = db.resource(2).await;
    let start = tomorrow();
    let later = start + TimeDelta::hours(1);
    let batch = vec![
        claim(single, single_ty, start, "a"),
        claim(seats, seats_ty, start, "b"),
        claim(single, single_ty, start, "c"),
        claim(seats, seats_ty, start, "d"),
        claim(single, single_ty, later, "e"),
        claim(seats, seats_ty, start, "f"),
    ];
    let outcomes = db.av.claim_batch(batch).await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_ok(), "{:?}", outcomes[1]);
    assert!(taken(&outcomes[2]), "capacity 1: {:?}", outcomes[2]);
    assert!(outcomes[3].is_ok(), "second seat: {:?}", outcomes[3]);
    assert!(outcomes[4].is_ok(), "{:?}", outcomes[4]);
    assert!(taken(&outcomes[5]), "capacity 2: {:?}", outcomes[5]);
    // The two seats share one block.
    let block = |o: &Result<ClaimReceipt, LedgerError>| o.as_ref().unwrap().claim_id;
    let mut tx = db.av.inner.store.read().await.unwrap();
    let b1 = tx.get_claim(block(&outcomes[1])).await.unwrap().unwrap();
    let b3 = tx.get_claim(block(&outcomes[3])).await.unwrap().unwrap();
    assert_eq!(b1.block_id, b3.block_id);
    drop(tx);
    db.sound().await;

    // Already taken when read: refused on the snapshot, and a repeat of a
    // claim by its owner gets its receipt back (through the locked path).
    let again = db
        .av
        .claim_batch(vec![
            claim(single, single_ty, start, "g"),
            claim(single, single_ty, start, "a"),
        ])
        .await;
    assert!(taken(&again[0]), "{:?}", again[0]);
    assert_eq!(again[1].as_ref().unwrap(), outcomes[0].as_ref().unwrap());
    db.sound().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_resource_changed_after_the_read_takes_the_locked_path() {
    let db = Scratch::new().await;
    let (stale, stale_ty) = db.resource(1).await;
    let (fresh, fresh_ty) = db.resource(1).await;
    let start = tomorrow();
    let later = start + TimeDelta::hours(1);
    let batch = vec![
        claim(stale, stale_ty, start, "a"),
        claim(stale, stale_ty, later, "b"),
        claim(stale, stale_ty, later, "c"),
        claim(fresh, fresh_ty, start, "d"),
    ];
    let views = db.views(&batch).await;
    // Someone else takes `start` on the first resource after the read.
    db.av
        .claim_locked(&claim(stale, stale_ty, start, "x"))
        .await
        .unwrap();
    let outcomes = db.av.claim_on_views(batch, views, now()).await;
    // The stale snapshot wrote nothing for its resource; the locked path
    // decided its claims on what is committed.
    assert!(taken(&outcomes[0]), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_ok(), "{:?}", outcomes[1]);
    assert!(taken(&outcomes[2]), "{:?}", outcomes[2]);
    assert!(outcomes[3].is_ok(), "{:?}", outcomes[3]);
    db.sound().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_guarded_write_waits_for_a_held_lock_and_ignores_a_rolled_back_one() {
    let db = Scratch::new().await;
    let (resource, ty) = db.resource(1).await;
    let start = tomorrow();

    // A transaction holding the row lock: the write waits for it, then
    // sees the raised counter and leaves the claim to the locked path.
    let batch = vec![claim(resource, ty, start, "a")];
    let views = db.views(&batch).await;
    let tx = db.locked(resource).await;
    let pending = {
        let av = db.av.clone();
        tokio::spawn(async move { av.claim_on_views(batch, views, now()).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "must wait for the row lock");
    tx.commit().await.unwrap();
    let outcome = pending.await.unwrap().remove(0);
    assert!(outcome.is_ok(), "the locked path books it: {outcome:?}");

    // A lock that was rolled back changed nothing: the snapshot stays good
    // and is written as decided (the same ledger_seq as when read).
    let later = start + TimeDelta::hours(1);
    let batch = vec![claim(resource, ty, later, "b")];
    let views = db.views(&batch).await;
    let seq = views[0].as_ref().unwrap().counters.ledger;
    drop(db.locked(resource).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let outcome = db.av.claim_on_views(batch, views, now()).await.remove(0);
    assert!(outcome.is_ok(), "{outcome:?}");
    let after = db.views(&[claim(resource, ty, later, "c")]).await;
    assert_eq!(
        after[0].as_ref().unwrap().counters.ledger,
        seq + 1,
        "one guarded write"
    );
    db.sound().await;
    db.drop_db().await;
}

/// Another replica on the same database (its own batches and known views).
async fn replica(db: &Scratch) -> Availability {
    Availability::connect(&db.db.url, None).await.unwrap()
}

#[tokio::test]
async fn later_claims_are_decided_on_what_the_replica_already_knows() {
    let db = Scratch::new().await;
    let (resource, ty) = db.resource(1).await;
    let start = tomorrow();
    let known = &db.av.inner.known_ledgers;
    let first = claim(resource, ty, start, "a");
    assert!(known.view(&first, now()).is_none(), "nothing known yet");
    db.av.claim(first).await.unwrap();

    // The read and the write taught the replica the ledger as it now is.
    let next = claim(resource, ty, start + TimeDelta::minutes(30), "b");
    let seq = |view: &SlotView| (view.counters, view.claims.len());
    let fresh = db
        .views(std::slice::from_ref(&next))
        .await
        .remove(0)
        .unwrap();
    let remembered = known.view(&next, now()).unwrap();
    assert_eq!(seq(&remembered), seq(&fresh));
    db.av.claim(next).await.unwrap();
    // The taken slot is refused on it, and the guard confirms the refusal.
    let again = claim(resource, ty, start, "c");
    assert!(known.view(&again, now()).is_some());
    assert!(taken(&db.av.claim(again).await));
    db.sound().await;
    db.drop_db().await;
}

#[tokio::test]
async fn this_replicas_own_locked_changes_are_read_afresh_once() {
    let db = Scratch::new().await;
    let (resource, ty) = db.resource(1).await;
    let start = tomorrow();
    let known = &db.av.inner.known_ledgers;
    let held = db.av.claim(claim(resource, ty, start, "a")).await.unwrap();
    db.av.confirm(held.claim_id).await.unwrap();
    let next = claim(resource, ty, start + TimeDelta::minutes(30), "b");
    assert!(known.view(&next, now()).is_none(), "the confirm dropped it");
    db.av.claim(next).await.unwrap();
    // Read once and learnt again: not treated as someone else's change.
    let after = claim(resource, ty, start + TimeDelta::hours(1), "c");
    assert!(known.view(&after, now()).is_some());
    db.sound().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_slot_freed_by_another_replica_is_not_refused_on_what_was_known() {
    let db = Scratch::new().await;
    let (resource, ty) = db.resource(1).await;
    let other = replica(&db).await;
    let start = tomorrow();
    let held = db.av.claim(claim(resource, ty, start, "a")).await.unwrap();
    let retry = claim(resource, ty, start, "c");
    assert!(db.av.inner.known_ledgers.view(&retry, now()).is_some());

    other.release(held.claim_id).await.unwrap();
    let outcome = db.av.claim(retry).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    // Changed by someone else: read afresh for a while, not learnt again.
    let next = claim(resource, ty, start + TimeDelta::minutes(30), "d");
    assert!(db.av.inner.known_ledgers.view(&next, now()).is_none());
    db.av.claim(next).await.unwrap();
    db.sound().await;
    drop(other);
    db.drop_db().await;
}

#[tokio::test]
async fn a_slot_taken_by_another_replica_is_not_booked_twice() {
    let db = Scratch::new().await;
    let (resource, ty) = db.resource(1).await;
    let other = replica(&db).await;
    let start = tomorrow();
    db.av.claim(claim(resource, ty, start, "a")).await.unwrap();
    let late = claim(resource, ty, start + TimeDelta::minutes(30), "b");
    assert!(db.av.inner.known_ledgers.view(&late, now()).is_some());

    other
        .claim(claim(resource, ty, late.start, "x"))
        .await
        .unwrap();
    let outcome = db.av.claim(late).await;
    assert!(taken(&outcome), "{outcome:?}");
    db.sound().await;
    drop(other);
    db.drop_db().await;
}

#[tokio::test]
async fn a_day_closed_elsewhere_is_not_booked_on_known_hours() {
    let db = Scratch::new().await;
    let (resource, ty) = db.resource(1).await;
    let start = tomorrow();
    db.av.claim(claim(resource, ty, start, "a")).await.unwrap();
    let later = claim(resource, ty, start + TimeDelta::hours(1), "b");
    assert!(db.av.inner.known_ledgers.view(&later, now()).is_some());

    let other = replica(&db).await;
    let mut tx = other.inner.store.write().await.unwrap();
    tx.put_override(resource, later.start.date_naive(), &OverrideHours::Closed)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let outcome = db.av.claim(later).await;
    assert!(
        matches!(outcome, Err(LedgerError::Invalid(_))),
        "{outcome:?}"
    );
    db.sound().await;
    drop(other);
    db.drop_db().await;
}

#[tokio::test]
async fn replicas_racing_on_known_ledgers_never_overbook_or_refuse_wrongly() {
    use rand::{Rng, SeedableRng};
    let db = Scratch::new().await;
    let one = db.resource(1).await;
    let three = db.resource(3).await;
    let other = replica(&db).await;
    let replicas = [db.av.clone(), other.clone()];
    let start = tomorrow();
    let slot = move |i: i64| start + TimeDelta::minutes(30 * i);
    // Eight clients over two replicas claim and release at random.
    let clients = (0..8u64).map(|c| {
        let av = replicas[usize::from(c % 2 == 1)].clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c);
            let mut held = Vec::new();
            for n in 0..25 {
                if !held.is_empty() && rng.random_bool(0.3) {
                    let i = rng.random_range(0..held.len());
                    av.release(held.swap_remove(i)).await.unwrap();
                    continue;
                }
                let (resource, ty) = if rng.random_bool(0.5) { one } else { three };
                let req = claim(
                    resource,
                    ty,
                    slot(rng.random_range(0..6)),
                    &format!("{c}-{n}"),
                );
                match av.claim(req).await {
                    Ok(receipt) => held.push(receipt.claim_id),
                    Err(LedgerError::SlotUnavailable(_)) => {}
                    Err(error) => panic!("{error:?}"),
                }
            }
        })
    });
    for client in futures::future::join_all(clients).await {
        client.unwrap();
    }
    db.sound().await;

    // Each replica now answers every single-seat slot as the database says.
    for (r, av) in replicas.iter().enumerate() {
        for i in 0..6 {
            let req = claim(one.0, one.1, slot(i), &format!("check-{r}-{i}"));
            let fresh = db
                .views(std::slice::from_ref(&req))
                .await
                .remove(0)
                .unwrap();
            let free = !fresh.claims.iter().any(|c| c.starts_at == req.start);
            let outcome = av.claim(req).await;
            assert_eq!(outcome.is_ok(), free, "replica {r}, slot {i}: {outcome:?}");
        }
    }
    db.sound().await;
    drop(other);
    db.drop_db().await;
}

#[tokio::test]
async fn both_claim_paths_snapshot_the_cancellation_policy() {
    let db = Scratch::new().await;
    let (resource, ty) = db.resource(1).await;
    let set_policy = async |policy: Option<(i64, i64)>| {
        let mut tx = db.av.inner.store.write().await.unwrap();
        let mut row = tx.get_type(ty).await.unwrap().unwrap();
        row.full_refund_notice_hours = policy.map(|p| p.0);
        row.late_refund_percent = policy.map(|p| p.1);
        tx.update_type(&row).await.unwrap();
        tx.commit().await.unwrap();
    };
    let day = Some(CancellationPolicy {
        full_refund_notice: Duration::from_secs(24 * 3600),
        late_refund_percent: 50,
    });
    set_policy(Some((24, 50))).await;
    let start = tomorrow();
    let at = |n: i64| start + TimeDelta::minutes(30 * n);
    let known = &db.av.inner.known_ledgers;

    let batched = db
        .av
        .claim_batch(vec![claim(resource, ty, at(0), "a")])
        .await;
    let batched = batched[0].as_ref().unwrap();
    assert_eq!(batched.cancellation_policy, day, "read afresh");
    let next = claim(resource, ty, at(1), "b");
    assert!(known.view(&next, now()).is_some());
    let on_known = db.av.claim_batch(vec![next]).await.remove(0).unwrap();
    assert_eq!(on_known.cancellation_policy, day, "decided on a known view");
    let locked = db
        .av
        .claim_locked(&claim(resource, ty, at(2), "c"))
        .await
        .unwrap();
    assert_eq!(locked.cancellation_policy, day);
    let mut tx = db.av.inner.store.read().await.unwrap();
    let row = tx.get_claim(batched.claim_id).await.unwrap().unwrap();
    assert_eq!(
        (row.full_refund_notice_hours, row.late_refund_percent),
        (Some(24), Some(50))
    );
    drop(tx);

    // The type loses its policy; the claims keep theirs, new ones have none.
    set_policy(None).await;
    let repeat = db
        .av
        .claim_locked(&claim(resource, ty, at(0), "a"))
        .await
        .unwrap();
    assert_eq!(&repeat, batched);
    assert_eq!(
        db.av
            .confirm(locked.claim_id)
            .await
            .unwrap()
            .cancellation_policy,
        day
    );
    let batched = db
        .av
        .claim_batch(vec![claim(resource, ty, at(3), "d")])
        .await;
    assert_eq!(batched[0].as_ref().unwrap().cancellation_policy, None);
    let locked = db
        .av
        .claim_locked(&claim(resource, ty, at(4), "e"))
        .await
        .unwrap();
    assert_eq!(locked.cancellation_policy, None);
    db.sound().await;
    db.drop_db().await;
}
