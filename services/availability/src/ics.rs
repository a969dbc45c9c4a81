//! iCalendar (RFC 5545) busy times: the `VEVENT`s of a feed as UTC intervals.
//!
//! Parsing (line unfolding, components, parameters) is the `icalendar`
//! crate's; recurrence rules are expanded by the `rrule` crate; this module
//! interprets times. Timed events honour `TZID` (IANA names) or `Z`;
//! floating times, unknown zones (e.g. Windows names) and all-day dates are
//! read in the resource's zone. Events marked `TRANSP:TRANSPARENT` or
//! `STATUS:CANCELLED` are not busy. `RRULE` occurrences from a day ago to
//! [`EXPAND_AHEAD`] ahead are expanded, minus `EXDATE`s and occurrences
//! replaced by a `RECURRENCE-ID` event (which counts on its own).

use std::collections::HashSet;

use berth_slots::{BusyInterval, first_instant_at_or_after};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use icalendar::parser::{Component, Property, read_calendar, unfold};

/// More events than any sensible availability feed has; bounds the work.
pub const MAX_EVENTS: usize = 20_000;
/// How far ahead recurring events are expanded (feeds are re-read on every
/// refresh, so the horizon moves along).
pub const EXPAND_AHEAD: TimeDelta = TimeDelta::days(400);
/// Occurrences kept per recurring event.
const MAX_OCCURRENCES: u16 = 2_000;

/// Busy intervals of every opaque, non-cancelled event in `text`, as of
/// `now` (which places the recurrence window). Events whose times cannot be
/// read are skipped; a document that is not iCalendar at all is an error.
pub fn busy_times(text: &str, zone: Tz, now: DateTime<Utc>) -> Result<Vec<BusyInterval>, String> {
    // Databases refuse NUL in text; refuse it here, as bad input.
    if text.contains('\0') {
        return Err("not an iCalendar document (contains NUL bytes)".to_owned());
    }
    let unfolded = unfold(text);
    let calendar = read_calendar(&unfolded).map_err(|e| first_line(&e))?;
    let has_vcalendar = unfolded
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("BEGIN:VCALENDAR");
    if !has_vcalendar {
        return Err("not an iCalendar document (no BEGIN:VCALENDAR)".to_owned());
    }
    let mut events = Vec::new();
    collect_events(&calendar.components, &mut events);
    if events.len() > MAX_EVENTS {
        return Err(format!("more than {MAX_EVENTS} events"));
    }
    // Occurrences that a RECURRENCE-ID event replaces, by UID.
    let replaced: HashSet<(String, DateTime<Utc>)> = events
        .iter()
        .filter_map(|e| {
            let uid = prop(e, "UID")?.val.as_str().to_owned();
            let at = read_time(prop(e, "RECURRENCE-ID")?, zone)?.instant(zone)?;
            Some((uid, at))
        })
        .collect();
    let window = (now - TimeDelta::days(1), now + EXPAND_AHEAD);
    let mut busy: Vec<BusyInterval> = events
        .into_iter()
        .flat_map(|e| event_busy(e, zone, window, &replaced))
        .collect();
    busy.sort_by_key(|b| (b.start, b.end));
    busy.dedup();
    Ok(busy)
}

fn first_line(error: &str) -> String {
    let line = error
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("unreadable");
    format!("not a valid iCalendar document: {}", line.trim())
}

fn collect_events<'a>(components: &'a [Component<'a>], out: &mut Vec<&'a Component<'a>>) {
    for c in components {
        if c.name.as_str().eq_ignore_ascii_case("VEVENT") {
            out.push(c);
        }
        collect_events(&c.components, out);
    }
}

fn prop<'a>(event: &'a Component<'a>, name: &str) -> Option<&'a Property<'a>> {
    event
        .properties
        .iter()
        .find(|p| p.name.as_str().eq_ignore_ascii_case(name))
}

fn props<'a>(event: &'a Component<'a>, name: &'a str) -> impl Iterator<Item = &'a Property<'a>> {
    event
        .properties
        .iter()
        .filter(move |p| p.name.as_str().eq_ignore_ascii_case(name))
}

fn param<'a>(p: &'a Property<'a>, key: &str) -> Option<&'a str> {
    p.params
        .iter()
        .find(|x| x.key.as_str().eq_ignore_ascii_case(key))
        .and_then(|x| x.val.as_ref())
        .map(|v| v.as_str().trim_matches('"'))
}

/// The event's busy intervals: one, or one per occurrence in `window`.
fn event_busy(
    event: &Component<'_>,
    zone: Tz,
    window: (DateTime<Utc>, DateTime<Utc>),
    replaced: &HashSet<(String, DateTime<Utc>)>,
) -> Vec<BusyInterval> {
    let value = |name: &str| prop(event, name).map(|p| p.val.as_str().trim().to_ascii_uppercase());
    if value("TRANSP").as_deref() == Some("TRANSPARENT")
        || value("STATUS").as_deref() == Some("CANCELLED")
    {
        return Vec::new();
    }
    let Some(start) = prop(event, "DTSTART").and_then(|p| read_time(p, zone)) else {
        return Vec::new();
    };
    let end = match (prop(event, "DTEND"), prop(event, "DURATION")) {
        (Some(end), _) => read_time(end, zone),
        (None, Some(duration)) => parse_duration(duration.val.as_str()).and_then(|d| start.add(d)),
        // RFC 5545: a date lasts one day, a date-time no time at all.
        (None, None) => match start {
            Moment::Date(d) => d.succ_opt().map(Moment::Date),
            _ => None,
        },
    };
    let Some(span) = end.and_then(|end| Span::between(start, end, zone)) else {
        return Vec::new();
    };
    let starts = match prop(event, "RRULE") {
        Some(rule) if prop(event, "RECURRENCE-ID").is_none() => {
            let uid = prop(event, "UID")
                .map(|p| p.val.as_str().to_owned())
                .unwrap_or_default();
            let excluded: HashSet<DateTime<Utc>> = props(event, "EXDATE")
                .flat_map(|p| exdates(p, zone))
                .collect();
            occurrences(start, rule.val.as_str(), zone, window)
                .into_iter()
                .filter(|m| {
                    let at = m.instant(zone);
                    at.is_some_and(|at| {
                        !excluded.contains(&at) && !replaced.contains(&(uid.clone(), at))
                    })
                })
                .collect()
        }
        _ => vec![start],
    };
    starts
        .into_iter()
        .filter_map(|s| {
            let start = s.instant(zone)?;
            let end = span.end(s, zone)?;
            (start < end).then_some(BusyInterval { start, end })
        })
        .collect()
}

/// A point in time as the feed wrote it.
#[derive(Debug, Clone, Copy)]
enum Moment {
    Date(NaiveDate),
    Utc(DateTime<Utc>),
    Local(NaiveDateTime, Tz),
}

impl Moment {
    fn instant(self, zone: Tz) -> Option<DateTime<Utc>> {
        match self {
            Moment::Utc(t) => Some(t),
            // A time skipped by a DST jump means the moment the gap ends.
            Moment::Local(t, tz) => first_instant_at_or_after(tz, t),
            Moment::Date(d) => first_instant_at_or_after(zone, d.and_hms_opt(0, 0, 0)?),
        }
    }

    fn add(self, delta: TimeDelta) -> Option<Moment> {
        match self {
            // A day-based duration on a date stays a date (local midnights).
            Moment::Date(d) if delta.num_seconds() % 86_400 == 0 => {
                Some(Moment::Date(d.checked_add_signed(delta)?))
            }
            Moment::Date(_) => None,
            Moment::Utc(t) => Some(Moment::Utc(t.checked_add_signed(delta)?)),
            Moment::Local(t, tz) => Some(Moment::Local(t.checked_add_signed(delta)?, tz)),
        }
    }
}

/// How long each occurrence lasts: whole local days for all-day events,
/// elapsed time otherwise.
#[derive(Debug, Clone, Copy)]
enum Span {
    Days(u64),
    Elapsed(TimeDelta),
}

impl Span {
    fn between(start: Moment, end: Moment, zone: Tz) -> Option<Span> {
        match (start, end) {
            (Moment::Date(s), Moment::Date(e)) => {
                u64::try_from((e - s).num_days()).ok().map(Span::Days)
            }
            (s, e) => Some(Span::Elapsed(e.instant(zone)? - s.instant(zone)?)),
        }
    }

    fn end(self, start: Moment, zone: Tz) -> Option<DateTime<Utc>> {
        match (self, start) {
            (Span::Days(n), Moment::Date(d)) => {
                Moment::Date(d.checked_add_days(chrono::Days::new(n))?).instant(zone)
            }
            (Span::Elapsed(delta), s) => s.instant(zone)?.checked_add_signed(delta),
            (Span::Days(_), _) => None,
        }
    }
}

/// `DTSTART`/`DTEND` and friends: `VALUE=DATE` `YYYYMMDD`, UTC
/// `YYYYMMDDTHHMMSSZ`, or local `YYYYMMDDTHHMMSS` in `TZID` (or the
/// resource's zone if absent or unknown).
fn read_time(p: &Property<'_>, zone: Tz) -> Option<Moment> {
    read_value(p.val.as_str(), param(p, "VALUE"), param(p, "TZID"), zone)
}

fn read_value(raw: &str, value: Option<&str>, tzid: Option<&str>, zone: Tz) -> Option<Moment> {
    let raw = raw.trim();
    if raw.len() == 8 || value.is_some_and(|v| v.eq_ignore_ascii_case("DATE")) {
        return NaiveDate::parse_from_str(raw.get(..8)?, "%Y%m%d")
            .ok()
            .map(Moment::Date);
    }
    if let Some(utc) = raw.strip_suffix('Z').or_else(|| raw.strip_suffix('z')) {
        let t = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S").ok()?;
        return Some(Moment::Utc(t.and_utc()));
    }
    let local = NaiveDateTime::parse_from_str(raw, "%Y%m%dT%H%M%S").ok()?;
    let tz = tzid
        .and_then(|id| id.trim_start_matches('/').parse::<Tz>().ok())
        .unwrap_or(zone);
    Some(Moment::Local(local, tz))
}

/// The instants an `EXDATE` (possibly a comma-separated list) removes.
fn exdates(p: &Property<'_>, zone: Tz) -> Vec<DateTime<Utc>> {
    p.val
        .as_str()
        .split(',')
        .filter_map(|v| read_value(v, param(p, "VALUE"), param(p, "TZID"), zone)?.instant(zone))
        .collect()
}

/// Starts of a recurring event within `window`, in the same form as its
/// `DTSTART` (so all-day events stay dates and local times stay local
/// across DST changes). An unreadable rule keeps just the first occurrence.
fn occurrences(
    start: Moment,
    rule: &str,
    zone: Tz,
    window: (DateTime<Utc>, DateTime<Utc>),
) -> Vec<Moment> {
    let (dtstart, tz) = match start {
        Moment::Utc(t) => (format!("DTSTART:{}", t.format("%Y%m%dT%H%M%SZ")), None),
        Moment::Local(t, tz) => (
            format!("DTSTART;TZID={}:{}", tz.name(), t.format("%Y%m%dT%H%M%S")),
            Some(tz),
        ),
        Moment::Date(d) => (
            format!("DTSTART;TZID={}:{}T000000", zone.name(), d.format("%Y%m%d")),
            Some(zone),
        ),
    };
    let set: rrule::RRuleSet = match format!("{dtstart}\nRRULE:{}", rule.trim()).parse() {
        Ok(set) => set,
        Err(error) => {
            tracing::debug!(%error, rule, "unreadable RRULE; using the first occurrence only");
            return vec![start];
        }
    };
    let bound = |t: DateTime<Utc>| t.with_timezone(&rrule::Tz::UTC);
    set.after(bound(window.0))
        .before(bound(window.1))
        .all(MAX_OCCURRENCES)
        .dates
        .into_iter()
        .map(|occurrence| match (start, tz) {
            (Moment::Date(_), _) => Moment::Date(occurrence.date_naive()),
            (_, Some(tz)) => Moment::Local(occurrence.naive_local(), tz),
            (_, None) => Moment::Utc(occurrence.with_timezone(&Utc)),
        })
        .collect()
}

/// RFC 5545 durations: `[+-]P[nW]` or `[+-]P[nD][T[nH][nM][nS]]`.
fn parse_duration(raw: &str) -> Option<TimeDelta> {
    let raw = raw.trim();
    let (sign, rest) = match raw.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, raw.strip_prefix('+').unwrap_or(raw)),
    };
    let rest = rest.strip_prefix('P')?;
    let mut seconds: i64 = 0;
    let mut number = String::new();
    let mut in_time = false;
    for ch in rest.chars() {
        match ch {
            '0'..='9' => number.push(ch),
            'T' if number.is_empty() => in_time = true,
            unit => {
                let n: i64 = number.parse().ok()?;
                number.clear();
                let scale = match (unit, in_time) {
                    ('W', false) => 7 * 86_400,
                    ('D', false) => 86_400,
                    ('H', true) => 3600,
                    ('M', true) => 60,
                    ('S', true) => 1,
                    _ => return None,
                };
                seconds = seconds.checked_add(n.checked_mul(scale)?)?;
            }
        }
    }
    if !number.is_empty() {
        return None;
    }
    TimeDelta::try_seconds(sign * seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
BEGIN:VEVENT\r\nUID:timed\r\nDTSTART;TZID=Europe/Berlin:20260601T100000\r\n\
DTEND;TZID=Europe/Berlin:20260601T113000\r\nSUMMARY:Dentist\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:allday\r\nDTSTART;VALUE=DATE:20260602\r\nDTEND;VALUE=DATE:20260603\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:cancelled\r\nDTSTART:20260603T080000Z\r\nDTEND:20260603T090000Z\r\nSTATUS:CANCELLED\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:free\r\nDTSTART:20260604T080000Z\r\nDURATION:PT1H\r\nTRANSP:TRANSPARENT\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:utc-duration\r\nDTSTART:20260605T080000Z\r\nDURATION:PT1H30M\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn reads_timed_all_day_and_skips_cancelled_and_free() {
        let busy = busy_times(FEED, chrono_tz::Europe::Berlin, at("2026-05-01T00:00:00Z")).unwrap();
        assert_eq!(
            busy,
            vec![
                BusyInterval {
                    start: at("2026-06-01T08:00:00Z"),
                    end: at("2026-06-01T09:30:00Z")
                },
                // All day in the resource's zone (CEST).
                BusyInterval {
                    start: at("2026-06-01T22:00:00Z"),
                    end: at("2026-06-02T22:00:00Z")
                },
                BusyInterval {
                    start: at("2026-06-05T08:00:00Z"),
                    end: at("2026-06-05T09:30:00Z")
                },
            ]
        );
    }

    #[test]
    fn rejects_non_calendars() {
        let now = Utc::now();
        assert!(busy_times("hello world", chrono_tz::UTC, now).is_err());
        assert!(busy_times("<html></html>", chrono_tz::UTC, now).is_err());
        assert!(
            busy_times(
                "BEGIN:VCALENDAR\r\n\0END:VCALENDAR\r\n",
                chrono_tz::UTC,
                now
            )
            .is_err()
        );
    }

    /// Weekly at 10:00 Berlin across the October DST change, minus one
    /// EXDATE, with one occurrence moved by a RECURRENCE-ID event.
    #[test]
    fn expands_recurring_events() {
        let feed = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n\
BEGIN:VEVENT\r\nUID:weekly\r\nDTSTART;TZID=Europe/Berlin:20261012T100000\r\n\
DTEND;TZID=Europe/Berlin:20261012T110000\r\nRRULE:FREQ=WEEKLY;COUNT=5\r\n\
EXDATE;TZID=Europe/Berlin:20261019T100000\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:weekly\r\nRECURRENCE-ID;TZID=Europe/Berlin:20261102T100000\r\n\
DTSTART;TZID=Europe/Berlin:20261102T140000\r\nDTEND;TZID=Europe/Berlin:20261102T150000\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:days\r\nDTSTART;VALUE=DATE:20261224\r\nDTEND;VALUE=DATE:20261226\r\n\
RRULE:FREQ=YEARLY\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";
        let busy = busy_times(feed, chrono_tz::Europe::Berlin, at("2026-10-01T00:00:00Z")).unwrap();
        let starts: Vec<_> = busy.iter().map(|b| (b.start, b.end - b.start)).collect();
        let hour = TimeDelta::hours(1);
        assert_eq!(
            starts,
            vec![
                (at("2026-10-12T08:00:00Z"), hour), // CEST
                (at("2026-10-26T09:00:00Z"), hour), // CET from Oct 25: still 10:00 local
                (at("2026-11-02T13:00:00Z"), hour), // moved to 14:00
                (at("2026-11-09T09:00:00Z"), hour),
                (at("2026-12-23T23:00:00Z"), TimeDelta::days(2)),
            ]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT1H30M"), Some(TimeDelta::minutes(90)));
        assert_eq!(parse_duration("P1W"), Some(TimeDelta::days(7)));
        assert_eq!(parse_duration("P1DT2H"), Some(TimeDelta::hours(26)));
        assert_eq!(parse_duration("-PT15M"), Some(TimeDelta::minutes(-15)));
        assert_eq!(parse_duration("PT"), Some(TimeDelta::zero()));
        assert_eq!(parse_duration("1H"), None);
        assert_eq!(parse_duration("PT5"), None);
    }
}
