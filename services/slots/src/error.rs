//! The one error type of the crate: every variant is a caller mistake (bad
//! rules or a bad window), so services can map it to "invalid argument".

use std::fmt;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc, Weekday};

use crate::model::{LocalInterval, WallTime};

/// Which day's hours an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayRef {
    /// The weekly hours of this weekday.
    Weekday(Weekday),
    /// The override for this local date.
    Date(NaiveDate),
}

impl fmt::Display for DayRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DayRef::Weekday(d) => write!(f, "weekly hours on {d}"),
            DayRef::Date(d) => write!(f, "override on {d}"),
        }
    }
}

/// Struct-like wrapper so an optional day renders nicely in messages.
struct MaybeDay(Option<DayRef>);

impl fmt::Display for MaybeDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, " in {d}"),
            None => Ok(()),
        }
    }
}

/// Renders a length as `62d`, `3d 4h 5m` etc. for error messages.
struct Human(TimeDelta);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.num_seconds();
        let (d, h, m, s) = (
            total / 86_400,
            total % 86_400 / 3600,
            total % 3600 / 60,
            total % 60,
        );
        let mut parts = Vec::new();
        for (v, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
            if v != 0 {
                parts.push(format!("{v}{unit}"));
            }
        }
        if parts.is_empty() {
            return f.write_str("0s");
        }
        f.write_str(&parts.join(" "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("invalid wall-clock time {input:?}: expected HH:MM between 00:00 and 24:00")]
    InvalidWallTime { input: String },

    #[error("working interval {start}-{end}{} is empty: start must be before end", MaybeDay(*day))]
    EmptyInterval {
        day: Option<DayRef>,
        start: WallTime,
        end: WallTime,
    },

    #[error(
        "working intervals {}-{} and {}-{} overlap in {day}",
        first.start, first.end, second.start, second.end
    )]
    OverlappingIntervals {
        day: DayRef,
        first: LocalInterval,
        second: LocalInterval,
    },

    #[error("date {date} is overridden more than once")]
    DuplicateOverride { date: NaiveDate },

    #[error("{field} is {value}, must be between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },

    #[error(
        "minimum notice ({min_notice_minutes} min) exceeds the booking horizon \
         ({horizon_minutes} min): nothing could ever be booked"
    )]
    NoticeBeyondHorizon {
        min_notice_minutes: u32,
        horizon_minutes: u32,
    },

    #[error("window is inverted: from {from} is after to {to}")]
    InvertedWindow {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },

    #[error(
        "window of {} is longer than the maximum of {}",
        Human(*len),
        Human(*max)
    )]
    WindowTooLong { len: TimeDelta, max: TimeDelta },
}
