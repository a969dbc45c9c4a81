//! Booking and payment events from their Redis streams, each in its own
//! consumer group (`notification.bookings` on `berth:events`,
//! `notification.payments` on `berth:payments`) through the runtime's
//! `GroupConsumer`: acknowledged once recorded, retried while the database
//! or availability is down, taken over from a replica that died. Under
//! `berth dev` there is no Redis: `berth dev` forwards events in process.

use std::time::Duration;

use berth_runtime::stream::{GroupConsumer, Handled};
use redis::streams::StreamId;
use tokio_util::sync::CancellationToken;

use crate::Notifications;
use crate::intake::{BOOKINGS, PAYMENTS};

const CLAIM_IDLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Source {
    Bookings,
    Payments,
}

/// Consumes both streams until `stop`; nothing without Redis.
pub(crate) fn spawn_consumers(notifications: &Notifications, stop: CancellationToken) {
    let Some(client) = notifications.inner.redis.clone() else {
        return;
    };
    let config = &notifications.inner.config;
    for (stream, group, source) in [
        (&config.booking_stream_key, BOOKINGS, Source::Bookings),
        (&config.payment_stream_key, PAYMENTS, Source::Payments),
    ] {
        let notifications = notifications.clone();
        GroupConsumer::new(
            client.clone(),
            stream.clone(),
            group,
            CLAIM_IDLE,
            move |entry: StreamId| {
                let notifications = notifications.clone();
                async move {
                    let Some(json) = entry.get::<String>("event") else {
                        return Handled::Done;
                    };
                    let handled = match source {
                        Source::Bookings => notifications.handle_booking_event(&json).await,
                        Source::Payments => notifications.handle_payment_event(&json).await,
                    };
                    match handled {
                        Ok(()) => Handled::Done,
                        Err(error) => Handled::Retry(format!("{}: {error}", entry.id)),
                    }
                }
            },
        )
        .spawn(stop.clone());
    }
}
