//! Webhook endpoints and deliveries: the same `sqlx::Any` queries on both
//! backends. Each change is one statement touching only its own columns,
//! so a rotation and an edit racing each other both land.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use super::{Result, Store, decode, micros, time, uuid};
use crate::webhooks::{DISABLED, ENABLED, Endpoint, NewWebhook, WebhookDelivery};

const ENDPOINT_COLUMNS: &str = "id, owner_id, scope, url, description, event_types, status, \
    disabled_reason, secret, previous_secret, previous_secret_expires_us, created_us, updated_us";

const WEBHOOK_COLUMNS: &str = "id, endpoint_id, event_id, event_type, booking_id, payload, \
    status, attempts, retry_from, due_us, last_status, last_error, created_us, sent_us";

fn endpoint(row: &AnyRow) -> std::result::Result<Endpoint, sqlx::Error> {
    let types: String = row.try_get("event_types")?;
    Ok(Endpoint {
        id: uuid(row, "id")?,
        owner_id: row.try_get("owner_id")?,
        scope: row.try_get("scope")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        event_types: serde_json::from_str(&types).map_err(|e| decode("event_types", e))?,
        status: row.try_get("status")?,
        disabled_reason: row.try_get("disabled_reason")?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_secret_expires_at: row
            .try_get::<Option<i64>, _>("previous_secret_expires_us")?
            .map(time),
        created_at: time(row.try_get("created_us")?),
        updated_at: time(row.try_get("updated_us")?),
    })
}

fn webhook(row: &AnyRow) -> std::result::Result<WebhookDelivery, sqlx::Error> {
    let booking_id: Option<String> = row.try_get("booking_id")?;
    Ok(WebhookDelivery {
        id: uuid(row, "id")?,
        endpoint_id: uuid(row, "endpoint_id")?,
        event_id: uuid(row, "event_id")?,
        event_type: row.try_get("event_type")?,
        booking_id: booking_id
            .map(|b| b.parse().map_err(|e| decode("booking_id", e)))
            .transpose()?,
        payload: row.try_get("payload")?,
        status: row.try_get("status")?,
        attempts: int(row, "attempts")?,
        retry_from: int(row, "retry_from")?,
        due_at: row.try_get::<Option<i64>, _>("due_us")?.map(time),
        last_status: opt_int(row, "last_status")?,
        last_error: row.try_get("last_error")?,
        created_at: time(row.try_get("created_us")?),
        sent_at: row.try_get::<Option<i64>, _>("sent_us")?.map(time),
    })
}

fn int(row: &AnyRow, column: &str) -> std::result::Result<i64, sqlx::Error> {
    row.try_get(column)
}

fn opt_int(row: &AnyRow, column: &str) -> std::result::Result<Option<i64>, sqlx::Error> {
    row.try_get(column)
}

fn types_json(types: &[String]) -> String {
    serde_json::Value::from(types.to_vec()).to_string()
}

/// What a webhook attempt came to.
pub(crate) enum WebhookOutcome {
    Sent {
        status: u16,
    },
    Retry {
        at: DateTime<Utc>,
        status: Option<u16>,
        error: String,
    },
    Dead {
        status: Option<u16>,
        error: String,
    },
}

/// Which deliveries to list.
#[derive(Debug, Default)]
pub(crate) struct WebhookFilter {
    /// Only of endpoints this subject owns (staff).
    pub owner_id: Option<String>,
    pub endpoint_id: Option<Uuid>,
    pub status: Option<String>,
    pub before: Option<Uuid>,
}

/// A partial change to an endpoint (`None`: unchanged).
#[derive(Debug, Default)]
pub(crate) struct EndpointChange {
    pub url: Option<String>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    pub event_types: Option<Vec<String>>,
    /// `Some(reason)` disables, `Some(None)` enables.
    pub disabled: Option<Option<String>>,
}

impl Store {
    pub(crate) async fn insert_endpoint(&self, e: &Endpoint) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, NULL, NULL, $10, $10)"
        ))
        .bind(e.id.to_string())
        .bind(&e.owner_id)
        .bind(&e.scope)
        .bind(&e.url)
        .bind(e.description.as_deref())
        .bind(types_json(&e.event_types))
        .bind(&e.status)
        .bind(e.disabled_reason.as_deref())
        .bind(&e.secret)
        .bind(micros(e.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn endpoint(&self, id: Uuid) -> Result<Option<Endpoint>> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(endpoint).transpose()?)
    }

    /// Endpoints, oldest first; only `owner_id`'s when given.
    pub(crate) async fn endpoints(&self, owner_id: Option<&str>) -> Result<Vec<Endpoint>> {
        let rows = match owner_id {
            Some(owner) => {
                sqlx::query(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE owner_id = $1 \
                     ORDER BY id"
                ))
                .bind(owner)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows
            .iter()
            .map(endpoint)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub(crate) async fn enabled_endpoints(&self) -> Result<Vec<Endpoint>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE status = $1"
        ))
        .bind(ENABLED)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(endpoint)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Applies `change`; `false`: no such endpoint.
    pub(crate) async fn change_endpoint(
        &self,
        id: Uuid,
        change: &EndpointChange,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (set_description, description) = match &change.description {
            Some(d) => (1_i64, d.clone()),
            None => (0, None),
        };
        let (set_status, status, reason) = match &change.disabled {
            Some(Some(reason)) => (1_i64, DISABLED, Some(reason.clone())),
            Some(None) => (1, ENABLED, None),
            None => (0, ENABLED, None),
        };
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET url = COALESCE($2, url), \
             description = CASE WHEN $3 = 1 THEN $4 ELSE description END, \
             event_types = COALESCE($5, event_types), \
             status = CASE WHEN $6 = 1 THEN $7 ELSE status END, \
             disabled_reason = CASE WHEN $6 = 1 THEN $8 ELSE disabled_reason END, \
             updated_us = $9 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(change.url.as_deref())
        .bind(set_description)
        .bind(description)
        .bind(change.event_types.as_deref().map(types_json))
        .bind(set_status)
        .bind(status)
        .bind(reason)
        .bind(micros(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Makes `secret` current; the current one signs on until `grace_until`.
    pub(crate) async fn rotate_secret(
        &self,
        id: Uuid,
        secret: &str,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, \
             previous_secret_expires_us = $2, secret = $3, updated_us = $4 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(micros(grace_until))
        .bind(secret)
        .bind(micros(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables an enabled endpoint (its receiver answered 410 Gone).
    pub(crate) async fn disable_endpoint(
        &self,
        id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET status = $2, disabled_reason = $3, updated_us = $4 \
             WHERE id = $1 AND status = $5",
        )
        .bind(id.to_string())
        .bind(DISABLED)
        .bind(reason)
        .bind(micros(now))
        .bind(ENABLED)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes an endpoint and its deliveries; `false`: no such endpoint.
    pub(crate) async fn delete_endpoint(&self, id: Uuid) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes up to `limit` due webhooks for this sender until `lease_until`.
    pub(crate) async fn take_due_webhooks(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        let rows = self
            .lease_due(
                "webhook_deliveries",
                WEBHOOK_COLUMNS,
                now,
                lease_until,
                limit,
            )
            .await?;
        Ok(rows
            .iter()
            .map(webhook)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Writes an attempt's outcome if the lease (`attempts`) is still this
    /// sender's. `false`: it lapsed and another sender took it.
    pub(crate) async fn finish_webhook(
        &self,
        taken: &WebhookDelivery,
        outcome: &WebhookOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (status, due, sent, http, error) = match outcome {
            WebhookOutcome::Sent { status } => {
                ("sent", None, Some(micros(now)), Some(*status), None)
            }
            WebhookOutcome::Retry { at, status, error } => {
                ("pending", Some(micros(*at)), None, *status, Some(error))
            }
            WebhookOutcome::Dead { status, error } => ("dead", None, None, *status, Some(error)),
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, due_us = $2, sent_us = $3, \
             last_status = $4, last_error = $5, updated_us = $6 \
             WHERE id = $7 AND attempts = $8 AND status = 'pending'",
        )
        .bind(status)
        .bind(due)
        .bind(sent)
        .bind(http.map(i32::from))
        .bind(error.map(String::as_str))
        .bind(micros(now))
        .bind(taken.id.to_string())
        .bind(taken.attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn webhook_delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_deliveries WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(webhook).transpose()?)
    }

    /// Deliveries newest first (ids are UUIDv7), matching `filter`.
    pub(crate) async fn webhook_deliveries(
        &self,
        filter: &WebhookFilter,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        let mut conditions = vec!["d.id < $1".to_owned()];
        // Every id sorts below "~": no cursor reads from the newest.
        let mut binds = vec![
            filter
                .before
                .map_or_else(|| "~".to_owned(), |b| b.to_string()),
        ];
        let mut condition = |sql: &str, value: String| {
            binds.push(value);
            conditions.push(format!("{sql} ${}", binds.len()));
        };
        if let Some(owner) = &filter.owner_id {
            condition("e.owner_id =", owner.clone());
        }
        if let Some(endpoint) = filter.endpoint_id {
            condition("d.endpoint_id =", endpoint.to_string());
        }
        if let Some(status) = &filter.status {
            condition("d.status =", status.clone());
        }
        let columns = WEBHOOK_COLUMNS
            .split(", ")
            .map(|c| format!("d.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE {} \
             ORDER BY d.id DESC LIMIT ${}",
            conditions.join(" AND "),
            binds.len() + 1
        );
        let mut query = sqlx::query(&sql);
        for value in binds {
            query = query.bind(value);
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(webhook)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Makes a dead delivery due now with a fresh retry schedule; `None`:
    /// it is not dead (sent, pending, or replayed meanwhile).
    pub(crate) async fn replay_webhook(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<WebhookDelivery>> {
        let row = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET status = 'pending', due_us = $2, \
             retry_from = attempts, updated_us = $2 WHERE id = $1 AND status = 'dead' \
             RETURNING {WEBHOOK_COLUMNS}"
        ))
        .bind(id.to_string())
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(webhook).transpose()?)
    }
}

/// In the event's transaction: one delivery per event and endpoint.
/// Returns how many were new.
pub(super) async fn insert_webhooks(
    tx: &mut Transaction<'_, Any>,
    event_id: Uuid,
    webhooks: &[NewWebhook],
    now: DateTime<Utc>,
) -> Result<usize> {
    let mut inserted = 0;
    for w in webhooks {
        let done = sqlx::query(&format!(
            "INSERT INTO webhook_deliveries ({WEBHOOK_COLUMNS}, updated_us) VALUES ($1, $2, $3, \
             $4, $5, $6, 'pending', 0, 0, $7, NULL, NULL, $7, NULL, $7) \
             ON CONFLICT (event_id, endpoint_id) DO NOTHING"
        ))
        .bind(w.id.to_string())
        .bind(w.endpoint_id.to_string())
        .bind(event_id.to_string())
        .bind(&w.event_type)
        .bind(w.booking_id.map(|b| b.to_string()))
        .bind(&w.payload)
        .bind(micros(now))
        .execute(&mut **tx)
        .await?;
        inserted += usize::try_from(done.rows_affected()).unwrap_or(0);
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests;
