#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;
use crate::history::Claim;

const MIN: i64 = 60_000_000;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn span(from_min: i64, to_min: i64) -> Span {
    Span {
        start: from_min * MIN,
        end: to_min * MIN,
    }
}

fn told(booking: u128, status: &str, version: i64) -> Told {
    Told {
        id: id(booking),
        status: status.into(),
        version,
        span: span(0, 30),
    }
}

fn ok(client: &str, key: &str, request: Request, t: Told, digest: &str, at: i64) -> Op {
    Op {
        client: client.into(),
        idempotency_key: key.into(),
        request,
        invoked: at,
        completed: at + 1,
        outcome: Outcome::Ok {
            status: 201,
            body_digest: digest.into(),
            booking: t,
        },
    }
}

fn unknown(client: &str, key: &str, request: Request, at: i64) -> Op {
    Op {
        client: client.into(),
        idempotency_key: key.into(),
        request,
        invoked: at,
        completed: at + 1,
        outcome: Outcome::Unknown,
    }
}

fn hold() -> Request {
    Request::Hold {
        resource: id(100),
        span: span(0, 30),
        seats: 1,
    }
}

fn booking(n: u128, status: &str, version: i64, by: (&str, &str)) -> FinalBooking {
    FinalBooking {
        id: id(n),
        resource: id(100),
        span: span(0, 30),
        seats: 1,
        status: status.into(),
        version,
        priced: false,
        created_by: Some((by.0.into(), by.1.into())),
    }
}

/// Alice holds and confirms; Bob's hold of the same slot is refused.
fn valid_run() -> (Vec<Op>, Final) {
    let history = vec![
        ok("alice", "k1", hold(), told(1, "held", 1), "h1", 10),
        ok(
            "alice",
            "k2",
            Request::Confirm { booking: id(1) },
            told(1, "confirmed", 2),
            "c1",
            20,
        ),
        Op {
            client: "bob".into(),
            idempotency_key: "k1".into(),
            request: hold(),
            invoked: 15,
            completed: 16,
            outcome: Outcome::Refused { status: 409 },
        },
    ];
    let end = Final {
        bookings: vec![booking(1, "confirmed", 2, ("alice", "k1"))],
        claims: vec![Claim {
            resource: id(100),
            span: span(0, 30),
            seats: 1,
        }],
        capacity: BTreeMap::new(),
    };
    (history, end)
}

#[test]
fn a_valid_run_has_no_violations() {
    let (history, end) = valid_run();
    assert_eq!(check(&history, &end), vec![]);
}

#[test]
fn overlapping_claims_on_a_single_seat_resource_are_found() {
    let (history, mut end) = valid_run();
    end.claims.push(Claim {
        resource: id(100),
        span: span(29, 60),
        seats: 1,
    });
    // Touching is not overlapping.
    end.claims.push(Claim {
        resource: id(100),
        span: span(60, 90),
        seats: 1,
    });
    let found = check(&history, &end);
    assert_eq!(
        found,
        vec![Violation::Overbooked {
            resource: id(100),
            at: 29 * MIN,
            seats: 2,
            capacity: 1,
            source: "ledger",
        }]
    );
    // With three seats, the same claims fit.
    end.capacity.insert(id(100), 3);
    assert_eq!(check(&history, &end), vec![]);
}

#[test]
fn two_live_bookings_on_one_slot_are_found_even_if_the_ledger_is_fine() {
    let (history, mut end) = valid_run();
    end.bookings.push(booking(2, "held", 1, ("bob", "k9")));
    let found = check(&history, &end);
    assert!(found.contains(&Violation::Overbooked {
        resource: id(100),
        at: 0,
        seats: 2,
        capacity: 1,
        source: "bookings",
    }));
    // Bob's booking also has no request behind it.
    assert!(found.contains(&Violation::Phantom { booking: id(2) }));
}

#[test]
fn an_acknowledged_confirmation_that_is_gone_is_a_lost_write() {
    let (history, mut end) = valid_run();
    end.bookings[0].status = "held".into();
    end.bookings[0].version = 1;
    let found = check(&history, &end);
    assert!(
        matches!(&found[..], [Violation::LostWrite { booking, found: Some((s, 1)), .. }]
            if *booking == id(1) && s == "held"),
        "{found:?}"
    );
    end.bookings.clear();
    end.claims.clear();
    assert!(matches!(
        &check(&history, &end)[..],
        [Violation::LostWrite { found: None, .. }]
    ));
}

#[test]
fn a_change_nobody_asked_for_is_a_lost_write_unless_unanswered_or_automatic() {
    let (mut history, mut end) = valid_run();
    // Confirmed, then cancelled with no cancel in the history.
    end.bookings[0].status = "cancelled".into();
    end.bookings[0].version = 3;
    end.claims.clear();
    assert!(matches!(
        &check(&history, &end)[..],
        [Violation::LostWrite { .. }]
    ));
    // A cancel whose answer never came explains it.
    history.push(unknown(
        "alice",
        "k3",
        Request::Cancel { booking: id(1) },
        30,
    ));
    assert_eq!(check(&history, &end), vec![]);

    // A free hold lapses on its own; it is never confirmed on its own.
    let history = vec![ok("alice", "k1", hold(), told(1, "held", 1), "h1", 10)];
    let mut end = Final {
        bookings: vec![booking(1, "expired", 2, ("alice", "k1"))],
        ..Final::default()
    };
    assert_eq!(check(&history, &end), vec![]);
    end.bookings[0].status = "confirmed".into();
    assert!(matches!(
        &check(&history, &end)[..],
        [Violation::LostWrite { .. }, ..]
    ));
    // A priced one may be confirmed by its payment, even after lapsing.
    end.bookings[0].priced = true;
    let paid = vec![ok(
        "alice",
        "k1",
        hold(),
        told(1, "pending_payment", 1),
        "h1",
        10,
    )];
    assert!(
        !check(&paid, &end)
            .iter()
            .any(|v| matches!(v, Violation::LostWrite { .. })),
        "{:?}",
        check(&paid, &end)
    );
}

#[test]
fn a_booking_no_request_made_is_a_phantom() {
    let (history, mut end) = valid_run();
    end.bookings.push(FinalBooking {
        status: "cancelled".into(),
        created_by: None,
        ..booking(3, "cancelled", 2, ("x", "y"))
    });
    end.bookings
        .push(booking(4, "expired", 2, ("carol", "never-sent")));
    let found = check(&history, &end);
    assert_eq!(
        found,
        vec![
            Violation::Phantom { booking: id(3) },
            Violation::Phantom { booking: id(4) }
        ]
    );
}

#[test]
fn an_unanswered_hold_may_have_made_its_booking_but_only_one() {
    let history = vec![
        unknown("alice", "k1", hold(), 10),
        unknown("alice", "k1", hold(), 20),
    ];
    let mut end = Final {
        bookings: vec![booking(1, "expired", 2, ("alice", "k1"))],
        ..Final::default()
    };
    assert_eq!(check(&history, &end), vec![]);
    end.bookings.push(FinalBooking {
        span: span(60, 90),
        ..booking(2, "expired", 2, ("alice", "k1"))
    });
    assert_eq!(
        check(&history, &end),
        vec![Violation::DoubleCreate {
            client: "alice".into(),
            key: "k1".into(),
            bookings: vec![id(1), id(2)],
        }]
    );
}

#[test]
fn a_retry_answered_with_another_booking_or_body_is_caught() {
    let (mut history, end) = valid_run();
    // The same key replayed with the first answer: fine.
    history.push(ok("alice", "k1", hold(), told(1, "held", 1), "h1", 40));
    assert_eq!(check(&history, &end), vec![]);
    // Another body for the same key.
    history.push(ok(
        "alice",
        "k1",
        hold(),
        told(1, "held", 1),
        "h1-changed",
        50,
    ));
    assert!(matches!(
        &check(&history, &end)[..],
        [Violation::SecondAnswer { later: (201, d), .. }] if d == "h1-changed"
    ));
    // Another booking for the same key.
    let (mut history, end) = valid_run();
    history.push(ok("alice", "k1", hold(), told(7, "held", 1), "h7", 40));
    let found = check(&history, &end);
    assert!(
        found
            .iter()
            .any(|v| matches!(v, Violation::DoubleCreate { bookings, .. }
            if bookings.contains(&id(7)) && bookings.contains(&id(1)))),
        "{found:?}"
    );
}

#[test]
fn histories_round_trip_as_json_lines() {
    let (history, end) = valid_run();
    let lines: Vec<String> = history
        .iter()
        .map(|op| serde_json::to_string(op).unwrap())
        .collect();
    let back: Vec<Op> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, history);
    let end_back: Final = serde_json::from_str(&serde_json::to_string(&end).unwrap()).unwrap();
    assert_eq!(end_back, end);
}

proptest! {
    /// Claims laid end to end never overbook; shifting any one of them
    /// into its neighbour always does.
    #[test]
    fn the_sweep_agrees_with_a_direct_count(
        lengths in proptest::collection::vec(1i64..120, 1..40),
        overlap in proptest::option::of((0usize..40, 1i64..60)),
    ) {
        let mut at = 0;
        let mut claims: Vec<Claim> = lengths
            .iter()
            .map(|len| {
                let c = Claim { resource: id(100), span: span(at, at + len), seats: 1 };
                at += len;
                c
            })
            .collect();
        let end = Final { claims: claims.clone(), ..Final::default() };
        prop_assert!(overbooking(&end).is_empty());
        if let Some((i, by)) = overlap
            && i + 1 < claims.len()
        {
            let by = by.min(lengths[i]);
            claims[i + 1].span.start -= by * MIN;
            claims[i + 1].span.end -= by * MIN;
            let end = Final { claims, ..Final::default() };
            prop_assert_eq!(overbooking(&end).len(), 1);
        }
    }
}
