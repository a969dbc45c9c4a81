//! The slot computation: generate candidate starts in local time, then sweep
//! them once against the sorted blocking intervals.

use std::cmp::{max, min};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::SlotError;
use crate::model::{
    AppointmentType, BusyInterval, Claim, DateOverride, LocalInterval, Schedule, Slot, Window,
    minutes,
};

/// Bookable slots for one appointment type on one resource.
///
/// Pure and deterministic: the result depends only on the arguments (`now` is
/// passed in rather than read from the clock). Validates `schedule`,
/// `appointment` and `window` first; claims and busy times are taken as they
/// come, in any order, and empty or inverted ones (`end <= start`) occupy no
/// time and are ignored. Does not cap the window: callers facing user input
/// should call [`Window::ensure_max_len`] first (the horizon bounds the work
/// either way).
///
/// Returns slots sorted by start, with distinct starts, each with
/// `1..=capacity` seats remaining. The rules are in the crate docs. Only
/// slots starting in years 1..=9999 exist, so extreme instants are harmless.
pub fn compute_slots(
    schedule: &Schedule,
    appointment: &AppointmentType,
    claims: &[Claim],
    busy: &[BusyInterval],
    window: Window,
    now: DateTime<Utc>,
) -> Result<Vec<Slot>, SlotError> {
    schedule.validate()?;
    appointment.validate()?;
    window.validate()?;
    let Some(bounds) = StartBounds::new(appointment, window, now) else {
        return Ok(Vec::new());
    };
    let candidates = candidates(schedule, appointment, &bounds);
    Ok(select(appointment, claims, busy, &candidates))
}

/// Slots only start in years 1..=9999 (`[0001-01-01, 10000-01-01)` UTC). Far
/// inside chrono's range, so local-time conversions with a day of margin and
/// any UTC offset can never overflow, whatever instants callers pass in.
const SUPPORTED_FROM: DateTime<Utc> = match DateTime::from_timestamp(-62_135_596_800, 0) {
    Some(t) => t,
    None => panic!("0001-01-01 is representable"), // evaluated at compile time
};
const SUPPORTED_UNTIL: DateTime<Utc> = match DateTime::from_timestamp(253_402_300_800, 0) {
    Some(t) => t,
    None => panic!("10000-01-01 is representable"), // evaluated at compile time
};

/// Where a slot may start: `earliest <= start < before` and `start <= latest`.
struct StartBounds {
    /// `max(window.from, now + min_notice)`.
    earliest: DateTime<Utc>,
    /// `window.to` (exclusive).
    before: DateTime<Utc>,
    /// `now + horizon` (inclusive).
    latest: DateTime<Utc>,
}

impl StartBounds {
    /// `None` when no start can satisfy all bounds.
    fn new(appointment: &AppointmentType, window: Window, now: DateTime<Utc>) -> Option<Self> {
        // Overflow means the notice ends after the end of representable time.
        let notice_end = now.checked_add_signed(appointment.min_notice())?;
        let latest = now
            .checked_add_signed(appointment.horizon())
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let earliest = max(max(window.from, notice_end), SUPPORTED_FROM);
        let before = min(window.to, SUPPORTED_UNTIL);
        if earliest >= before || earliest > latest {
            return None;
        }
        Some(StartBounds {
            earliest,
            before,
            latest,
        })
    }

    fn is_past_end(&self, start: DateTime<Utc>) -> bool {
        start >= self.before || start > self.latest
    }
}

/// Candidate slots `(start, end)` that satisfy working hours, window, notice
/// and horizon, sorted by start without duplicates. Claims are not looked at.
fn candidates(
    schedule: &Schedule,
    appointment: &AppointmentType,
    bounds: &StartBounds,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let tz = schedule.time_zone;
    let mut overrides: Vec<&DateOverride> = schedule.overrides.iter().collect();
    overrides.sort_unstable_by_key(|o| o.date);

    // One local day of margin on each side: a slot's local date is the local
    // date of its start, and a zone that moves its clock back across midnight
    // can put an instant on the previous local date.
    let first_day = local_date(tz, bounds.earliest);
    let first_day = first_day.pred_opt().unwrap_or(first_day);
    let last_day = local_date(tz, min(bounds.before, bounds.latest));
    let last_day = last_day.succ_opt().unwrap_or(last_day);

    let mut out = Vec::new();
    let mut day = first_day;
    loop {
        let hours = match overrides.binary_search_by_key(&day, |o| o.date) {
            Ok(i) => overrides[i].hours.intervals(),
            Err(_) => schedule.weekly.day(day.weekday()),
        };
        let midnight = day.and_time(NaiveTime::MIN);
        for interval in hours {
            push_interval(tz, midnight, interval, appointment, bounds, &mut out);
        }
        match day.succ_opt() {
            Some(next) if day < last_day => day = next,
            _ => break,
        }
    }
    // Already in order for every real zone (earliest mappings increase with
    // local time); sorting makes sortedness and uniqueness hold regardless.
    out.sort_unstable();
    out.dedup_by_key(|c| c.0);
    out
}

/// Candidates from one working interval on one local day.
fn push_interval(
    tz: Tz,
    midnight: NaiveDateTime,
    interval: &LocalInterval,
    appointment: &AppointmentType,
    bounds: &StartBounds,
    out: &mut Vec<(DateTime<Utc>, DateTime<Utc>)>,
) {
    let Some(end_local) = midnight.checked_add_signed(minutes(interval.end.minutes())) else {
        return;
    };
    let Some(end_bound) = first_instant_at_or_after(tz, end_local) else {
        return;
    };
    let duration = appointment.duration();
    let mut m = interval.start.minutes();
    while m < interval.end.minutes() {
        let Some(local) = midnight.checked_add_signed(minutes(m)) else {
            return;
        };
        m += appointment.interval_minutes;
        // Skipped wall-clock times get no slot (not shifted); repeated ones
        // use their first occurrence only.
        let Some(start) = tz.from_local_datetime(&local).earliest() else {
            continue;
        };
        let start = start.with_timezone(&Utc);
        if bounds.is_past_end(start) {
            return;
        }
        let Some(end) = start.checked_add_signed(duration) else {
            return;
        };
        // Starts only grow from here on, so nothing later fits either.
        if end > end_bound {
            return;
        }
        if start >= bounds.earliest {
            out.push((start, end));
        }
    }
}

fn local_date(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// The first instant at which the wall clock in `tz` reads `local` or later:
/// the earliest mapping of `local`, or, when `local` falls in a gap (skipped
/// by a DST jump or a date-line change), the instant the gap ends.
///
/// `None` outside years 1..=9999 (where conversions could overflow).
pub fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let as_utc = local.and_utc();
    if as_utc < SUPPORTED_FROM || as_utc >= SUPPORTED_UNTIL {
        return None;
    }
    if let Some(t) = tz.from_local_datetime(&local).earliest() {
        return Some(t.with_timezone(&Utc));
    }
    // chrono-tz does not expose transitions, so binary-search UTC seconds for
    // the first one whose reading passes `local`. Real offsets are within
    // -12h..+14h, so +-27h around "local read as UTC" brackets the gap (Apia
    // skipped a whole day and still fits). Gaps are rare: ~18 lookups each.
    const BRACKET: i64 = 27 * 3600;
    let guess = as_utc.timestamp();
    let (mut lo, mut hi) = (guess - BRACKET, guess + BRACKET);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let reading = DateTime::from_timestamp(mid, 0)?
            .with_timezone(&tz)
            .naive_local();
        if reading < local {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// Microseconds since the epoch, rounded down. Whole microseconds keep the
/// sweep on plain `i64`s; rounding starts down and ends up only ever widens a
/// blocking interval, so sub-microsecond inputs can never unblock a slot.
fn floor_us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn ceil_us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros() + i64::from(!t.timestamp_subsec_nanos().is_multiple_of(1000))
}

fn minutes_us(m: u32) -> i64 {
    // At most u32::MAX * 6e7 < 2^58: cannot overflow.
    i64::from(m) * 60_000_000
}

/// Keep the candidates that no claim or busy time blocks and that still have
/// seats, in one sweep.
///
/// Every blocker becomes the open range `(lo, hi)` of slot starts it blocks
/// (see the crate docs for the bounds). Sorting the `lo`s and the `hi`s once
/// lets a single pass count, for each candidate start `s`, how many blockers
/// contain it: O((claims + busy + slots) log) instead of O(slots x claims).
/// A claim that is a seat in exactly this slot also contains `s`, so the slot
/// is open iff every blocker containing `s` is such a seat claim.
fn select(
    appointment: &AppointmentType,
    claims: &[Claim],
    busy: &[BusyInterval],
    candidates: &[(DateTime<Utc>, DateTime<Utc>)],
) -> Vec<Slot> {
    let (Some(&(first, _)), Some(&(last, _))) = (candidates.first(), candidates.last()) else {
        return Vec::new();
    };
    let (first, last) = (floor_us(first), floor_us(last));
    let duration = minutes_us(appointment.duration_minutes);
    let slot_before = minutes_us(appointment.buffer_before_minutes);
    let slot_after = minutes_us(appointment.buffer_after_minutes);

    let mut opens: Vec<i64> = Vec::with_capacity(claims.len() + busy.len());
    let mut closes: Vec<i64> = Vec::with_capacity(claims.len() + busy.len());
    // (start, seats) of claims that can be seats in a slot of this type.
    let mut seat_claims: Vec<(i64, u32)> = Vec::new();
    // Blockers that cannot contain any candidate are dropped up front.
    let mut push = |lo: i64, hi: i64| {
        let relevant = lo < last && hi > first;
        if relevant {
            opens.push(lo);
            closes.push(hi);
        }
        relevant
    };

    for b in busy.iter().filter(|b| b.start < b.end) {
        push(
            floor_us(b.start)
                .saturating_sub(slot_after)
                .saturating_sub(duration),
            ceil_us(b.end).saturating_add(slot_before),
        );
    }
    for c in claims.iter().filter(|c| c.start < c.end) {
        let facing_start = max(slot_after, minutes_us(c.buffer_before_minutes));
        let facing_end = max(slot_before, minutes_us(c.buffer_after_minutes));
        let relevant = push(
            floor_us(c.start)
                .saturating_sub(facing_start)
                .saturating_sub(duration),
            ceil_us(c.end).saturating_add(facing_end),
        );
        let seat = c.appointment_type == appointment.id
            && c.end - c.start == appointment.duration()
            && c.start.timestamp_subsec_nanos().is_multiple_of(1000);
        if relevant && seat {
            seat_claims.push((floor_us(c.start), c.seats));
        }
    }
    opens.sort_unstable();
    closes.sort_unstable();
    seat_claims.sort_unstable();

    let mut slots = Vec::with_capacity(candidates.len());
    let (mut opened, mut closed, mut seat_idx) = (0, 0, 0);
    for &(start, end) in candidates {
        let s = floor_us(start);
        while opened < opens.len() && opens[opened] < s {
            opened += 1;
        }
        while closed < closes.len() && closes[closed] <= s {
            closed += 1;
        }
        // Every blocker with hi <= s also has lo < hi <= s, so closed <= opened.
        let containing = opened - closed;
        while seat_idx < seat_claims.len() && seat_claims[seat_idx].0 < s {
            seat_idx += 1;
        }
        let (mut seats_here, mut taken) = (0, 0u32);
        while seat_idx < seat_claims.len() && seat_claims[seat_idx].0 == s {
            seats_here += 1;
            taken = taken.saturating_add(seat_claims[seat_idx].1);
            seat_idx += 1;
        }
        if containing > seats_here {
            continue;
        }
        let remaining = appointment.capacity.saturating_sub(taken);
        if remaining > 0 {
            slots.push(Slot {
                start,
                end,
                remaining,
            });
        }
    }
    slots
}
