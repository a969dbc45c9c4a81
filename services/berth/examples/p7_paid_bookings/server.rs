//! What the database shows of the paid round: when its bookings were paid,
//! and how long each took from Stripe's webhook to `paid`.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

/// The webhook that says an intent is authorised (and wakes its saga).
const AUTHORISED: &str = "payment_intent.amount_capturable_updated";

pub struct Database {
    conn: PgConnection,
}

impl Database {
    pub async fn connect(url: &str) -> Self {
        Self {
            conn: PgConnection::connect(url).await.unwrap(),
        }
    }

    /// Waits until `expected` payments are `paid` (up to `patience`);
    /// answers how many are.
    pub async fn wait_paid(&mut self, expected: i64, patience: Duration) -> i64 {
        let deadline = Instant::now() + patience;
        loop {
            let paid: i64 =
                sqlx::query_scalar("SELECT count(*) FROM payment.payments WHERE state = 'paid'")
                    .fetch_one(&mut self.conn)
                    .await
                    .unwrap();
            if paid >= expected || Instant::now() > deadline {
                return paid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// When the last payment created since `since_us` became `paid` (Unix µs).
    pub async fn last_paid_us(&mut self, since_us: i64) -> i64 {
        sqlx::query_scalar(
            "SELECT coalesce(max(s.at_us), 0) FROM payment.payment_steps s \
             JOIN payment.payments p ON p.id = s.payment_id \
             WHERE s.to_state = 'paid' AND p.created_us >= $1",
        )
        .bind(since_us)
        .fetch_one(&mut self.conn)
        .await
        .unwrap()
    }

    /// For each payment created since `since_us`: its intent, when the
    /// authorisation webhook was received and when it was paid (Unix µs).
    pub async fn timeline(&mut self, since_us: i64) -> Vec<(String, i64, i64)> {
        sqlx::query_as(
            "SELECT p.intent_id, min(e.received_us), min(s.at_us) FROM payment.payments p \
             JOIN payment.stripe_events e ON e.object_id = p.intent_id AND e.event_type = $2 \
             JOIN payment.payment_steps s ON s.payment_id = p.id AND s.to_state = 'paid' \
             WHERE p.created_us >= $1 GROUP BY p.intent_id",
        )
        .bind(since_us)
        .bind(AUTHORISED)
        .fetch_all(&mut self.conn)
        .await
        .unwrap()
    }

    /// Waits until `expected` webhooks of `event_type` were received (up
    /// to `patience`): the emulator sends them one at a time, and may still
    /// be catching up after a round.
    pub async fn wait_events(&mut self, event_type: &str, expected: i64, patience: Duration) {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let received: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM payment.stripe_events WHERE event_type = $1",
            )
            .bind(event_type)
            .fetch_one(&mut self.conn)
            .await
            .unwrap();
            if received >= expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Payments not `paid`, with their steps: what to look at when a saga
    /// got stuck.
    pub async fn unpaid(&mut self) -> Vec<String> {
        let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT p.id, p.booking_id, p.state, p.last_error FROM payment.payments p \
             WHERE p.state <> 'paid' ORDER BY p.created_us LIMIT 20",
        )
        .fetch_all(&mut self.conn)
        .await
        .unwrap();
        let mut out = Vec::new();
        for (id, booking, state, error) in rows {
            out.push(format!(
                "payment {id} (booking {booking}) {state}, last error {error:?}"
            ));
            let steps: Vec<(i64, String, String, String)> = sqlx::query_as(
                "SELECT at_us, from_state, to_state, note FROM payment.payment_steps \
                 WHERE payment_id = $1 ORDER BY version",
            )
            .bind(&id)
            .fetch_all(&mut self.conn)
            .await
            .unwrap();
            out.extend(steps.iter().map(|s| format!("    {s:?}")));
        }
        out
    }

    /// Webhook events received per type (all rounds).
    pub async fn events(&mut self) -> Vec<(String, i64)> {
        sqlx::query_as(
            "SELECT event_type, count(*) FROM payment.stripe_events GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&mut self.conn)
        .await
        .unwrap()
    }
}
