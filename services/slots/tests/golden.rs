//! Hand-checked scenarios. DST dates are asserted against chrono-tz inside each
//! test so a wrong assumption about the tz database fails loudly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is a test failure (clippy.toml only exempts #[test] fns)"
)]

use berth_slots::{
    AppointmentType, BusyInterval, Claim, DateOverride, LocalInterval, MAX_WINDOW, OverrideHours,
    Schedule, Slot, SlotError, WallTime, WeeklyHours, Window, compute_slots,
};
use chrono::{DateTime, Datelike, LocalResult, NaiveDate, TimeDelta, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

const WEEKDAYS: [Weekday; 5] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
];
const ALL_DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn iv(start: &str, end: &str) -> LocalInterval {
    LocalInterval::parse(start, end).unwrap()
}

fn schedule(tz: Tz, days: &[Weekday], intervals: &[LocalInterval]) -> Schedule {
    Schedule {
        time_zone: tz,
        weekly: WeeklyHours::on_days(days, intervals),
        overrides: Vec::new(),
    }
}

fn appt(duration: u32, interval: u32) -> AppointmentType {
    AppointmentType {
        id: "consult".into(),
        duration_minutes: duration,
        interval_minutes: interval,
        buffer_before_minutes: 0,
        buffer_after_minutes: 0,
        min_notice_minutes: 0,
        horizon_minutes: 365 * 24 * 60,
        capacity: 1,
    }
}

/// The unique instant of an unambiguous local time.
fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .unwrap_or_else(|| panic!("{y}-{mo}-{d} {h}:{mi} is not unique in {tz}"))
        .with_timezone(&Utc)
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn local_mapping(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> LocalResult<DateTime<Tz>> {
    tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
}

/// "HH:MM+offset" of each slot start in `tz`, for readable assertions.
fn local_starts(tz: Tz, slots: &[Slot]) -> Vec<String> {
    slots
        .iter()
        .map(|s| s.start.with_timezone(&tz).format("%H:%M%:z").to_string())
        .collect()
}

fn on_date(tz: Tz, slots: &[Slot], date: NaiveDate) -> Vec<Slot> {
    slots
        .iter()
        .filter(|s| s.start.with_timezone(&tz).date_naive() == date)
        .copied()
        .collect()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Whole local day `date` as a window.
fn day_window(tz: Tz, date: NaiveDate) -> Window {
    let from = date.and_hms_opt(0, 0, 0).unwrap();
    let to = date.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap();
    Window::new(
        berth_slots::first_instant_at_or_after(tz, from).unwrap(),
        berth_slots::first_instant_at_or_after(tz, to).unwrap(),
    )
    .unwrap()
}

fn assert_sorted_unique(slots: &[Slot]) {
    assert!(
        slots.windows(2).all(|w| w[0].start < w[1].start),
        "not strictly sorted: {slots:?}"
    );
}

fn claim(start: DateTime<Utc>, minutes: i64, ty: &str, seats: u32) -> Claim {
    Claim {
        start,
        end: start + TimeDelta::minutes(minutes),
        appointment_type: ty.into(),
        seats,
        buffer_before_minutes: 0,
        buffer_after_minutes: 0,
    }
}

const BERLIN: Tz = chrono_tz::Europe::Berlin;

fn berlin_week() -> Schedule {
    schedule(
        BERLIN,
        &WEEKDAYS,
        &[iv("09:00", "12:00"), iv("13:00", "17:00")],
    )
}

#[test]
fn normal_week() {
    let s = berlin_week();
    let a = appt(60, 30);
    // Mon 2026-06-01 .. Mon 2026-06-08 local.
    let w = Window::new(at(BERLIN, 2026, 6, 1, 0, 0), at(BERLIN, 2026, 6, 8, 0, 0)).unwrap();
    let slots = compute_slots(&s, &a, &[], &[], w, utc("2026-05-01T00:00:00Z")).unwrap();

    assert_eq!(slots.len(), 5 * 12);
    assert_sorted_unique(&slots);
    assert!(slots.iter().all(|s| s.remaining == 1));
    assert!(
        slots
            .iter()
            .all(|s| s.end - s.start == TimeDelta::minutes(60))
    );
    let monday = on_date(BERLIN, &slots, date(2026, 6, 1));
    assert_eq!(
        local_starts(BERLIN, &monday),
        [
            "09:00+02:00",
            "09:30+02:00",
            "10:00+02:00",
            "10:30+02:00",
            "11:00+02:00",
            "13:00+02:00",
            "13:30+02:00",
            "14:00+02:00",
            "14:30+02:00",
            "15:00+02:00",
            "15:30+02:00",
            "16:00+02:00",
        ]
    );
    for weekend in [date(2026, 6, 6), date(2026, 6, 7)] {
        assert!(on_date(BERLIN, &slots, weekend).is_empty());
    }
}

#[test]
fn buffers_on_slot_claim_and_busy() {
    let s = schedule(BERLIN, &WEEKDAYS, &[iv("09:00", "17:00")]);
    let mut a = appt(30, 15);
    a.buffer_before_minutes = 10;
    a.buffer_after_minutes = 20;
    let day = date(2026, 6, 2);
    let mut c = claim(at(BERLIN, 2026, 6, 2, 12, 0), 60, "other", 1);
    c.buffer_before_minutes = 30;
    c.buffer_after_minutes = 5;
    let busy = BusyInterval {
        start: at(BERLIN, 2026, 6, 2, 15, 0),
        end: at(BERLIN, 2026, 6, 2, 15, 30),
    };
    let slots = compute_slots(
        &s,
        &a,
        &[c],
        &[busy],
        day_window(BERLIN, day),
        utc("2026-05-01T00:00:00Z"),
    )
    .unwrap();
    let starts = local_starts(BERLIN, &slots);
    // Claim 12:00-13:00: facing gaps are max(slot after 20, claim before 30) =
    // 30 before it and max(slot before 10, claim after 5) = 10 after it, so
    // starts in (11:00, 13:10) are blocked.
    assert!(starts.contains(&"11:00+02:00".to_owned()));
    for blocked in ["11:15", "11:30", "12:00", "12:45", "13:00"] {
        assert!(!starts.contains(&format!("{blocked}+02:00")), "{blocked}");
    }
    assert!(starts.contains(&"13:15+02:00".to_owned()));
    // Busy 15:00-15:30 has no buffers of its own: the slot's 20 after and
    // 10 before block starts in (14:10, 15:40).
    assert!(starts.contains(&"14:00+02:00".to_owned()));
    for blocked in ["14:15", "15:00", "15:30"] {
        assert!(!starts.contains(&format!("{blocked}+02:00")), "{blocked}");
    }
    assert!(starts.contains(&"15:45+02:00".to_owned()));
    assert_eq!(slots.len(), 32 - 9 - 6);
}

#[test]
fn touching_claims_do_not_block_and_bad_claims_are_ignored() {
    let s = schedule(BERLIN, &WEEKDAYS, &[iv("09:00", "12:00")]);
    let a = appt(60, 60);
    let day = date(2026, 6, 2);
    let ten = at(BERLIN, 2026, 6, 2, 10, 0);
    let claims = [
        // Ends exactly when the 10:00 slot starts, starts when it ends.
        claim(ten - TimeDelta::minutes(30), 30, "other", 1),
        claim(ten + TimeDelta::minutes(60), 30, "other", 1),
        // Inverted and empty: occupy nothing.
        claim(ten, -60, "other", 1),
        claim(ten, 0, "other", 1),
    ];
    let slots = compute_slots(
        &s,
        &a,
        &claims,
        &[],
        day_window(BERLIN, day),
        utc("2026-05-01T00:00:00Z"),
    )
    .unwrap();
    assert!(local_starts(BERLIN, &slots).contains(&"10:00+02:00".to_owned()));
}

#[test]
fn min_notice_is_inclusive_and_in_real_time() {
    let s = berlin_week();
    let mut a = appt(60, 30);
    a.min_notice_minutes = 120;
    let day = date(2026, 6, 1);
    let first =
        |now| compute_slots(&s, &a, &[], &[], day_window(BERLIN, day), now).unwrap()[0].start;
    // now + notice = 12:10: morning gone, first slot 13:00.
    assert_eq!(
        first(at(BERLIN, 2026, 6, 1, 10, 10)),
        at(BERLIN, 2026, 6, 1, 13, 0)
    );
    // now + notice = 11:00 exactly: 11:00 is still offered.
    assert_eq!(
        first(at(BERLIN, 2026, 6, 1, 9, 0)),
        at(BERLIN, 2026, 6, 1, 11, 0)
    );
}

#[test]
fn horizon_is_inclusive() {
    let s = berlin_week();
    let mut a = appt(60, 30);
    let now = at(BERLIN, 2026, 6, 1, 9, 0);
    a.horizon_minutes = 2 * 24 * 60; // now + horizon = Wed 09:00
    let w = Window::new(now, now + TimeDelta::days(7)).unwrap();
    let slots = compute_slots(&s, &a, &[], &[], w, now).unwrap();
    assert_eq!(slots.last().unwrap().start, at(BERLIN, 2026, 6, 3, 9, 0));
    assert_eq!(slots.len(), 12 + 12 + 1);
}

#[test]
fn window_selects_by_start_and_partitions() {
    let s = berlin_week();
    let a = appt(60, 30);
    let now = utc("2026-05-01T00:00:00Z");
    let (from, mid, to) = (
        at(BERLIN, 2026, 6, 1, 0, 0),
        at(BERLIN, 2026, 6, 3, 10, 30),
        at(BERLIN, 2026, 6, 5, 0, 0),
    );
    let all = compute_slots(&s, &a, &[], &[], Window::new(from, to).unwrap(), now).unwrap();
    let left = compute_slots(&s, &a, &[], &[], Window::new(from, mid).unwrap(), now).unwrap();
    let right = compute_slots(&s, &a, &[], &[], Window::new(mid, to).unwrap(), now).unwrap();
    assert_eq!(right[0].start, mid, "a slot starting at `from` is included");
    assert!(left.iter().all(|s| s.start < mid));
    assert_eq!([left, right].concat(), all);
    let empty = compute_slots(&s, &a, &[], &[], Window::new(mid, mid).unwrap(), now).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn capacity_and_shared_seats() {
    let s = schedule(BERLIN, &WEEKDAYS, &[iv("09:00", "13:00")]);
    let mut a = appt(60, 30);
    a.capacity = 3;
    let t = |h, m| at(BERLIN, 2026, 6, 2, h, m);
    let claims = [
        // Two seats taken in the 10:00 slot, by two bookings.
        claim(t(10, 0), 60, "consult", 1),
        claim(t(10, 0), 60, "consult", 1),
        // The 12:00 slot is full.
        claim(t(12, 0), 60, "consult", 3),
    ];
    let slots = compute_slots(
        &s,
        &a,
        &claims,
        &[],
        day_window(BERLIN, date(2026, 6, 2)),
        utc("2026-05-01T00:00:00Z"),
    )
    .unwrap();
    let got: Vec<(String, u32)> = local_starts(BERLIN, &slots)
        .into_iter()
        .zip(slots.iter().map(|s| s.remaining))
        .collect();
    // 09:30, 10:30 overlap the 10:00 seats at another start; 11:30 overlaps
    // the 12:00 claim; 12:00 is full; 11:00 only touches both.
    assert_eq!(
        got,
        [
            ("09:00+02:00".to_owned(), 3),
            ("10:00+02:00".to_owned(), 1),
            ("11:00+02:00".to_owned(), 3)
        ]
    );
}

#[test]
fn same_start_claims_that_are_not_seats_block() {
    let s = schedule(BERLIN, &WEEKDAYS, &[iv("09:00", "12:00")]);
    let mut a = appt(60, 60);
    a.capacity = 5;
    let ten = at(BERLIN, 2026, 6, 2, 10, 0);
    let run = |c: Claim| {
        let slots = compute_slots(
            &s,
            &a,
            &[c],
            &[],
            day_window(BERLIN, date(2026, 6, 2)),
            utc("2026-05-01T00:00:00Z"),
        )
        .unwrap();
        slots.iter().find(|s| s.start == ten).map(|s| s.remaining)
    };
    assert_eq!(run(claim(ten, 60, "consult", 2)), Some(3));
    assert_eq!(run(claim(ten, 60, "other-type", 1)), None);
    assert_eq!(run(claim(ten, 45, "consult", 1)), None, "different length");
    assert_eq!(run(claim(ten, 60, "consult", 5)), None, "full");
}

#[test]
fn overrides_closed_and_extra_hours() {
    let mut s = berlin_week();
    s.overrides = vec![
        DateOverride {
            date: date(2026, 6, 2),
            hours: OverrideHours::Closed,
        },
        DateOverride {
            date: date(2026, 6, 3),
            hours: OverrideHours::Open(vec![iv("18:00", "20:00")]),
        },
        // A Saturday, normally closed.
        DateOverride {
            date: date(2026, 6, 6),
            hours: OverrideHours::Open(vec![iv("10:00", "12:00")]),
        },
    ];
    let a = appt(60, 60);
    let w = Window::new(at(BERLIN, 2026, 6, 1, 0, 0), at(BERLIN, 2026, 6, 8, 0, 0)).unwrap();
    let slots = compute_slots(&s, &a, &[], &[], w, utc("2026-05-01T00:00:00Z")).unwrap();
    assert_eq!(on_date(BERLIN, &slots, date(2026, 6, 1)).len(), 3 + 4);
    assert!(on_date(BERLIN, &slots, date(2026, 6, 2)).is_empty());
    assert_eq!(
        local_starts(BERLIN, &on_date(BERLIN, &slots, date(2026, 6, 3))),
        ["18:00+02:00", "19:00+02:00"]
    );
    assert_eq!(
        local_starts(BERLIN, &on_date(BERLIN, &slots, date(2026, 6, 6))),
        ["10:00+02:00", "11:00+02:00"]
    );
    assert!(on_date(BERLIN, &slots, date(2026, 6, 7)).is_empty());
}

const NEW_YORK: Tz = chrono_tz::America::New_York;

#[test]
fn new_york_spring_forward_skips_the_missing_hour() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    assert!(matches!(
        local_mapping(NEW_YORK, 2026, 3, 8, 2, 0),
        LocalResult::None
    ));
    assert!(matches!(
        local_mapping(NEW_YORK, 2026, 3, 8, 2, 30),
        LocalResult::None
    ));
    assert!(matches!(
        local_mapping(NEW_YORK, 2026, 3, 8, 1, 59),
        LocalResult::Single(_)
    ));
    assert!(matches!(
        local_mapping(NEW_YORK, 2026, 3, 8, 3, 0),
        LocalResult::Single(_)
    ));

    let day = date(2026, 3, 8);
    let s = schedule(NEW_YORK, &[Weekday::Sun], &[iv("01:00", "04:00")]);
    let slots = compute_slots(
        &s,
        &appt(30, 30),
        &[],
        &[],
        day_window(NEW_YORK, day),
        utc("2026-03-01T00:00:00Z"),
    )
    .unwrap();
    // Two real hours between 01:00 EST and 04:00 EDT: four slots, none at 02:xx.
    assert_eq!(
        local_starts(NEW_YORK, &slots),
        ["01:00-05:00", "01:30-05:00", "03:00-04:00", "03:30-04:00"]
    );
    assert_eq!(
        slots.iter().map(|s| s.start).collect::<Vec<_>>(),
        [
            utc("2026-03-08T06:00:00Z"),
            utc("2026-03-08T06:30:00Z"),
            utc("2026-03-08T07:00:00Z"),
            utc("2026-03-08T07:30:00Z"),
        ]
    );
    assert!(
        slots
            .iter()
            .all(|s| s.end - s.start == TimeDelta::minutes(30))
    );
}

#[test]
fn interval_ending_inside_the_spring_forward_gap() {
    assert!(matches!(
        local_mapping(NEW_YORK, 2026, 3, 8, 2, 30),
        LocalResult::None
    ));
    // Work "until 02:30" on a night that skips 02:00-03:00 ends when the gap
    // ends, 03:00 EDT = 07:00Z.
    let s = schedule(NEW_YORK, &[Weekday::Sun], &[iv("01:00", "02:30")]);
    let slots = compute_slots(
        &s,
        &appt(45, 15),
        &[],
        &[],
        day_window(NEW_YORK, date(2026, 3, 8)),
        utc("2026-03-01T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        local_starts(NEW_YORK, &slots),
        ["01:00-05:00", "01:15-05:00"]
    );
    assert_eq!(slots[1].end, utc("2026-03-08T07:00:00Z"));
}

#[test]
fn new_york_fall_back_has_no_duplicate_instants() {
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST, 01:xx happens twice.
    assert!(matches!(
        local_mapping(NEW_YORK, 2026, 11, 1, 1, 0),
        LocalResult::Ambiguous(_, _)
    ));
    assert!(matches!(
        local_mapping(NEW_YORK, 2026, 11, 1, 1, 30),
        LocalResult::Ambiguous(_, _)
    ));
    assert!(matches!(
        local_mapping(NEW_YORK, 2026, 11, 1, 2, 0),
        LocalResult::Single(_)
    ));

    let day = date(2026, 11, 1);
    let s = schedule(NEW_YORK, &[Weekday::Sun], &[iv("01:00", "04:00")]);
    let now = utc("2026-10-01T00:00:00Z");
    let slots = compute_slots(&s, &appt(30, 30), &[], &[], day_window(NEW_YORK, day), now).unwrap();
    // First occurrence of 01:00 and 01:30 only; the repeated hour (06:00Z-07:00Z)
    // is not offered a second time.
    assert_eq!(
        local_starts(NEW_YORK, &slots),
        [
            "01:00-04:00",
            "01:30-04:00",
            "02:00-05:00",
            "02:30-05:00",
            "03:00-05:00",
            "03:30-05:00"
        ]
    );
    assert_sorted_unique(&slots);
    assert_eq!(slots[1].end, utc("2026-11-01T06:00:00Z"));
    assert_eq!(slots[2].start, utc("2026-11-01T07:00:00Z"));

    // Duration is real time: a 90-minute appointment at 01:30 EDT ends at
    // 02:00 EST on the wall clock, inside the 01:00-04:00 day.
    let long = compute_slots(&s, &appt(90, 30), &[], &[], day_window(NEW_YORK, day), now).unwrap();
    assert_eq!(long[1].start, utc("2026-11-01T05:30:00Z"));
    assert_eq!(long[1].end, utc("2026-11-01T07:00:00Z"));
    assert_sorted_unique(&long);
}

const LORD_HOWE: Tz = chrono_tz::Australia::Lord_Howe;

#[test]
fn lord_howe_half_hour_spring_forward() {
    // 2026-10-04: 02:00 (+10:30) jumps to 02:30 (+11:00).
    for m in [0, 15, 29] {
        assert!(matches!(
            local_mapping(LORD_HOWE, 2026, 10, 4, 2, m),
            LocalResult::None
        ));
    }
    assert!(matches!(
        local_mapping(LORD_HOWE, 2026, 10, 4, 2, 30),
        LocalResult::Single(_)
    ));
    assert!(matches!(
        local_mapping(LORD_HOWE, 2026, 10, 4, 1, 59),
        LocalResult::Single(_)
    ));

    let s = schedule(LORD_HOWE, &ALL_DAYS, &[iv("01:00", "04:00")]);
    let slots = compute_slots(
        &s,
        &appt(30, 15),
        &[],
        &[],
        day_window(LORD_HOWE, date(2026, 10, 4)),
        utc("2026-09-01T00:00:00Z"),
    )
    .unwrap();
    let starts = local_starts(LORD_HOWE, &slots);
    assert_eq!(
        starts,
        [
            "01:00+10:30",
            "01:15+10:30",
            "01:30+10:30",
            "01:45+10:30",
            "02:30+11:00",
            "02:45+11:00",
            "03:00+11:00",
            "03:15+11:00",
            "03:30+11:00",
        ]
    );
    // 01:45 + 30 real minutes = 02:45 on the wall clock.
    assert_eq!(
        slots[3]
            .end
            .with_timezone(&LORD_HOWE)
            .format("%H:%M")
            .to_string(),
        "02:45"
    );
}

#[test]
fn lord_howe_half_hour_fall_back() {
    // 2026-04-05: 02:00 (+11:00) falls back to 01:30 (+10:30).
    assert!(matches!(
        local_mapping(LORD_HOWE, 2026, 4, 5, 1, 30),
        LocalResult::Ambiguous(_, _)
    ));
    assert!(matches!(
        local_mapping(LORD_HOWE, 2026, 4, 5, 1, 45),
        LocalResult::Ambiguous(_, _)
    ));
    assert!(matches!(
        local_mapping(LORD_HOWE, 2026, 4, 5, 1, 29),
        LocalResult::Single(_)
    ));
    assert!(matches!(
        local_mapping(LORD_HOWE, 2026, 4, 5, 2, 0),
        LocalResult::Single(_)
    ));

    let s = schedule(LORD_HOWE, &ALL_DAYS, &[iv("01:00", "03:00")]);
    let slots = compute_slots(
        &s,
        &appt(30, 30),
        &[],
        &[],
        day_window(LORD_HOWE, date(2026, 4, 5)),
        utc("2026-03-01T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        local_starts(LORD_HOWE, &slots),
        ["01:00+11:00", "01:30+11:00", "02:00+10:30", "02:30+10:30"]
    );
    assert_eq!(
        slots.iter().map(|s| s.start).collect::<Vec<_>>(),
        [
            utc("2026-04-04T14:00:00Z"),
            utc("2026-04-04T14:30:00Z"),
            // 15:00Z is the second 01:30 (+10:30): not offered again.
            utc("2026-04-04T15:30:00Z"),
            utc("2026-04-04T16:00:00Z"),
        ]
    );
}

#[test]
fn apia_skipped_day_has_no_slots() {
    let apia: Tz = chrono_tz::Pacific::Apia;
    for h in [0, 9, 12, 23] {
        assert!(
            matches!(local_mapping(apia, 2011, 12, 30, h, 0), LocalResult::None),
            "2011-12-30 {h}:00 should not exist in Apia"
        );
    }
    assert!(matches!(
        local_mapping(apia, 2011, 12, 29, 23, 59),
        LocalResult::Single(_)
    ));
    assert!(matches!(
        local_mapping(apia, 2011, 12, 31, 0, 0),
        LocalResult::Single(_)
    ));

    let s = schedule(apia, &ALL_DAYS, &[iv("00:00", "24:00")]);
    let w = Window::new(at(apia, 2011, 12, 28, 0, 0), at(apia, 2012, 1, 2, 0, 0)).unwrap();
    let slots = compute_slots(&s, &appt(60, 60), &[], &[], w, utc("2011-12-01T00:00:00Z")).unwrap();
    assert_sorted_unique(&slots);
    assert!(on_date(apia, &slots, date(2011, 12, 30)).is_empty());
    // The 29th ends at 24:00, i.e. where the gap ends: the 23:00 slot fits.
    let d29 = on_date(apia, &slots, date(2011, 12, 29));
    assert_eq!(d29.len(), 24);
    assert_eq!(d29[23].end, at(apia, 2011, 12, 31, 0, 0));
    assert_eq!(on_date(apia, &slots, date(2011, 12, 31)).len(), 24);
    assert_eq!(slots.len(), 4 * 24);
}

#[test]
fn santiago_midnight_spring_forward() {
    // Chile moves its clocks at local midnight; find the 2026 spring-forward
    // Sunday from the tz database itself.
    let tz: Tz = chrono_tz::America::Santiago;
    let day = (1..=30)
        .map(|d| date(2026, 9, d))
        .find(|d| matches!(local_mapping(tz, 2026, 9, d.day(), 0, 0), LocalResult::None))
        .expect("Santiago springs forward at midnight in September 2026");
    let s = schedule(tz, &ALL_DAYS, &[iv("00:00", "02:00")]);
    let slots = compute_slots(
        &s,
        &appt(30, 30),
        &[],
        &[],
        Window::new(at(tz, 2026, 8, 1, 12, 0), at(tz, 2026, 10, 1, 0, 0)).unwrap(),
        utc("2026-08-01T00:00:00Z"),
    )
    .unwrap();
    // The day starts at 01:00: 00:00 and 00:30 do not exist.
    assert_eq!(
        local_starts(tz, &on_date(tz, &slots, day)),
        ["01:00-03:00", "01:30-03:00"]
    );
    assert_sorted_unique(&slots);
}

#[test]
fn rule_validation() {
    let s = berlin_week();
    let w = Window::new(utc("2026-06-01T00:00:00Z"), utc("2026-06-02T00:00:00Z")).unwrap();
    let now = utc("2026-05-01T00:00:00Z");
    let err = |a: AppointmentType| compute_slots(&s, &a, &[], &[], w, now).unwrap_err();
    let out_of_range = |e: SlotError| match e {
        SlotError::OutOfRange { field, .. } => field,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        out_of_range(err(appt(0, 30))),
        "duration_minutes",
        "zero duration"
    );
    assert_eq!(out_of_range(err(appt(30, 0))), "interval_minutes");
    assert_eq!(out_of_range(err(appt(24 * 60 + 1, 30))), "duration_minutes");
    let mut a = appt(30, 30);
    a.capacity = 0;
    assert_eq!(out_of_range(err(a)), "capacity");
    let mut a = appt(30, 30);
    a.horizon_minutes = 0;
    assert_eq!(out_of_range(err(a)), "horizon_minutes");
    let mut a = appt(30, 30);
    a.buffer_after_minutes = 5000;
    assert_eq!(out_of_range(err(a)), "buffer_after_minutes");
    let mut a = appt(30, 30);
    a.horizon_minutes = 60;
    a.min_notice_minutes = 61;
    assert!(matches!(err(a), SlotError::NoticeBeyondHorizon { .. }));

    // Negative numbers cannot even be deserialized.
    let json = r#"{"id":"x","duration_minutes":30,"interval_minutes":30,
                   "horizon_minutes":-1,"capacity":1}"#;
    assert!(serde_json::from_str::<AppointmentType>(json).is_err());
}

#[test]
fn schedule_validation() {
    let a = appt(30, 30);
    let w = Window::new(utc("2026-06-01T00:00:00Z"), utc("2026-06-02T00:00:00Z")).unwrap();
    let now = utc("2026-05-01T00:00:00Z");
    let err = |s: Schedule| compute_slots(&s, &a, &[], &[], w, now).unwrap_err();

    let t = |s: &str| s.parse::<WallTime>().unwrap();
    let mut s = berlin_week();
    s.weekly.tuesday = vec![LocalInterval {
        start: t("10:00"),
        end: t("10:00"),
    }];
    assert!(matches!(err(s), SlotError::EmptyInterval { .. }));
    assert!(LocalInterval::parse("12:00", "09:00").is_err());

    let mut s = berlin_week();
    s.weekly.wednesday = vec![iv("13:00", "17:00"), iv("09:00", "13:30")];
    let e = err(s);
    assert!(matches!(e, SlotError::OverlappingIntervals { .. }));
    assert_eq!(
        e.to_string(),
        "working intervals 09:00-13:30 and 13:00-17:00 overlap in weekly hours on Wed"
    );

    // Touching intervals are fine.
    let mut s = berlin_week();
    s.weekly.wednesday = vec![iv("13:00", "17:00"), iv("09:00", "13:00")];
    assert!(s.validate().is_ok());

    let mut s = berlin_week();
    s.overrides = vec![DateOverride {
        date: date(2026, 6, 1),
        hours: OverrideHours::Open(vec![iv("09:00", "11:00"), iv("10:00", "12:00")]),
    }];
    assert!(matches!(
        err(s),
        SlotError::OverlappingIntervals {
            day: berth_slots::DayRef::Date(_),
            ..
        }
    ));

    let mut s = berlin_week();
    s.overrides = vec![
        DateOverride {
            date: date(2026, 6, 1),
            hours: OverrideHours::Closed,
        },
        DateOverride {
            date: date(2026, 6, 1),
            hours: OverrideHours::Closed,
        },
    ];
    assert!(matches!(err(s), SlotError::DuplicateOverride { .. }));

    for bad in [
        "24:01", "25:00", "9:5", "09:60", "abc", "", "09:00:00", "-1:00",
    ] {
        assert!(bad.parse::<WallTime>().is_err(), "{bad:?}");
    }
    assert_eq!(t("24:00"), WallTime::END_OF_DAY);
    assert_eq!(t("7:05").to_string(), "07:05");
}

#[test]
fn window_validation_and_cap() {
    let (a, b) = (utc("2026-06-01T00:00:00Z"), utc("2026-06-02T00:00:00Z"));
    assert!(matches!(
        Window::new(b, a),
        Err(SlotError::InvertedWindow { .. })
    ));
    let inverted = Window { from: b, to: a };
    assert!(compute_slots(&berlin_week(), &appt(30, 30), &[], &[], inverted, a).is_err());

    let ok = Window::new(a, a + MAX_WINDOW).unwrap();
    assert!(ok.ensure_max_len(MAX_WINDOW).is_ok());
    let long = Window::new(a, a + MAX_WINDOW + TimeDelta::minutes(1)).unwrap();
    let e = long.ensure_max_len(MAX_WINDOW).unwrap_err();
    assert!(matches!(e, SlotError::WindowTooLong { .. }));
    assert_eq!(
        e.to_string(),
        "window of 62d 1m is longer than the maximum of 62d"
    );
}

#[test]
fn rules_roundtrip_through_json() {
    let json = r#"{
        "time_zone": "America/New_York",
        "weekly": {
            "monday": [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "24:00"}]
        },
        "overrides": [
            {"date": "2026-12-25", "hours": {"kind": "closed"}},
            {"date": "2026-12-26", "hours": {"kind": "open", "intervals": [{"start": "10:00", "end": "14:00"}]}}
        ]
    }"#;
    let s: Schedule = serde_json::from_str(json).unwrap();
    assert_eq!(s.time_zone, NEW_YORK);
    assert_eq!(s.weekly.monday[1].end, WallTime::END_OF_DAY);
    assert!(s.weekly.sunday.is_empty());
    assert_eq!(s.overrides[0].hours, OverrideHours::Closed);
    s.validate().unwrap();
    let back: Schedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);

    let a = appt(30, 15);
    let back: AppointmentType = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(back, a);

    assert!(serde_json::from_str::<WallTime>(r#""24:30""#).is_err());
    assert!(
        serde_json::from_str::<Schedule>(r#"{"time_zone":"Mars/Olympus","weekly":{}}"#).is_err()
    );
}

#[test]
fn extreme_instants_do_not_panic() {
    let (min, max) = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
    let year = TimeDelta::days(366);
    let mut a = appt(30, 15);
    a.horizon_minutes = berth_slots::MAX_HORIZON_MINUTES;
    let claims = [claim(max - TimeDelta::hours(5), 60, "consult", 1)];
    for tz in [
        chrono_tz::Etc::GMTPlus12,
        chrono_tz::Pacific::Kiritimati,
        NEW_YORK,
    ] {
        let s = schedule(tz, &ALL_DAYS, &[iv("00:00", "24:00")]);
        for (from, to, now) in [
            (min, max, min),
            (min, min + year, min),
            (max - year, max, max - year),
            (max - year, max, max),
            (min, max, max),
        ] {
            let w = Window::new(from, to).unwrap();
            let slots = compute_slots(&s, &a, &claims, &[], w, now).unwrap();
            assert_sorted_unique(&slots);
        }
    }
}
