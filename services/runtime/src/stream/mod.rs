//! Appending outbox events to a Redis stream, shared by the services' relays.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// A stuck Redis must not hold a relay's outbox rows locked for long.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// One stream entry: field/value pairs in order.
pub type Entry = Vec<(&'static str, String)>;

/// `XADD`s entries to one stream. Connects on first use, so a service starts
/// (and keeps its outbox) while Redis is down; every step is bounded by
/// [`REDIS_TIMEOUT`].
pub struct StreamAppender {
    client: redis::Client,
    key: String,
    connection: Mutex<Option<ConnectionManager>>,
}

impl StreamAppender {
    pub fn new(client: redis::Client, key: String) -> Self {
        Self {
            client,
            key,
            connection: Mutex::new(None),
        }
    }

    /// Appends `entries` in order, in one pipeline; an error means some may
    /// have been appended (the relay then sends them again: at-least-once).
    pub async fn append(&self, entries: &[Entry]) -> Result<(), String> {
        let mut slot = self.connection.lock().await;
        let connection = match &mut *slot {
            Some(connection) => connection,
            None => {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT);
                let connecting = ConnectionManager::new_with_config(self.client.clone(), config);
                let connection = tokio::time::timeout(REDIS_TIMEOUT, connecting)
                    .await
                    .map_err(|_| "timed out connecting to Redis".to_owned())?
                    .map_err(|e| e.to_string())?;
                slot.insert(connection)
            }
        };
        let mut pipe = redis::pipe();
        for entry in entries {
            let command = pipe.cmd("XADD").arg(&self.key).arg("*");
            for (field, value) in entry {
                command.arg(*field).arg(value);
            }
            command.ignore();
        }
        tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(connection))
            .await
            .map_err(|_| "Redis did not answer in time".to_owned())?
            .map_err(|e| e.to_string())
    }
}

mod consumer;

pub use consumer::{GroupConsumer, Handled};
