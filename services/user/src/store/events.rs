//! The `account_events` outbox: written in the transaction that deletes an
//! account, read and marked by the relay (`crate::events`).

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use uuid::Uuid;

use super::{Store, now};
use crate::UserError;
use crate::events::{ACCOUNT_DELETED, AccountEvent, Publisher};

fn event(row: &AnyRow) -> Result<AccountEvent, UserError> {
    let id: String = row.try_get("id")?;
    Ok(AccountEvent {
        id: Uuid::parse_str(&id)
            .map_err(|e| sqlx::Error::Decode(format!("account_events.id: {e}").into()))?,
        event_type: row.try_get("type")?,
        account_id: row.try_get("account_id")?,
    })
}

async fn unpublished<'c, E>(db: E, limit: i64, lock: &str) -> Result<Vec<AccountEvent>, UserError>
where
    E: Executor<'c, Database = Any>,
{
    let rows = sqlx::query(&format!(
        "SELECT id, type, account_id FROM account_events WHERE published_at IS NULL \
         ORDER BY created_at, id LIMIT $1{lock}"
    ))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(event).collect()
}

async fn mark_published<'c, E>(db: E, events: &[AccountEvent]) -> Result<(), UserError>
where
    E: Executor<'c, Database = Any>,
{
    let placeholders: Vec<String> = (2..events.len() + 2).map(|i| format!("${i}")).collect();
    let sql = format!(
        "UPDATE account_events SET published_at = $1 WHERE id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(now());
    for event in events {
        query = query.bind(event.id.to_string());
    }
    query.execute(db).await?;
    Ok(())
}

impl Store {
    /// Deletes the account, every row that refers to it and the pending
    /// codes of its phone, and records `account.deleted`, all in one
    /// transaction. `None` (nothing recorded) when there was no account.
    pub(crate) async fn delete_account(&self, id: &str) -> Result<Option<AccountEvent>, UserError> {
        let mut tx = self.pool.begin().await?;
        let phone: Option<Option<String>> =
            sqlx::query_scalar("SELECT phone FROM accounts WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        for table in ["refresh_tokens", "one_time_tokens", "oidc_identities"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE account_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        // Decided by the delete itself so a concurrent deletion of the same
        // account records one event, not two.
        let deleted = sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        if let Some(Some(phone)) = phone {
            sqlx::query("DELETE FROM phone_challenges WHERE phone = $1")
                .bind(phone)
                .execute(&mut *tx)
                .await?;
        }
        let event = AccountEvent {
            id: Uuid::now_v7(),
            event_type: ACCOUNT_DELETED.to_owned(),
            account_id: id.to_owned(),
        };
        sqlx::query(
            "INSERT INTO account_events (id, type, account_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(event.id.to_string())
        .bind(&event.event_type)
        .bind(&event.account_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    /// Publishes up to `limit` unpublished events in order and marks them
    /// published only after `publisher` succeeded. Returns how many.
    pub(crate) async fn relay_events(
        &self,
        limit: i64,
        publisher: &Publisher,
    ) -> Result<usize, UserError> {
        if !self.postgres {
            // One process relays (`berth dev`): no row locks. A crash between
            // publishing and marking publishes again (at-least-once).
            let events = unpublished(&self.pool, limit, "").await?;
            if !events.is_empty() {
                publisher
                    .publish(&events)
                    .await
                    .map_err(UserError::Delivery)?;
                mark_published(&self.pool, &events).await?;
            }
            return Ok(events.len());
        }
        // Rows stay locked while publishing, so replicas do not send them
        // twice; if this relay dies the lock goes and another one sends them.
        let mut tx = self.pool.begin().await?;
        let events = unpublished(&mut *tx, limit, " FOR UPDATE SKIP LOCKED").await?;
        if events.is_empty() {
            return Ok(0);
        }
        publisher
            .publish(&events)
            .await
            .map_err(UserError::Delivery)?;
        mark_published(&mut *tx, &events).await?;
        tx.commit().await?;
        Ok(events.len())
    }

    /// Deletes events published before `published_before` (Unix seconds).
    pub(crate) async fn purge_events(&self, published_before: i64) -> Result<u64, UserError> {
        let done = sqlx::query(
            "DELETE FROM account_events WHERE published_at IS NOT NULL AND published_at < $1",
        )
        .bind(published_before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
