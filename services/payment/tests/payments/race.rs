//! Many customers racing for few priced slots, with holds lapsing while
//! they pay; and two payment replicas on the same events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::common::{ALICE, Env, Options, PRICE};

#[tokio::test]
async fn racing_customers_pay_for_each_slot_once_and_every_loser_gets_their_money_back() {
    let env = Arc::new(
        Env::start(Options {
            hold_for: Duration::from_millis(700),
            ..Options::default()
        })
        .await,
    );
    const CLIENTS: usize = 64;
    const SLOTS: i64 = 4;
    let gate = Arc::new(Semaphore::new(CLIENTS));
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let env = env.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let customer = env.customer(&format!("racer-{n}"));
            let start = Env::slot(7, 10 + (n as i64 % SLOTS));
            // Keep trying for the slot while others hold it.
            for _ in 0..200 {
                let (status, booking) = customer.book(env.paid_type, &start).await;
                if status != 201 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let (status, payment) = customer
                    .start_payment(booking["id"].as_str().unwrap())
                    .await;
                if status != 201 {
                    return;
                }
                // Paying takes a while: the hold may lapse meanwhile and
                // someone else may take the time.
                tokio::time::sleep(Duration::from_millis(300 + (n as u64 * 37) % 900)).await;
                env.pay(&payment, "pm_card_visa").await;
                return;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let alice = env.customer(ALICE);
    // Let every saga finish and lapsed holds expire.
    env.eventually(60, "every payment ends", || async {
        env.sql_count(
            "SELECT count(*) FROM payment.payments WHERE state NOT IN ('paid', 'failed', 'refunded', 'awaiting_payment')",
        )
        .await
            == 0
    })
    .await;
    drop(alice);
    let paid = env
        .sql_count("SELECT count(*) FROM payment.payments WHERE state = 'paid'")
        .await;
    let confirmed = env
        .sql_count("SELECT count(*) FROM booking.bookings WHERE status = 'confirmed'")
        .await;
    assert_eq!(paid, SLOTS, "exactly one paid confirmation per slot");
    assert_eq!(confirmed, SLOTS);
    let state = env.control.state().await.unwrap();
    let captured: Vec<_> = state
        .payment_intents
        .iter()
        .filter(|i| i.amount_received > 0)
        .collect();
    assert_eq!(captured.len() as i64, SLOTS);
    assert!(captured.iter().all(|i| i.amount_received == PRICE));
    assert!(
        state
            .payment_intents
            .iter()
            .all(|i| i.status != "requires_capture"),
        "every loser's authorisation is cancelled"
    );
    assert!(
        env.money_findings()
            .await
            .iter()
            .all(|f| f.contains("still awaiting")),
        "{:?}",
        env.money_findings().await
    );
    // And the ledger agrees (`berth check-ledger`).
    let overlaps = env.availability.find_overlaps().await.unwrap();
    assert!(overlaps.is_empty(), "{overlaps:?}");
    Arc::try_unwrap(env).ok().unwrap().finish().await;
}

#[tokio::test]
async fn two_replicas_on_the_same_events_confirm_and_capture_once() {
    let env = Env::start(Options {
        replicas: 2,
        ..Options::default()
    })
    .await;
    let alice = env.customer(ALICE).on(1);
    for n in 0..6 {
        let (booking, payment) = alice.book_and_start_paying(&Env::slot(8, 10 + n)).await;
        env.pay(&payment, "pm_card_visa").await;
        alice
            .wait_for_booking(booking["id"].as_str().unwrap(), "confirmed")
            .await;
    }
    // Both replicas received every webhook.
    let deliveries = env.control.deliveries().await.unwrap();
    for base in &env.bases {
        assert!(
            deliveries
                .iter()
                .any(|d| d.endpoint_url.starts_with(base.as_str()))
        );
    }
    assert_eq!(
        env.sql_count("SELECT count(*) FROM booking.outbox WHERE event_type = 'booking.paid'")
            .await,
        6
    );
    assert_eq!(
        env.sql_count(
            "SELECT count(*) FROM payment.outbox WHERE event_type = 'payment.authorised'"
        )
        .await,
        6
    );
    let state = env.control.state().await.unwrap();
    assert!(
        state
            .payment_intents
            .iter()
            .all(|i| i.amount_received == PRICE)
    );
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}
