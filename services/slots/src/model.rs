//! Rule, input and output types. Everything is plain data with serde derives so
//! services can store rules in a database and ship them over the wire.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{DayRef, SlotError};

/// Longest appointment, buffer or slot interval accepted (one day). A slot has to
/// fit inside one working interval, which never spans more than one local day.
pub const MAX_DURATION_MINUTES: u32 = 24 * 60;

/// Longest booking horizon accepted (about five years). Bounds the work a
/// single call can do even when the caller forgets to cap the window.
pub const MAX_HORIZON_MINUTES: u32 = 1827 * 24 * 60;

/// Default cap for [`Window::ensure_max_len`]: two months covers every calendar
/// view (a month plus overflow) while keeping one request cheap.
pub const MAX_WINDOW: TimeDelta = TimeDelta::days(62);

/// A local wall-clock time of day with minute precision, from `00:00` to `24:00`
/// inclusive.
///
/// A dedicated type rather than [`chrono::NaiveTime`] because working hours
/// often end at midnight (`18:00`–`24:00`), which `NaiveTime` cannot express.
/// Serialized as `"HH:MM"`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$", example = "09:00")]
pub struct WallTime(u16);

impl WallTime {
    /// `00:00`.
    pub const MIDNIGHT: WallTime = WallTime(0);
    /// `24:00`, the end of the local day (only meaningful as an interval end).
    pub const END_OF_DAY: WallTime = WallTime(24 * 60);

    /// `hour:minute`; `None` unless `minute < 60` and the time is at most `24:00`.
    pub const fn new(hour: u32, minute: u32) -> Option<WallTime> {
        if minute >= 60 || hour > 24 {
            return None;
        }
        WallTime::from_minutes(hour * 60 + minute)
    }

    /// Minutes after local midnight; `None` past `24:00`.
    pub const fn from_minutes(minutes: u32) -> Option<WallTime> {
        if minutes > 24 * 60 {
            None
        } else {
            // Cannot truncate: checked against 1440 just above.
            Some(WallTime(minutes as u16))
        }
    }

    /// Minutes after local midnight (`0..=1440`).
    pub const fn minutes(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl FromStr for WallTime {
    type Err = SlotError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SlotError::InvalidWallTime {
            input: s.to_owned(),
        };
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        let hour: u32 = h.parse().map_err(|_| bad())?;
        let minute: u32 = m.parse().map_err(|_| bad())?;
        WallTime::new(hour, minute).ok_or_else(bad)
    }
}

impl TryFrom<String> for WallTime {
    type Error = SlotError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<WallTime> for String {
    fn from(t: WallTime) -> String {
        t.to_string()
    }
}

/// A half-open local wall-clock interval `[start, end)` within one local day.
///
/// Intervals never cross midnight; a night shift is two intervals on two days
/// (`22:00`–`24:00` and `00:00`–`06:00`), and no slot spans the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocalInterval {
    pub start: WallTime,
    pub end: WallTime,
}

impl LocalInterval {
    /// Build and check `start < end`.
    pub fn new(start: WallTime, end: WallTime) -> Result<LocalInterval, SlotError> {
        if start < end {
            Ok(LocalInterval { start, end })
        } else {
            Err(SlotError::EmptyInterval {
                day: None,
                start,
                end,
            })
        }
    }

    /// Convenience for `"09:00"`-style literals, mostly for tests and fixtures.
    pub fn parse(start: &str, end: &str) -> Result<LocalInterval, SlotError> {
        LocalInterval::new(start.parse()?, end.parse()?)
    }
}

/// Recurring working hours, per weekday, in the resource's local time.
/// Each day may have several intervals (e.g. a lunch break); a day with no
/// intervals is closed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WeeklyHours {
    #[serde(default)]
    pub monday: Vec<LocalInterval>,
    #[serde(default)]
    pub tuesday: Vec<LocalInterval>,
    #[serde(default)]
    pub wednesday: Vec<LocalInterval>,
    #[serde(default)]
    pub thursday: Vec<LocalInterval>,
    #[serde(default)]
    pub friday: Vec<LocalInterval>,
    #[serde(default)]
    pub saturday: Vec<LocalInterval>,
    #[serde(default)]
    pub sunday: Vec<LocalInterval>,
}

impl WeeklyHours {
    /// The same intervals on each of `days`, closed on the others.
    pub fn on_days(days: &[Weekday], intervals: &[LocalInterval]) -> WeeklyHours {
        let mut weekly = WeeklyHours::default();
        for &day in days {
            *weekly.day_mut(day) = intervals.to_vec();
        }
        weekly
    }

    /// The intervals for `day`.
    pub fn day(&self, day: Weekday) -> &[LocalInterval] {
        match day {
            Weekday::Mon => &self.monday,
            Weekday::Tue => &self.tuesday,
            Weekday::Wed => &self.wednesday,
            Weekday::Thu => &self.thursday,
            Weekday::Fri => &self.friday,
            Weekday::Sat => &self.saturday,
            Weekday::Sun => &self.sunday,
        }
    }

    /// Mutable access to the intervals for `day`.
    pub fn day_mut(&mut self, day: Weekday) -> &mut Vec<LocalInterval> {
        match day {
            Weekday::Mon => &mut self.monday,
            Weekday::Tue => &mut self.tuesday,
            Weekday::Wed => &mut self.wednesday,
            Weekday::Thu => &mut self.thursday,
            Weekday::Fri => &mut self.friday,
            Weekday::Sat => &mut self.saturday,
            Weekday::Sun => &mut self.sunday,
        }
    }
}

/// What a date override does to its day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "intervals", rename_all = "snake_case")]
pub enum OverrideHours {
    /// No working hours that day (holiday, sick day).
    Closed,
    /// These intervals replace the weekly hours for that day (extra or
    /// different hours). An empty list is the same as `Closed`.
    Open(Vec<LocalInterval>),
}

/// Replaces the weekly hours for one local date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DateOverride {
    pub date: NaiveDate,
    pub hours: OverrideHours,
}

/// Where and when a resource works: its IANA zone, weekly hours and per-date
/// overrides. All hours are local wall-clock times in `time_zone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub time_zone: Tz,
    pub weekly: WeeklyHours,
    #[serde(default)]
    pub overrides: Vec<DateOverride>,
}

impl Schedule {
    /// Check every day's intervals (`start < end`, no overlap; touching is fine)
    /// and that no date is overridden twice.
    pub fn validate(&self) -> Result<(), SlotError> {
        const WEEK: [Weekday; 7] = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ];
        for day in WEEK {
            validate_day(DayRef::Weekday(day), self.weekly.day(day))?;
        }
        for o in &self.overrides {
            if let OverrideHours::Open(intervals) = &o.hours {
                validate_day(DayRef::Date(o.date), intervals)?;
            }
        }
        let mut dates: Vec<NaiveDate> = self.overrides.iter().map(|o| o.date).collect();
        dates.sort_unstable();
        if let Some(w) = dates.windows(2).find(|w| w[0] == w[1]) {
            return Err(SlotError::DuplicateOverride { date: w[0] });
        }
        Ok(())
    }

    /// The intervals that apply on local `date`: its override if any, else the
    /// weekly hours of its weekday.
    pub fn hours_on(&self, date: NaiveDate) -> &[LocalInterval] {
        match self.overrides.iter().find(|o| o.date == date) {
            Some(o) => o.hours.intervals(),
            None => self.weekly.day(chrono::Datelike::weekday(&date)),
        }
    }
}

impl OverrideHours {
    /// The intervals this override opens (empty when closed).
    pub fn intervals(&self) -> &[LocalInterval] {
        match self {
            OverrideHours::Closed => &[],
            OverrideHours::Open(intervals) => intervals,
        }
    }
}

fn validate_day(day: DayRef, intervals: &[LocalInterval]) -> Result<(), SlotError> {
    for iv in intervals {
        if iv.start >= iv.end {
            return Err(SlotError::EmptyInterval {
                day: Some(day),
                start: iv.start,
                end: iv.end,
            });
        }
    }
    let mut sorted = intervals.to_vec();
    sorted.sort_unstable_by_key(|iv| (iv.start, iv.end));
    for w in sorted.windows(2) {
        if w[1].start < w[0].end {
            return Err(SlotError::OverlappingIntervals {
                day,
                first: w[0],
                second: w[1],
            });
        }
    }
    Ok(())
}

/// Identifies an appointment type; only compared for equality, to decide
/// whether a claim shares seats with a slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppointmentTypeId(pub String);

impl AppointmentTypeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for AppointmentTypeId {
    fn from(s: &str) -> Self {
        AppointmentTypeId(s.to_owned())
    }
}

impl From<String> for AppointmentTypeId {
    fn from(s: String) -> Self {
        AppointmentTypeId(s)
    }
}

impl fmt::Display for AppointmentTypeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is being booked and how slots for it are laid out.
///
/// All lengths are whole minutes and unsigned, so negative values cannot be
/// represented (a negative number in stored JSON fails to deserialize);
/// [`AppointmentType::validate`] rejects zeros and absurd sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentType {
    pub id: AppointmentTypeId,
    /// Real (elapsed) length of the appointment, `1..=1440`.
    pub duration_minutes: u32,
    /// Step between consecutive slot starts in local wall-clock time, `1..=1440`.
    pub interval_minutes: u32,
    /// Time that must be free of other appointments/busy times before a slot.
    #[serde(default)]
    pub buffer_before_minutes: u32,
    /// Time that must be free of other appointments/busy times after a slot.
    #[serde(default)]
    pub buffer_after_minutes: u32,
    /// No slot starts earlier than `now + min_notice`.
    #[serde(default)]
    pub min_notice_minutes: u32,
    /// No slot starts later than `now + horizon`.
    pub horizon_minutes: u32,
    /// Seats per slot (group sessions); `1` for one-on-one.
    pub capacity: u32,
}

impl AppointmentType {
    /// Reject rules that make no sense or could make a call unbounded.
    pub fn validate(&self) -> Result<(), SlotError> {
        let limits = [
            (
                "duration_minutes",
                self.duration_minutes,
                1,
                MAX_DURATION_MINUTES,
            ),
            (
                "interval_minutes",
                self.interval_minutes,
                1,
                MAX_DURATION_MINUTES,
            ),
            (
                "buffer_before_minutes",
                self.buffer_before_minutes,
                0,
                MAX_DURATION_MINUTES,
            ),
            (
                "buffer_after_minutes",
                self.buffer_after_minutes,
                0,
                MAX_DURATION_MINUTES,
            ),
            (
                "horizon_minutes",
                self.horizon_minutes,
                1,
                MAX_HORIZON_MINUTES,
            ),
            (
                "min_notice_minutes",
                self.min_notice_minutes,
                0,
                MAX_HORIZON_MINUTES,
            ),
            ("capacity", self.capacity, 1, u32::MAX),
        ];
        for (field, value, min, max) in limits {
            if value < min || value > max {
                return Err(SlotError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        if self.min_notice_minutes > self.horizon_minutes {
            return Err(SlotError::NoticeBeyondHorizon {
                min_notice_minutes: self.min_notice_minutes,
                horizon_minutes: self.horizon_minutes,
            });
        }
        Ok(())
    }

    pub fn duration(&self) -> TimeDelta {
        minutes(self.duration_minutes)
    }
    pub fn interval(&self) -> TimeDelta {
        minutes(self.interval_minutes)
    }
    pub fn buffer_before(&self) -> TimeDelta {
        minutes(self.buffer_before_minutes)
    }
    pub fn buffer_after(&self) -> TimeDelta {
        minutes(self.buffer_after_minutes)
    }
    pub fn min_notice(&self) -> TimeDelta {
        minutes(self.min_notice_minutes)
    }
    pub fn horizon(&self) -> TimeDelta {
        minutes(self.horizon_minutes)
    }
}

pub(crate) fn minutes(m: u32) -> TimeDelta {
    TimeDelta::minutes(i64::from(m))
}

/// An existing booking or hold on the resource, `[start, end)` in UTC.
///
/// The claim carries its own buffers (snapshotted when it was made, so later
/// edits to the appointment type do not move existing bookings' buffers).
/// See the crate docs for exactly how claims block slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The appointment type it was booked through.
    pub appointment_type: AppointmentTypeId,
    /// Seats taken; only matters for a claim on exactly the same slot. A
    /// claim with 0 seats still occupies its time like any other claim.
    pub seats: u32,
    #[serde(default)]
    pub buffer_before_minutes: u32,
    #[serde(default)]
    pub buffer_after_minutes: u32,
}

/// A busy time from an external calendar, `[start, end)` in UTC; blocks
/// completely and has no buffers of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyInterval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The requested range of slot *starts*, `[from, to)` in UTC.
///
/// Slots are selected by start so adjacent windows partition the slots:
/// paging through a calendar never shows a slot twice or loses one at the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// Build and check `from <= to` (an empty window is valid and yields nothing).
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Window, SlotError> {
        let w = Window { from, to };
        w.validate()?;
        Ok(w)
    }

    /// `from <= to`.
    pub fn validate(&self) -> Result<(), SlotError> {
        if self.from > self.to {
            return Err(SlotError::InvertedWindow {
                from: self.from,
                to: self.to,
            });
        }
        Ok(())
    }

    pub fn len(&self) -> TimeDelta {
        self.to - self.from
    }

    pub fn is_empty(&self) -> bool {
        self.from >= self.to
    }

    /// For request handlers: turn an oversized (or inverted) window into a
    /// clear error instead of an expensive computation. Use [`MAX_WINDOW`]
    /// unless the caller has a reason to differ.
    pub fn ensure_max_len(&self, max: TimeDelta) -> Result<(), SlotError> {
        self.validate()?;
        if self.len() > max {
            return Err(SlotError::WindowTooLong {
                len: self.len(),
                max,
            });
        }
        Ok(())
    }
}

/// A bookable slot `[start, end)` in UTC with seats still free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Free seats, `1..=capacity` (full slots are not returned).
    pub remaining: u32,
}
