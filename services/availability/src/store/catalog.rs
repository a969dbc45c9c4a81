//! Resources, appointment types, schedules, overrides and calendars: SQL that
//! runs unchanged on PostgreSQL and SQLite (`$n` placeholders, `RETURNING`,
//! `ON CONFLICT`), written once.

use berth_slots::{DateOverride, OverrideHours, WeeklyHours};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{CalendarRow, ResourceRow, Tx, TypeRow, both};

pub(crate) const CLAIM_COLUMNS: &str = "id, block_id, resource_id, appointment_type_id, starts_at, \
     ends_at, seats, buffer_before_minutes, buffer_after_minutes, price_minor, currency, owner, \
     expires_at, released_at, full_refund_notice_hours, late_refund_percent";

const RESOURCE_COLUMNS: &str = "id, name, time_zone, owner_id, weekly, created_at, updated_at";
const TYPE_COLUMNS: &str = "id, resource_id, name, duration_minutes, interval_minutes, \
     buffer_before_minutes, buffer_after_minutes, min_notice_minutes, horizon_minutes, capacity, \
     price_minor, currency, created_at, updated_at, full_refund_notice_hours, late_refund_percent";
const CALENDAR_COLUMNS: &str = "id, resource_id, name, url, refresh_interval_secs, ics, fetched_at, \
     last_error, created_at";

/// Tables that `table_counts` reports (tests use it to prove bad input
/// wrote nothing).
pub(crate) const TABLES: &[&str] = &[
    "resources",
    "appointment_types",
    "date_overrides",
    "calendars",
    "busy_times",
    "blocks",
    "claims",
];

impl Tx {
    pub async fn insert_resource(&mut self, r: &ResourceRow) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO resources ({RESOURCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        both!(self, |c| {
            sqlx::query(&sql)
                .bind(r.id)
                .bind(&r.name)
                .bind(&r.time_zone)
                .bind(&r.owner_id)
                .bind(&r.weekly)
                .bind(r.created_at)
                .bind(r.updated_at)
                .execute(c)
                .await
                .map(drop)
        })
    }

    /// A page by id, optionally only `owner`'s resources.
    pub async fn list_resources(
        &mut self,
        owner: Option<&str>,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ResourceRow>, sqlx::Error> {
        let sql = resource_page_sql(after.is_some(), owner.is_some());
        both!(self, |c| {
            let mut query = sqlx::query_as(&sql);
            if let Some(after) = after {
                query = query.bind(after);
            }
            if let Some(owner) = owner {
                query = query.bind(owner);
            }
            query.bind(limit).fetch_all(c).await
        })
    }

    pub async fn get_resource(&mut self, id: Uuid) -> Result<Option<ResourceRow>, sqlx::Error> {
        let sql = format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = $1");
        both!(self, |c| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(c)
            .await)
    }

    pub async fn update_resource(&mut self, r: &ResourceRow) -> Result<(), sqlx::Error> {
        let sql = "UPDATE resources SET name = $2, time_zone = $3, weekly = $4, updated_at = $5, \
                   owner_id = $6 WHERE id = $1";
        both!(self, |c| {
            sqlx::query(sql)
                .bind(r.id)
                .bind(&r.name)
                .bind(&r.time_zone)
                .bind(&r.weekly)
                .bind(r.updated_at)
                .bind(&r.owner_id)
                .execute(c)
                .await
                .map(drop)
        })
    }

    pub async fn set_weekly(
        &mut self,
        id: Uuid,
        weekly: &WeeklyHours,
        now: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE resources SET weekly = $2, updated_at = $3 WHERE id = $1";
        both!(self, |c| {
            sqlx::query(sql)
                .bind(id)
                .bind(Json(weekly))
                .bind(now)
                .execute(c)
                .await
                .map(|r| r.rows_affected() > 0)
        })
    }

    /// Deletes the resource with its ledger rows (the ledger tables have no
    /// foreign keys to cascade on PostgreSQL). Call under the resource's
    /// row lock, after making sure no claim of it is live.
    pub async fn delete_resource(&mut self, id: Uuid) -> Result<bool, sqlx::Error> {
        both!(self, |c| {
            sqlx::query("DELETE FROM claims WHERE resource_id = $1")
                .bind(id)
                .execute(&mut *c)
                .await?;
            sqlx::query("DELETE FROM blocks WHERE resource_id = $1")
                .bind(id)
                .execute(&mut *c)
                .await?;
            sqlx::query("DELETE FROM resources WHERE id = $1")
                .bind(id)
                .execute(&mut *c)
                .await
                .map(|r| r.rows_affected() > 0)
        })
    }

    pub async fn insert_type(&mut self, t: &TypeRow) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO appointment_types ({TYPE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        both!(self, |c| {
            sqlx::query(&sql)
                .bind(t.id)
                .bind(t.resource_id)
                .bind(&t.name)
                .bind(t.duration_minutes)
                .bind(t.interval_minutes)
                .bind(t.buffer_before_minutes)
                .bind(t.buffer_after_minutes)
                .bind(t.min_notice_minutes)
                .bind(t.horizon_minutes)
                .bind(t.capacity)
                .bind(t.price_minor)
                .bind(&t.currency)
                .bind(t.created_at)
                .bind(t.updated_at)
                .bind(t.full_refund_notice_hours)
                .bind(t.late_refund_percent)
                .execute(c)
                .await
                .map(drop)
        })
    }

    pub async fn update_type(&mut self, t: &TypeRow) -> Result<(), sqlx::Error> {
        let sql = "UPDATE appointment_types SET name = $2, duration_minutes = $3, \
                   interval_minutes = $4, buffer_before_minutes = $5, buffer_after_minutes = $6, \
                   min_notice_minutes = $7, horizon_minutes = $8, capacity = $9, price_minor = $10, \
                   currency = $11, updated_at = $12, full_refund_notice_hours = $13, \
                   late_refund_percent = $14 WHERE id = $1";
        both!(self, |c| {
            sqlx::query(sql)
                .bind(t.id)
                .bind(&t.name)
                .bind(t.duration_minutes)
                .bind(t.interval_minutes)
                .bind(t.buffer_before_minutes)
                .bind(t.buffer_after_minutes)
                .bind(t.min_notice_minutes)
                .bind(t.horizon_minutes)
                .bind(t.capacity)
                .bind(t.price_minor)
                .bind(&t.currency)
                .bind(t.updated_at)
                .bind(t.full_refund_notice_hours)
                .bind(t.late_refund_percent)
                .execute(c)
                .await
                .map(drop)
        })
    }

    pub async fn list_types(&mut self, resource: Uuid) -> Result<Vec<TypeRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {TYPE_COLUMNS} FROM appointment_types WHERE resource_id = $1 ORDER BY id"
        );
        both!(self, |c| sqlx::query_as(&sql)
            .bind(resource)
            .fetch_all(c)
            .await)
    }

    pub async fn get_type(&mut self, id: Uuid) -> Result<Option<TypeRow>, sqlx::Error> {
        let sql = format!("SELECT {TYPE_COLUMNS} FROM appointment_types WHERE id = $1");
        both!(self, |c| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(c)
            .await)
    }

    /// Deletes the appointment type with its ledger rows, like
    /// [`Tx::delete_resource`]; call under its resource's row lock.
    pub async fn delete_type(&mut self, id: Uuid) -> Result<bool, sqlx::Error> {
        both!(self, |c| {
            sqlx::query("DELETE FROM claims WHERE appointment_type_id = $1")
                .bind(id)
                .execute(&mut *c)
                .await?;
            sqlx::query("DELETE FROM blocks WHERE appointment_type_id = $1")
                .bind(id)
                .execute(&mut *c)
                .await?;
            sqlx::query("DELETE FROM appointment_types WHERE id = $1")
                .bind(id)
                .execute(&mut *c)
                .await
                .map(|r| r.rows_affected() > 0)
        })
    }

    /// Overrides with `from <= date <= to`, by date.
    pub async fn list_overrides(
        &mut self,
        resource: Uuid,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DateOverride>, sqlx::Error> {
        let sql = "SELECT date, hours FROM date_overrides \
                   WHERE resource_id = $1 AND date >= $2 AND date <= $3 ORDER BY date";
        let rows: Vec<(NaiveDate, Json<OverrideHours>)> = both!(self, |c| {
            sqlx::query_as(sql)
                .bind(resource)
                .bind(from)
                .bind(to)
                .fetch_all(c)
                .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(date, hours)| DateOverride {
                date,
                hours: hours.0,
            })
            .collect())
    }

    pub async fn put_override(
        &mut self,
        resource: Uuid,
        date: NaiveDate,
        hours: &OverrideHours,
    ) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO date_overrides (resource_id, date, hours) VALUES ($1, $2, $3) \
                   ON CONFLICT (resource_id, date) DO UPDATE SET hours = excluded.hours";
        both!(self, |c| {
            sqlx::query(sql)
                .bind(resource)
                .bind(date)
                .bind(Json(hours))
                .execute(c)
                .await
                .map(drop)
        })
    }

    pub async fn delete_override(
        &mut self,
        resource: Uuid,
        date: NaiveDate,
    ) -> Result<bool, sqlx::Error> {
        both!(self, |c| {
            sqlx::query("DELETE FROM date_overrides WHERE resource_id = $1 AND date = $2")
                .bind(resource)
                .bind(date)
                .execute(c)
                .await
                .map(|r| r.rows_affected() > 0)
        })
    }

    pub async fn insert_calendar(&mut self, cal: &CalendarRow) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO calendars ({CALENDAR_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        both!(self, |c| {
            sqlx::query(&sql)
                .bind(cal.id)
                .bind(cal.resource_id)
                .bind(&cal.name)
                .bind(&cal.url)
                .bind(cal.refresh_interval_secs)
                .bind(&cal.ics)
                .bind(cal.fetched_at)
                .bind(&cal.last_error)
                .bind(cal.created_at)
                .execute(c)
                .await
                .map(drop)
        })
    }

    pub async fn list_calendars(
        &mut self,
        resource: Uuid,
    ) -> Result<Vec<CalendarRow>, sqlx::Error> {
        let sql =
            format!("SELECT {CALENDAR_COLUMNS} FROM calendars WHERE resource_id = $1 ORDER BY id");
        both!(self, |c| sqlx::query_as(&sql)
            .bind(resource)
            .fetch_all(c)
            .await)
    }

    pub async fn get_calendar(&mut self, id: Uuid) -> Result<Option<CalendarRow>, sqlx::Error> {
        let sql = format!("SELECT {CALENDAR_COLUMNS} FROM calendars WHERE id = $1");
        both!(self, |c| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(c)
            .await)
    }

    /// Calendars due for a refresh: feeds after their interval, uploads
    /// daily (their recurring events are expanded a fixed time ahead).
    pub async fn stale_calendars(
        &mut self,
        resource: Option<Uuid>,
    ) -> Result<Vec<CalendarRow>, sqlx::Error> {
        // Two statements, not `$1 IS NULL OR …` (see `resource_page_sql`).
        let filter = if resource.is_some() {
            "WHERE resource_id = $1 "
        } else {
            ""
        };
        let sql = format!("SELECT {CALENDAR_COLUMNS} FROM calendars {filter}ORDER BY id");
        let now = Utc::now();
        let all: Vec<CalendarRow> = both!(self, |c| {
            let mut query = sqlx::query_as(&sql);
            if let Some(resource) = resource {
                query = query.bind(resource);
            }
            query.fetch_all(c).await
        })?;
        Ok(all
            .into_iter()
            .filter(|cal| {
                let every = if cal.url.is_some() {
                    cal.refresh_interval_secs
                } else {
                    super::UPLOAD_REFRESH_SECS
                };
                cal.fetched_at
                    .is_none_or(|at| at + chrono::TimeDelta::seconds(every) <= now)
            })
            .collect())
    }

    /// Records a refresh: new text and time on success, the error otherwise.
    pub async fn record_fetch(
        &mut self,
        id: Uuid,
        ics: Option<&str>,
        at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let sql = "UPDATE calendars SET ics = COALESCE($2, ics), fetched_at = $3, last_error = $4 WHERE id = $1";
        both!(self, |c| {
            sqlx::query(sql)
                .bind(id)
                .bind(ics)
                .bind(at)
                .bind(error)
                .execute(c)
                .await
                .map(drop)
        })
    }

    pub async fn delete_calendar(&mut self, id: Uuid) -> Result<bool, sqlx::Error> {
        both!(self, |c| {
            sqlx::query("DELETE FROM calendars WHERE id = $1")
                .bind(id)
                .execute(c)
                .await
                .map(|r| r.rows_affected() > 0)
        })
    }

    pub async fn count_rows(&mut self, table: &str) -> Result<i64, sqlx::Error> {
        // `table` only ever comes from TABLES, never from input.
        let sql = format!("SELECT COUNT(*) FROM {table}");
        both!(self, |c| sqlx::query_scalar(&sql).fetch_one(c).await)
    }
}

/// The statement behind [`Tx::list_resources`]: a page by id, after the
/// cursor `$1` if `after`, of one owner (the next parameter) if `owner`,
/// `LIMIT` last. One statement per combination of filters rather than
/// `$n IS NULL OR …`: PostgreSQL runs availability's statements with
/// generic plans, and the generic plan of the catch-all form walks the
/// primary key past every other owner's resources instead of reading
/// `resources_owner`.
pub fn resource_page_sql(after: bool, owner: bool) -> String {
    let mut filters = Vec::new();
    if after {
        filters.push(format!("id > ${}", filters.len() + 1));
    }
    if owner {
        filters.push(format!("owner_id = ${}", filters.len() + 1));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", filters.join(" AND "))
    };
    format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources {filter}ORDER BY id LIMIT ${}",
        filters.len() + 1
    )
}
