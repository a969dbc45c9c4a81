//! Turning stored rows into the slot engine's inputs. The ledger and the
//! slots endpoint both go through here, so a claim is accepted exactly when
//! the slot it names would be offered.

use berth_slots::{Claim, Schedule};
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::error::AvailabilityError;
use crate::model::{
    AppointmentType, Calendar, CancellationPolicy, FIRST_DATE, LAST_DATE, Resource,
};
use crate::store::{CalendarRow, ClaimRow, ResourceRow, Tx, TypeRow};

/// How far from a slot other claims and busy times can matter: the longest
/// appointment plus the longest buffer (one day each).
pub(crate) const REACH: TimeDelta = TimeDelta::days(2);

fn minutes(field: &str, v: i64) -> Result<u32, AvailabilityError> {
    u32::try_from(v).map_err(|_| AvailabilityError::Corrupt(format!("{field} = {v}")))
}

impl TryFrom<TypeRow> for AppointmentType {
    type Error = AvailabilityError;

    fn try_from(r: TypeRow) -> Result<Self, Self::Error> {
        Ok(AppointmentType {
            id: r.id,
            resource_id: r.resource_id,
            name: r.name,
            duration_minutes: minutes("duration_minutes", r.duration_minutes)?,
            interval_minutes: minutes("interval_minutes", r.interval_minutes)?,
            buffer_before_minutes: minutes("buffer_before_minutes", r.buffer_before_minutes)?,
            buffer_after_minutes: minutes("buffer_after_minutes", r.buffer_after_minutes)?,
            min_notice_minutes: minutes("min_notice_minutes", r.min_notice_minutes)?,
            horizon_minutes: minutes("horizon_minutes", r.horizon_minutes)?,
            capacity: minutes("capacity", r.capacity)?,
            price_minor: r.price_minor,
            currency: r.currency,
            cancellation_policy: match (r.full_refund_notice_hours, r.late_refund_percent) {
                (Some(full_refund_notice_hours), Some(late_refund_percent)) => {
                    Some(CancellationPolicy {
                        full_refund_notice_hours,
                        late_refund_percent,
                    })
                }
                (None, None) => None,
                _ => {
                    return Err(AvailabilityError::Corrupt(format!(
                        "appointment type {} has half a cancellation policy",
                        r.id
                    )));
                }
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

impl From<&AppointmentType> for TypeRow {
    fn from(t: &AppointmentType) -> Self {
        TypeRow {
            id: t.id,
            resource_id: t.resource_id,
            name: t.name.clone(),
            duration_minutes: t.duration_minutes.into(),
            interval_minutes: t.interval_minutes.into(),
            buffer_before_minutes: t.buffer_before_minutes.into(),
            buffer_after_minutes: t.buffer_after_minutes.into(),
            min_notice_minutes: t.min_notice_minutes.into(),
            horizon_minutes: t.horizon_minutes.into(),
            capacity: t.capacity.into(),
            price_minor: t.price_minor,
            currency: t.currency.clone(),
            full_refund_notice_hours: t.cancellation_policy.map(|p| p.full_refund_notice_hours),
            late_refund_percent: t.cancellation_policy.map(|p| p.late_refund_percent),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

impl From<&ResourceRow> for Resource {
    fn from(r: &ResourceRow) -> Self {
        Resource {
            id: r.id,
            name: r.name.clone(),
            time_zone: r.time_zone.clone(),
            owner_id: r.owner_id.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<&CalendarRow> for Calendar {
    fn from(c: &CalendarRow) -> Self {
        Calendar {
            id: c.id,
            resource_id: c.resource_id,
            name: c.name.clone(),
            source: if c.url.is_some() { "url" } else { "upload" }.to_owned(),
            url: c.url.clone(),
            refresh_interval_secs: u32::try_from(c.refresh_interval_secs).unwrap_or(u32::MAX),
            fetched_at: c.fetched_at,
            last_error: c.last_error.clone(),
            created_at: c.created_at,
        }
    }
}

pub(crate) fn zone(r: &ResourceRow) -> Result<Tz, AvailabilityError> {
    r.time_zone.parse().map_err(|_| {
        AvailabilityError::Corrupt(format!("resource {} has zone {:?}", r.id, r.time_zone))
    })
}

/// A claim as the engine sees it.
pub(crate) fn engine_claim(c: &ClaimRow) -> Claim {
    let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Claim {
        start: c.starts_at,
        end: c.ends_at,
        appointment_type: c.appointment_type_id.to_string().into(),
        seats: clamp(c.seats),
        buffer_before_minutes: clamp(c.buffer_before_minutes),
        buffer_after_minutes: clamp(c.buffer_after_minutes),
    }
}

/// The resource's schedule with the overrides for local dates that slots
/// starting in `[from, to)` can fall on.
pub(crate) async fn schedule(
    tx: &mut Tx,
    resource: &ResourceRow,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Schedule, AvailabilityError> {
    let time_zone = zone(resource)?;
    let day = |t: DateTime<Utc>| t.with_timezone(&time_zone).date_naive();
    let first = day(from)
        .checked_sub_days(chrono::Days::new(2))
        .unwrap_or(FIRST_DATE)
        .clamp(FIRST_DATE, LAST_DATE);
    let last = day(to)
        .checked_add_days(chrono::Days::new(2))
        .unwrap_or(LAST_DATE)
        .clamp(FIRST_DATE, LAST_DATE);
    let overrides = tx.list_overrides(resource.id, first, last).await?;
    Ok(Schedule {
        time_zone,
        weekly: resource.weekly.0.clone(),
        overrides,
    })
}

/// A resource and one of its appointment types; 404s name what is missing.
pub(crate) async fn resource_and_type(
    tx: &mut Tx,
    resource: Uuid,
    appointment_type: Uuid,
) -> Result<(ResourceRow, AppointmentType), AvailabilityError> {
    let r = tx
        .get_resource(resource)
        .await?
        .ok_or_else(|| AvailabilityError::not_found("resource", resource))?;
    let t = tx
        .get_type(appointment_type)
        .await?
        .filter(|t| t.resource_id == resource)
        .ok_or_else(|| AvailabilityError::not_found("appointment type", appointment_type))?;
    Ok((r, t.try_into()?))
}

/// `[from - REACH, to + REACH)`, kept inside what every backend can store.
pub(crate) fn widen(from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (
        from.checked_sub_signed(REACH).unwrap_or(from),
        to.checked_add_signed(REACH).unwrap_or(to),
    )
}
