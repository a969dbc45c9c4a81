//! Slot views: everything a claim or `GET …/slots` decides on, each read
//! in one statement (one snapshot).

use berth_slots::{BusyInterval, DateOverride, MAX_DURATION_MINUTES};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Postgres, Row};
use uuid::Uuid;

use super::super::{
    Block, ClaimRow, ResourceRow, SlotCounters, SlotVersions, SlotView, TypeRow, WindowView,
};

/// A `CROSS JOIN LATERAL … lc` with the live claims of resource `$rid`
/// overlapping `$span` as parallel arrays (`lc.c_id`, `lc.c_block`, …) and
/// whether lapsed holds overlap it (`lc.lapsed`); `$now` is the time that
/// decides, `$longest` the longest claim in minutes, so the scan is a range
/// of the `(resource_id, starts_at)` index. Decoded by [`live_claims_from_row`].
macro_rules! claim_arrays {
    ($rid:literal, $span:literal, $now:literal, $longest:literal) => {
        concat!(
            "CROSS JOIN LATERAL (SELECT array_agg(c.id) FILTER (WHERE live) AS c_id, \
               array_agg(c.block_id) FILTER (WHERE live) AS c_block, \
               array_agg(c.appointment_type_id) FILTER (WHERE live) AS c_type, \
               array_agg(c.starts_at) FILTER (WHERE live) AS c_start, \
               array_agg(c.ends_at) FILTER (WHERE live) AS c_end, \
               array_agg(c.seats) FILTER (WHERE live) AS c_seats, \
               array_agg(c.buffer_before_minutes) FILTER (WHERE live) AS c_before, \
               array_agg(c.buffer_after_minutes) FILTER (WHERE live) AS c_after, \
               array_agg(c.price_minor) FILTER (WHERE live) AS c_price, \
               array_agg(c.currency) FILTER (WHERE live) AS c_currency, \
               array_agg(c.owner) FILTER (WHERE live) AS c_owner, \
               array_agg(c.expires_at) FILTER (WHERE live) AS c_expires, \
               array_agg(c.full_refund_notice_hours) FILTER (WHERE live) AS c_notice, \
               array_agg(c.late_refund_percent) FILTER (WHERE live) AS c_refund, \
               COALESCE(bool_or(NOT live), false) AS lapsed \
             FROM claims c \
             CROSS JOIN LATERAL (SELECT c.expires_at IS NULL OR c.expires_at > ",
            $now,
            " AS live) l \
             WHERE c.resource_id = ",
            $rid,
            " AND c.released_at IS NULL AND c.starts_at < upper(",
            $span,
            ") AND c.starts_at > lower(",
            $span,
            ") - make_interval(mins => ",
            $longest,
            ") AND c.period && ",
            $span,
            ") lc"
        )
    };
}

/// [`SlotView`]s for many slots in one statement: `$1`, `$2`, `$3` the
/// requests' resources, types and starts (parallel arrays), `$4` now, `$5`
/// reach in minutes, `$6` the longest claim in minutes (so the claims scan
/// is a range of the `(resource_id, starts_at)` index); each row carries its
/// request's 1-based position `i`. Live claims come back as parallel arrays
/// (binary, no text encoding).
/// The span and the slot's end come from the type's duration in the same
/// statement; overrides are read for the UTC dates of the span and one day
/// either side, which covers the span's local dates in every zone (with a
/// reach of two days: the local dates two days either side of the slot).
/// One statement is one snapshot, so views of the same resource agree (the
/// same counters and claims).
const SLOT_VIEWS: &str = concat!(
    "SELECT q.i, t.id, t.resource_id, t.name, t.duration_minutes, t.interval_minutes, \
           t.buffer_before_minutes, t.buffer_after_minutes, t.min_notice_minutes, \
           t.horizon_minutes, t.capacity, t.price_minor, t.currency, t.created_at, t.updated_at, \
           t.full_refund_notice_hours, t.late_refund_percent, \
           r.name AS r_name, r.time_zone AS r_time_zone, r.owner_id AS r_owner_id, \
           r.weekly AS r_weekly, r.created_at AS r_created_at, r.updated_at AS r_updated_at, \
           r.ledger_seq AS r_ledger_seq, r.catalog_seq AS r_catalog_seq, \
           lc.c_id, lc.c_block, lc.c_type, lc.c_start, lc.c_end, lc.c_seats, lc.c_before, \
           lc.c_after, lc.c_price, lc.c_currency, lc.c_owner, lc.c_expires, lc.c_notice, \
           lc.c_refund, lc.lapsed, \
           (SELECT COALESCE(json_agg(json_build_object('start', starts_at, 'end', ends_at)), '[]'::json) \
              FROM busy_times WHERE resource_id = q.resource_id AND starts_at < upper(w.span) \
              AND ends_at > lower(w.span)) AS busy, \
           (SELECT COALESCE(json_agg(json_build_object('date', date, 'hours', hours) ORDER BY date), '[]'::json) \
              FROM date_overrides WHERE resource_id = q.resource_id \
              AND date >= (lower(w.span) AT TIME ZONE 'UTC')::date - 1 \
              AND date <= (upper(w.span) AT TIME ZONE 'UTC')::date + 1) AS overrides, \
           bl.id AS block_id, bl.capacity AS block_capacity \
         FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) WITH ORDINALITY \
           AS q(resource_id, type_id, start, i) \
         JOIN appointment_types t ON t.id = q.type_id AND t.resource_id = q.resource_id \
         JOIN resources r ON r.id = t.resource_id \
         CROSS JOIN LATERAL (SELECT q.start + make_interval(mins => t.duration_minutes::int) AS slot_end) e \
         CROSS JOIN LATERAL (SELECT e.slot_end, tstzrange(q.start - make_interval(mins => $5), \
           e.slot_end + make_interval(mins => $5), '[)') AS span) w ",
    claim_arrays!("q.resource_id", "w.span", "$4", "$6"),
    " LEFT JOIN blocks bl ON bl.resource_id = q.resource_id \
           AND bl.period && tstzrange(q.start, w.slot_end, '[)') \
           AND bl.appointment_type_id = t.id AND bl.starts_at = q.start AND bl.ends_at = w.slot_end"
);

/// Whether a resource exists, its slot counters and whether one of its
/// calendars is due: `$1` resource, `$2` now, `$3` how often uploads are
/// re-expanded ([`super::super::UPLOAD_REFRESH_SECS`]).
const SLOT_VERSIONS: &str = "SELECT r.ledger_seq, r.catalog_seq, \
       EXISTS (SELECT 1 FROM calendars cal WHERE cal.resource_id = r.id \
          AND (cal.fetched_at IS NULL OR cal.fetched_at + make_interval(secs => \
            CASE WHEN cal.url IS NULL THEN $3 ELSE cal.refresh_interval_secs END) <= $2)) \
          AS feeds_due \
     FROM resources r WHERE r.id = $1";

/// See [`SLOT_VERSIONS`].
pub(in crate::store) async fn slot_versions(
    conn: &mut PgConnection,
    resource: Uuid,
) -> Result<Option<SlotVersions>, sqlx::Error> {
    let row = sqlx::query(SLOT_VERSIONS)
        .bind(resource)
        .bind(Utc::now())
        .bind(super::super::UPLOAD_REFRESH_SECS)
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        Ok(SlotVersions {
            counters: Some(SlotCounters {
                ledger: row.try_get("ledger_seq")?,
                catalog: row.try_get("catalog_seq")?,
            }),
            feeds_due: row.try_get("feeds_due")?,
        })
    })
    .transpose()
}

/// Everything `GET …/slots` computes on, in one statement: `$1` resource,
/// `$2` appointment type, `$3` from, `$4` to, `$5` the longest claim in
/// minutes, `$6` reach in minutes. No row: no such resource; a NULL type
/// id: no such type on this resource. Claims are those live at
/// `-infinity`, i.e. all unreleased ones. Overrides are read for the UTC
/// dates three days either side of the window (a superset of the local
/// dates two days either side in every zone).
const WINDOW_VIEW: &str = concat!(
    "SELECT r.name AS r_name, r.time_zone AS r_time_zone, r.owner_id AS r_owner_id, \
       r.weekly AS r_weekly, r.created_at AS r_created_at, r.updated_at AS r_updated_at, \
       r.ledger_seq AS r_ledger_seq, r.catalog_seq AS r_catalog_seq, \
       t.id, t.resource_id, t.name, t.duration_minutes, t.interval_minutes, \
       t.buffer_before_minutes, t.buffer_after_minutes, t.min_notice_minutes, \
       t.horizon_minutes, t.capacity, t.price_minor, t.currency, t.created_at, t.updated_at, \
       t.full_refund_notice_hours, t.late_refund_percent, \
       lc.c_id, lc.c_block, lc.c_type, lc.c_start, lc.c_end, lc.c_seats, lc.c_before, \
       lc.c_after, lc.c_price, lc.c_currency, lc.c_owner, lc.c_expires, lc.c_notice, lc.c_refund, \
       (SELECT COALESCE(json_agg(json_build_object('start', starts_at, 'end', ends_at)), '[]'::json) \
          FROM busy_times WHERE resource_id = r.id AND starts_at < upper(w.span) \
          AND ends_at > lower(w.span)) AS busy, \
       (SELECT COALESCE(json_agg(json_build_object('date', date, 'hours', hours) ORDER BY date), '[]'::json) \
          FROM date_overrides WHERE resource_id = r.id \
          AND date >= ($3 AT TIME ZONE 'UTC')::date - 3 \
          AND date <= ($4 AT TIME ZONE 'UTC')::date + 3) AS overrides \
     FROM resources r \
     LEFT JOIN appointment_types t ON t.id = $2 AND t.resource_id = r.id \
     CROSS JOIN LATERAL (SELECT tstzrange($3 - make_interval(mins => $6), \
       $4 + make_interval(mins => $6), '[)') AS span) w ",
    claim_arrays!("r.id", "w.span", "'-infinity'::timestamptz", "$5"),
    " WHERE r.id = $1"
);

/// See [`WINDOW_VIEW`].
pub(in crate::store) async fn window_view(
    conn: &mut PgConnection,
    resource: Uuid,
    appointment_type: Uuid,
    window: (DateTime<Utc>, DateTime<Utc>),
    reach: TimeDelta,
) -> Result<Option<WindowView>, sqlx::Error> {
    let reach = i32::try_from(reach.num_minutes()).unwrap_or(i32::MAX);
    let Some(row) = sqlx::query(WINDOW_VIEW)
        .bind(resource)
        .bind(appointment_type)
        .bind(window.0)
        .bind(window.1)
        .bind(i32::try_from(MAX_DURATION_MINUTES).unwrap_or(i32::MAX))
        .bind(reach)
        .fetch_optional(conn)
        .await?
    else {
        return Ok(None);
    };
    let type_id: Option<Uuid> = row.try_get("id")?;
    let ty = match type_id {
        Some(_) => Some(<TypeRow as sqlx::FromRow<_>>::from_row(&row)?),
        None => None,
    };
    Ok(Some(WindowView {
        resource: resource_from_row(&row, resource)?,
        ty,
        claims: live_claims_from_row(&row, resource)?,
        busy: row.try_get::<Json<Vec<BusyInterval>>, _>("busy")?.0,
        overrides: row.try_get::<Json<Vec<DateOverride>>, _>("overrides")?.0,
        counters: Some(counters_from_row(&row)?),
    }))
}

/// `r_ledger_seq` and `r_catalog_seq` of a view row.
fn counters_from_row(row: &PgRow) -> Result<SlotCounters, sqlx::Error> {
    Ok(SlotCounters {
        ledger: row.try_get("r_ledger_seq")?,
        catalog: row.try_get("r_catalog_seq")?,
    })
}

/// The `r_*` columns of a view row.
fn resource_from_row(row: &PgRow, id: Uuid) -> Result<ResourceRow, sqlx::Error> {
    Ok(ResourceRow {
        id,
        name: row.try_get("r_name")?,
        time_zone: row.try_get("r_time_zone")?,
        owner_id: row.try_get("r_owner_id")?,
        weekly: row.try_get("r_weekly")?,
        created_at: row.try_get("r_created_at")?,
        updated_at: row.try_get("r_updated_at")?,
    })
}

/// The slot a claim names: resource, appointment type, start.
pub(crate) type SlotKey = (Uuid, Uuid, DateTime<Utc>);

/// One [`SlotView`] per slot in `slots`, in order; `None` where the type
/// does not exist or belongs to another resource.
pub(in crate::store) async fn slot_views<'e>(
    executor: impl PgExecutor<'e>,
    slots: &[SlotKey],
    reach: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Vec<Option<SlotView>>, sqlx::Error> {
    let reach = i32::try_from(reach.num_minutes()).unwrap_or(i32::MAX);
    let resources: Vec<Uuid> = slots.iter().map(|s| s.0).collect();
    let types: Vec<Uuid> = slots.iter().map(|s| s.1).collect();
    let starts: Vec<DateTime<Utc>> = slots.iter().map(|s| s.2).collect();
    let rows = sqlx::query(SLOT_VIEWS)
        .bind(resources)
        .bind(types)
        .bind(starts)
        .bind(now)
        .bind(reach)
        .bind(i32::try_from(MAX_DURATION_MINUTES).unwrap_or(i32::MAX))
        .fetch_all(executor)
        .await?;
    let mut views: Vec<Option<SlotView>> = slots.iter().map(|_| None).collect();
    for row in &rows {
        let i: i64 = row.try_get("i")?;
        let slot = usize::try_from(i - 1)
            .ok()
            .and_then(|i| views.get_mut(i))
            .ok_or_else(|| sqlx::Error::Protocol(format!("slot view for position {i}")))?;
        *slot = Some(slot_view_from_row(row)?);
    }
    Ok(views)
}

/// The [`SlotView`] of one slot (a batch of one).
pub(in crate::store) async fn slot_view<'e>(
    executor: impl PgExecutor<'e>,
    resource: Uuid,
    appointment_type: Uuid,
    start: DateTime<Utc>,
    reach: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Option<SlotView>, sqlx::Error> {
    let mut views =
        slot_views(executor, &[(resource, appointment_type, start)], reach, now).await?;
    Ok(views.pop().flatten())
}

/// The live claims of a slot view row, from its parallel arrays.
fn live_claims_from_row(row: &PgRow, resource: Uuid) -> Result<Vec<ClaimRow>, sqlx::Error> {
    fn column<T>(row: &PgRow, name: &str) -> Result<Vec<T>, sqlx::Error>
    where
        Vec<T>: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        Ok(row.try_get::<Option<Vec<T>>, _>(name)?.unwrap_or_default())
    }
    let ids: Vec<Uuid> = column(row, "c_id")?;
    let blocks: Vec<Option<Uuid>> = column(row, "c_block")?;
    let types: Vec<Uuid> = column(row, "c_type")?;
    let starts: Vec<DateTime<Utc>> = column(row, "c_start")?;
    let ends: Vec<DateTime<Utc>> = column(row, "c_end")?;
    let seats: Vec<i64> = column(row, "c_seats")?;
    let before: Vec<i64> = column(row, "c_before")?;
    let after: Vec<i64> = column(row, "c_after")?;
    let prices: Vec<i64> = column(row, "c_price")?;
    let currencies: Vec<String> = column(row, "c_currency")?;
    let owners: Vec<String> = column(row, "c_owner")?;
    let expires: Vec<Option<DateTime<Utc>>> = column(row, "c_expires")?;
    let notices: Vec<Option<i64>> = column(row, "c_notice")?;
    let refunds: Vec<Option<i64>> = column(row, "c_refund")?;
    let n = ids.len();
    let lengths = [
        blocks.len(),
        types.len(),
        starts.len(),
        ends.len(),
        seats.len(),
        before.len(),
        after.len(),
        prices.len(),
        currencies.len(),
        owners.len(),
        expires.len(),
        notices.len(),
        refunds.len(),
    ];
    if lengths.iter().any(|&len| len != n) {
        return Err(sqlx::Error::Protocol(
            "slot view claim arrays differ in length".into(),
        ));
    }
    let mut claims: Vec<ClaimRow> = (0..n)
        .map(|i| ClaimRow {
            id: ids[i],
            block_id: blocks[i],
            resource_id: resource,
            appointment_type_id: types[i],
            starts_at: starts[i],
            ends_at: ends[i],
            seats: seats[i],
            buffer_before_minutes: before[i],
            buffer_after_minutes: after[i],
            price_minor: prices[i],
            currency: currencies[i].clone(),
            owner: owners[i].clone(),
            expires_at: expires[i],
            released_at: None,
            full_refund_notice_hours: notices[i],
            late_refund_percent: refunds[i],
        })
        .collect();
    claims.sort_by_key(|c| (c.starts_at, c.id));
    Ok(claims)
}

fn slot_view_from_row(row: &PgRow) -> Result<SlotView, sqlx::Error> {
    let ty = <TypeRow as sqlx::FromRow<_>>::from_row(row)?;
    let block_id: Option<Uuid> = row.try_get("block_id")?;
    let block_capacity: Option<i64> = row.try_get("block_capacity")?;
    Ok(SlotView {
        resource: resource_from_row(row, ty.resource_id)?,
        claims: live_claims_from_row(row, ty.resource_id)?,
        lapsed: row.try_get("lapsed")?,
        counters: counters_from_row(row)?,
        busy: row.try_get::<Json<Vec<BusyInterval>>, _>("busy")?.0,
        overrides: row.try_get::<Json<Vec<DateOverride>>, _>("overrides")?.0,
        block: block_id
            .zip(block_capacity)
            .map(|(id, capacity)| Block { id, capacity }),
        ty,
    })
}
