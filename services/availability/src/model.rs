//! What the REST API accepts and returns, and the validation of it. Rules are
//! checked with `berth_slots` itself, so anything stored can be computed on.

use std::collections::BTreeMap;

use berth_slots::{
    AppointmentType as SlotRules, DateOverride, LocalInterval, Schedule, SlotError, WeeklyHours,
};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::currency::is_iso_4217;
use crate::error::AvailabilityError;

/// Most seats one slot may offer. Bounds `price * seats` far below `i64::MAX`.
pub const MAX_CAPACITY: u32 = 100_000;
/// Highest price per seat, in minor units.
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;
/// Longest full-refund notice a cancellation policy may ask for: a year.
pub const MAX_REFUND_NOTICE_HOURS: i64 = 24 * 365;
const MAX_NAME_CHARS: usize = 200;
const DEFAULT_HORIZON_MINUTES: u32 = 60 * 24 * 90;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResource {
    pub name: String,
    pub time_zone: String,
    /// Who manages it; defaults to the caller. Only an admin may name another.
    pub owner_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcePatch {
    pub name: Option<String>,
    pub time_zone: Option<String>,
    /// Admins only.
    pub owner_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resource {
    pub id: Uuid,
    pub name: String,
    pub time_zone: String,
    /// The account (token subject) that manages it; empty for resources
    /// created before owners existed (admins manage those).
    pub owner_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAppointmentType {
    pub name: String,
    pub duration_minutes: u32,
    /// Defaults to the duration (back-to-back slots).
    pub interval_minutes: Option<u32>,
    #[serde(default)]
    pub buffer_before_minutes: u32,
    #[serde(default)]
    pub buffer_after_minutes: u32,
    #[serde(default)]
    pub min_notice_minutes: u32,
    /// Defaults to 90 days.
    pub horizon_minutes: Option<u32>,
    /// Seats per slot; defaults to 1.
    pub capacity: Option<u32>,
    #[serde(default)]
    pub price_minor: i64,
    pub currency: String,
    /// Absent or `null`: a full refund whenever a booking is cancelled.
    pub cancellation_policy: Option<CancellationPolicy>,
}

/// How much of a paid booking is refunded when it is cancelled: all of it
/// until `full_refund_notice_hours` before the start, `late_refund_percent`
/// of it after that. A claim keeps the policy it was made under; a
/// reschedule takes the type's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancellationPolicy {
    /// 0 to 8760 (a year).
    #[schema(minimum = 0, maximum = 8760)]
    pub full_refund_notice_hours: i64,
    /// 0 to 100.
    #[schema(minimum = 0, maximum = 100)]
    pub late_refund_percent: i64,
}

impl CancellationPolicy {
    fn validate(&self) -> Result<(), AvailabilityError> {
        if !(0..=MAX_REFUND_NOTICE_HOURS).contains(&self.full_refund_notice_hours) {
            return Err(AvailabilityError::invalid(
                "cancellation_policy.full_refund_notice_hours",
                format!("must be between 0 and {MAX_REFUND_NOTICE_HOURS}"),
            ));
        }
        if !(0..=100).contains(&self.late_refund_percent) {
            return Err(AvailabilityError::invalid(
                "cancellation_policy.late_refund_percent",
                "must be between 0 and 100",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentTypePatch {
    pub name: Option<String>,
    pub duration_minutes: Option<u32>,
    pub interval_minutes: Option<u32>,
    pub buffer_before_minutes: Option<u32>,
    pub buffer_after_minutes: Option<u32>,
    pub min_notice_minutes: Option<u32>,
    pub horizon_minutes: Option<u32>,
    pub capacity: Option<u32>,
    pub price_minor: Option<i64>,
    pub currency: Option<String>,
    /// Replaces the policy; `null` removes it (a full refund always).
    /// Bookings made earlier keep theirs.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<CancellationPolicy>)]
    pub cancellation_policy: Option<Option<CancellationPolicy>>,
}

/// A field that is present, `null` included (absent is `None` by default).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppointmentType {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub name: String,
    pub duration_minutes: u32,
    pub interval_minutes: u32,
    pub buffer_before_minutes: u32,
    pub buffer_after_minutes: u32,
    pub min_notice_minutes: u32,
    pub horizon_minutes: u32,
    pub capacity: u32,
    pub price_minor: i64,
    pub currency: String,
    /// `null`: a full refund whenever a booking is cancelled.
    pub cancellation_policy: Option<CancellationPolicy>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AppointmentType {
    pub(crate) fn from_new(
        id: Uuid,
        resource_id: Uuid,
        new: NewAppointmentType,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            resource_id,
            name: new.name,
            duration_minutes: new.duration_minutes,
            interval_minutes: new.interval_minutes.unwrap_or(new.duration_minutes),
            buffer_before_minutes: new.buffer_before_minutes,
            buffer_after_minutes: new.buffer_after_minutes,
            min_notice_minutes: new.min_notice_minutes,
            horizon_minutes: new.horizon_minutes.unwrap_or(DEFAULT_HORIZON_MINUTES),
            capacity: new.capacity.unwrap_or(1),
            price_minor: new.price_minor,
            currency: new.currency,
            cancellation_policy: new.cancellation_policy,
            created_at: now,
            updated_at: now,
        }
    }

    pub(crate) fn apply(&mut self, patch: AppointmentTypePatch) {
        let AppointmentTypePatch {
            name,
            duration_minutes,
            interval_minutes,
            buffer_before_minutes,
            buffer_after_minutes,
            min_notice_minutes,
            horizon_minutes,
            capacity,
            price_minor,
            currency,
            cancellation_policy,
        } = patch;
        set(&mut self.name, name);
        set(&mut self.duration_minutes, duration_minutes);
        set(&mut self.interval_minutes, interval_minutes);
        set(&mut self.buffer_before_minutes, buffer_before_minutes);
        set(&mut self.buffer_after_minutes, buffer_after_minutes);
        set(&mut self.min_notice_minutes, min_notice_minutes);
        set(&mut self.horizon_minutes, horizon_minutes);
        set(&mut self.capacity, capacity);
        set(&mut self.price_minor, price_minor);
        set(&mut self.currency, currency);
        set(&mut self.cancellation_policy, cancellation_policy);
    }

    /// The slot engine's view of this type.
    pub(crate) fn rules(&self) -> SlotRules {
        SlotRules {
            id: self.id.to_string().into(),
            duration_minutes: self.duration_minutes,
            interval_minutes: self.interval_minutes,
            buffer_before_minutes: self.buffer_before_minutes,
            buffer_after_minutes: self.buffer_after_minutes,
            min_notice_minutes: self.min_notice_minutes,
            horizon_minutes: self.horizon_minutes,
            capacity: self.capacity,
        }
    }

    pub(crate) fn validate(&mut self) -> Result<(), AvailabilityError> {
        self.name = valid_name(&self.name)?;
        self.rules().validate().map_err(slot_error_field)?;
        if self.capacity > MAX_CAPACITY {
            return Err(AvailabilityError::invalid(
                "capacity",
                format!("must be at most {MAX_CAPACITY}"),
            ));
        }
        if !(0..=MAX_PRICE_MINOR).contains(&self.price_minor) {
            return Err(AvailabilityError::invalid(
                "price_minor",
                format!("must be between 0 and {MAX_PRICE_MINOR}"),
            ));
        }
        if !is_iso_4217(&self.currency) {
            return Err(AvailabilityError::invalid(
                "currency",
                format!("{:?} is not an ISO 4217 currency code", self.currency),
            ));
        }
        if let Some(policy) = &self.cancellation_policy {
            policy.validate()?;
        }
        Ok(())
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// Names a rule error after the request field it is about.
fn slot_error_field(error: SlotError) -> AvailabilityError {
    let field = match &error {
        SlotError::OutOfRange { field, .. } => field,
        SlotError::NoticeBeyondHorizon { .. } => "min_notice_minutes",
        _ => "rules",
    };
    AvailabilityError::invalid(field, error.to_string())
}

pub(crate) fn valid_name(name: &str) -> Result<String, AvailabilityError> {
    let name = name.trim();
    if name.chars().any(char::is_control) {
        return Err(AvailabilityError::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    if name.is_empty() {
        return Err(AvailabilityError::invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AvailabilityError::invalid(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// An account id as it appears in tokens' `sub`.
pub(crate) fn valid_owner(owner: &str) -> Result<String, AvailabilityError> {
    if owner.is_empty()
        || owner.chars().count() > MAX_NAME_CHARS
        || owner.chars().any(char::is_control)
    {
        return Err(AvailabilityError::invalid(
            "owner_id",
            format!("must be 1 to {MAX_NAME_CHARS} characters, without control characters"),
        ));
    }
    Ok(owner.to_owned())
}

/// An IANA zone name, checked against chrono-tz's database.
pub(crate) fn valid_zone(field: &str, name: &str) -> Result<Tz, AvailabilityError> {
    name.parse::<Tz>().map_err(|_| {
        AvailabilityError::invalid(field, format!("{name:?} is not an IANA time zone"))
    })
}

/// The weekly schedule as sent: day name → intervals. A map rather than
/// [`WeeklyHours`] so a misspelt day is an error, not a silently closed day.
#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct WeeklyBody(pub BTreeMap<String, Vec<LocalInterval>>);

impl WeeklyBody {
    pub(crate) fn into_weekly(self, time_zone: Tz) -> Result<WeeklyHours, AvailabilityError> {
        let mut weekly = WeeklyHours::default();
        for (day, intervals) in self.0 {
            let slot = match day.as_str() {
                "monday" => &mut weekly.monday,
                "tuesday" => &mut weekly.tuesday,
                "wednesday" => &mut weekly.wednesday,
                "thursday" => &mut weekly.thursday,
                "friday" => &mut weekly.friday,
                "saturday" => &mut weekly.saturday,
                "sunday" => &mut weekly.sunday,
                other => {
                    return Err(AvailabilityError::invalid(
                        other,
                        "unknown day; expected monday..sunday",
                    ));
                }
            };
            *slot = intervals;
        }
        validate_schedule(time_zone, &weekly, &[])?;
        Ok(weekly)
    }
}

/// Checks intervals (start before end, no overlap) and overrides with the
/// slot engine's own rules.
pub(crate) fn validate_schedule(
    time_zone: Tz,
    weekly: &WeeklyHours,
    overrides: &[DateOverride],
) -> Result<(), AvailabilityError> {
    let schedule = Schedule {
        time_zone,
        weekly: weekly.clone(),
        overrides: overrides.to_vec(),
    };
    schedule.validate().map_err(|e| {
        let field = if overrides.is_empty() {
            "schedule"
        } else {
            "hours"
        };
        AvailabilityError::invalid(field, e.to_string())
    })
}

/// Dates outside years 1..=9999 are refused: every backend stores them.
pub(crate) fn valid_date(field: &str, date: NaiveDate) -> Result<NaiveDate, AvailabilityError> {
    if (1..=9999).contains(&date.year()) {
        Ok(date)
    } else {
        Err(AvailabilityError::invalid(
            field,
            "year must be between 1 and 9999",
        ))
    }
}

/// The first and last dates every backend stores and compares correctly.
pub(crate) const FIRST_DATE: NaiveDate = match NaiveDate::from_ymd_opt(1, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MIN,
};
pub(crate) const LAST_DATE: NaiveDate = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(d) => d,
    None => NaiveDate::MAX,
};

/// Instants outside years 1..=9999 are refused for the same reason.
pub(crate) fn in_supported_range(t: DateTime<Utc>) -> bool {
    (1..=9999).contains(&t.year())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCalendar {
    pub name: Option<String>,
    /// An ICS feed fetched over HTTP(S) and refreshed every `refresh_interval_secs`.
    pub url: Option<String>,
    /// Uploaded ICS text.
    pub ics: Option<String>,
    pub refresh_interval_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Calendar {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub name: Option<String>,
    /// `url` (fetched feed) or `upload`.
    pub source: String,
    pub url: Option<String>,
    pub refresh_interval_secs: u32,
    pub fetched_at: Option<DateTime<Utc>>,
    /// Why the last refresh failed; the previous busy times stay in force.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SlotsQuery {
    /// The appointment type whose slots to list.
    #[serde(rename = "type")]
    pub appointment_type: Uuid,
    /// Window start (RFC 3339); defaults to now.
    pub from: Option<DateTime<Utc>>,
    /// Window end (RFC 3339); the window is capped.
    pub to: Option<DateTime<Utc>>,
    /// Zone to render times in; defaults to the resource's.
    pub tz: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlotView {
    /// Start in the requested zone, RFC 3339 with offset.
    pub start: String,
    pub end: String,
    pub start_utc: DateTime<Utc>,
    pub end_utc: DateTime<Utc>,
    pub remaining: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlotsPage {
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub time_zone: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub slots: Vec<SlotView>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_day_is_refused() {
        let body: WeeklyBody =
            serde_json::from_str(r#"{"mondy":[{"start":"09:00","end":"10:00"}]}"#)
                .unwrap_or_default();
        let err = body.into_weekly(chrono_tz::UTC).err();
        assert!(matches!(err, Some(AvailabilityError::Invalid { field, .. }) if field == "mondy"));
    }

    #[test]
    fn bad_type_names_the_field() {
        let new = NewAppointmentType {
            name: "x".into(),
            duration_minutes: 0,
            interval_minutes: None,
            buffer_before_minutes: 0,
            buffer_after_minutes: 0,
            min_notice_minutes: 0,
            horizon_minutes: None,
            capacity: None,
            price_minor: 0,
            currency: "EUR".into(),
            cancellation_policy: None,
        };
        let mut t = AppointmentType::from_new(Uuid::nil(), Uuid::nil(), new, Utc::now());
        let err = t.validate().err();
        assert!(
            matches!(err, Some(AvailabilityError::Invalid { field, .. }) if field == "duration_minutes")
        );
    }
}
