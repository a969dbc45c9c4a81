//! Property tests: random rules, claims, busy times, windows and zones (weighted
//! towards DST transitions). One proptest per documented rule, each checked
//! directly against the rule as written in the crate docs, plus an exact
//! comparison with a naive O(slots x claims) reference implementation so that
//! wrongly *dropped* slots are caught too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is a test failure (clippy.toml only exempts #[test] fns)"
)]

use berth_slots::{
    AppointmentType, BusyInterval, Claim, DateOverride, LocalInterval, OverrideHours, Schedule,
    Slot, WallTime, WeeklyHours, Window, compute_slots,
};
use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::sample::Index;

/// Zones with DST, half-hour and 45-minute offsets, midnight transitions,
/// negative DST (Dublin) and a skipped day (Apia).
const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Europe/London",
    "Europe/Dublin",
    "Australia/Lord_Howe",
    "Australia/Adelaide",
    "Pacific/Apia",
    "Pacific/Chatham",
    "America/Santiago",
    "America/St_Johns",
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "Africa/Casablanca",
];

/// (zone, local date near a clock change). Dates only steer the generator
/// towards transitions; nothing depends on them being exact.
const TRANSITIONS: &[(&str, (i32, u32, u32))] = &[
    ("America/New_York", (2026, 3, 8)),
    ("America/New_York", (2026, 11, 1)),
    ("Europe/London", (2026, 3, 29)),
    ("Europe/Dublin", (2026, 10, 25)),
    ("Australia/Lord_Howe", (2026, 10, 4)),
    ("Australia/Lord_Howe", (2026, 4, 5)),
    ("Australia/Adelaide", (2026, 4, 5)),
    ("Pacific/Apia", (2011, 12, 30)),
    ("Pacific/Apia", (2011, 9, 24)),
    ("Pacific/Chatham", (2026, 9, 27)),
    ("Pacific/Chatham", (2026, 4, 5)),
    ("America/Santiago", (2026, 9, 6)),
    ("America/Santiago", (2026, 4, 5)),
    ("America/St_Johns", (2026, 11, 1)),
];

const TYPE: &str = "a";

#[derive(Debug, Clone)]
struct Scenario {
    schedule: Schedule,
    appt: AppointmentType,
    claims: Vec<Claim>,
    busy: Vec<BusyInterval>,
    window: Window,
    now: DateTime<Utc>,
}

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

/// 0-3 non-overlapping (possibly touching) intervals on a 15-minute grid,
/// in either order (stored rules need not be sorted).
fn day_hours() -> impl Strategy<Value = Vec<LocalInterval>> {
    (prop::collection::vec(0u32..=96, 0..=6), any::<bool>()).prop_map(|(mut cuts, reversed)| {
        cuts.sort_unstable();
        cuts.dedup();
        let mut hours: Vec<LocalInterval> = cuts
            .chunks_exact(2)
            .map(|c| LocalInterval {
                start: WallTime::from_minutes(c[0] * 15).unwrap(),
                end: WallTime::from_minutes(c[1] * 15).unwrap(),
            })
            .collect();
        if reversed {
            hours.reverse();
        }
        hours
    })
}

fn weekly() -> impl Strategy<Value = WeeklyHours> {
    prop::collection::vec(day_hours(), 7).prop_map(|d| WeeklyHours {
        monday: d[0].clone(),
        tuesday: d[1].clone(),
        wednesday: d[2].clone(),
        thursday: d[3].clone(),
        friday: d[4].clone(),
        saturday: d[5].clone(),
        sunday: d[6].clone(),
    })
}

fn appointment() -> impl Strategy<Value = AppointmentType> {
    (
        1u32..=36,
        1u32..=24,
        0u32..=12,
        0u32..=12,
        0u32..=2880,
        0u32..=20 * 24 * 60,
        1u32..=4,
    )
        .prop_map(|(d, i, bb, ba, notice, extra, cap)| AppointmentType {
            id: TYPE.into(),
            duration_minutes: d * 5,
            interval_minutes: i * 5,
            buffer_before_minutes: bb * 5,
            buffer_after_minutes: ba * 5,
            min_notice_minutes: notice,
            horizon_minutes: (notice + extra).max(1),
            capacity: cap,
        })
}

/// A zone and a starting instant, half the time right before a clock change.
fn zone_and_anchor() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
    let near_transition = prop::sample::select(TRANSITIONS).prop_map(|(z, (y, m, d))| {
        let anchor = NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            - TimeDelta::days(1);
        (tz(z), anchor)
    });
    let anywhere = (prop::sample::select(ZONES), 0i64..15_000).prop_map(|(z, days)| {
        let anchor = NaiveDate::from_ymd_opt(2000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            + TimeDelta::days(days);
        (tz(z), anchor)
    });
    prop_oneof![near_transition, anywhere]
}

/// Intervals as (offset from window start in minutes, length in minutes).
fn spans(max: usize) -> impl Strategy<Value = Vec<(i64, i64)>> {
    prop::collection::vec((-24 * 12i64..=7 * 24 * 12, 1i64..=48), 0..=max)
        .prop_map(|v| v.into_iter().map(|(o, l)| (o * 5, l * 5)).collect())
}

/// ((offset, length), same type?, seats, buffer before, buffer after) in 5-minute units.
type ClaimSpec = ((i64, i64), bool, u32, u32, u32);

#[derive(Debug, Clone)]
struct Spec {
    zone: Tz,
    weekly: WeeklyHours,
    overrides: Vec<(i64, Option<Vec<LocalInterval>>)>,
    appt: AppointmentType,
    from: DateTime<Utc>,
    len_minutes: i64,
    now_offset_minutes: i64,
    busy: Vec<(i64, i64)>,
    claims: Vec<ClaimSpec>,
    seat_picks: Vec<(Index, u32, bool, bool)>,
    /// Put an interval around the first clock change near the window start:
    /// (quarter hours it starts before the change, its length in quarters).
    focus: Option<(u32, u32)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        zone_and_anchor(),
        weekly(),
        prop::collection::vec((0i64..8, prop::option::of(day_hours())), 0..=3),
        appointment(),
        (
            0i64..=48 * 60,
            0i64..=6 * 24 * 60,
            -3 * 24 * 60i64..=2 * 24 * 60,
        ),
        spans(6),
        prop::collection::vec(
            (
                (-24 * 12i64..=7 * 24 * 12, 1i64..=48),
                any::<bool>(),
                0u32..=3,
                0u32..=6,
                0u32..=6,
            ),
            0..=15,
        ),
        prop::collection::vec(
            (
                any::<Index>(),
                0u32..=4,
                any::<bool>(),
                prop::bool::weighted(0.8),
            ),
            0..=6,
        ),
        prop::option::weighted(0.5, (0u32..=12, 1u32..=16)),
    )
        .prop_map(
            |(
                (zone, anchor),
                weekly,
                overrides,
                appt,
                (start, len, now),
                busy,
                claims,
                picks,
                focus,
            )| {
                Spec {
                    zone,
                    weekly,
                    overrides,
                    appt,
                    from: anchor + TimeDelta::minutes(start),
                    len_minutes: len,
                    now_offset_minutes: now,
                    busy,
                    claims,
                    seat_picks: picks,
                    focus,
                }
            },
        )
}

/// Turn a spec into concrete inputs. Seat claims are placed on real slots of
/// the claim-free result, so the shared-seat rule is actually exercised (and,
/// with another type, the rule that only the same type shares seats).
fn materialize(spec: &Spec) -> Scenario {
    let from = spec.from;
    let local_from = from.with_timezone(&spec.zone).date_naive();
    let mut overrides: Vec<DateOverride> = Vec::new();
    for (day, hours) in &spec.overrides {
        let date = local_from + TimeDelta::days(*day);
        if overrides.iter().any(|o| o.date == date) {
            continue;
        }
        overrides.push(DateOverride {
            date,
            hours: match hours {
                None => OverrideHours::Closed,
                Some(h) => OverrideHours::Open(h.clone()),
            },
        });
    }
    if let Some((before, len)) = spec.focus
        && let Some((date, change)) = first_clock_change(spec.zone, local_from - TimeDelta::days(1))
    {
        let start = change.saturating_sub(before * 15);
        let end = (start + len * 15).min(24 * 60);
        overrides.retain(|o| o.date != date);
        overrides.push(DateOverride {
            date,
            hours: OverrideHours::Open(vec![LocalInterval {
                start: WallTime::from_minutes(start).unwrap(),
                end: WallTime::from_minutes(end).unwrap(),
            }]),
        });
    }
    let schedule = Schedule {
        time_zone: spec.zone,
        weekly: spec.weekly.clone(),
        overrides,
    };
    let window = Window::new(from, from + TimeDelta::minutes(spec.len_minutes)).unwrap();
    let now = from + TimeDelta::minutes(spec.now_offset_minutes);
    let at = |offset: i64| from + TimeDelta::minutes(offset);
    let busy: Vec<BusyInterval> = spec
        .busy
        .iter()
        .map(|&(o, l)| BusyInterval {
            start: at(o),
            end: at(o + l),
        })
        .collect();
    let mut claims: Vec<Claim> = spec
        .claims
        .iter()
        .map(|&((o, l), same_type, seats, bb, ba)| Claim {
            start: at(o),
            end: at(o + l),
            appointment_type: if same_type { TYPE } else { "b" }.into(),
            seats,
            buffer_before_minutes: bb * 5,
            buffer_after_minutes: ba * 5,
        })
        .collect();
    let free = compute_slots(&schedule, &spec.appt, &[], &[], window, now).unwrap();
    if !free.is_empty() {
        for (idx, seats, own_buffers, same_type) in &spec.seat_picks {
            let slot = free[idx.index(free.len())];
            let (bb, ba) = if *own_buffers {
                (
                    spec.appt.buffer_before_minutes,
                    spec.appt.buffer_after_minutes,
                )
            } else {
                (0, 0)
            };
            claims.push(Claim {
                start: slot.start,
                end: slot.end,
                appointment_type: if *same_type { TYPE } else { "b" }.into(),
                seats: *seats,
                buffer_before_minutes: bb,
                buffer_after_minutes: ba,
            });
        }
    }
    Scenario {
        schedule,
        appt: spec.appt.clone(),
        claims,
        busy,
        window,
        now,
    }
}

/// The first local wall-clock minute (on a 5-minute grid) within four days
/// from `from` that is skipped or repeated, as (date, minutes after midnight).
fn first_clock_change(tz: Tz, from: NaiveDate) -> Option<(NaiveDate, u32)> {
    (0..4).find_map(|d| {
        let date = from + TimeDelta::days(d);
        (0..24 * 60).step_by(5).find_map(|m| {
            let unique = tz.from_local_datetime(&(midnight(date) + mins(m))).single();
            unique.is_none().then_some((date, m))
        })
    })
}

fn run(sc: &Scenario) -> Vec<Slot> {
    compute_slots(
        &sc.schedule,
        &sc.appt,
        &sc.claims,
        &sc.busy,
        sc.window,
        sc.now,
    )
    .unwrap()
}

fn mins(m: u32) -> TimeDelta {
    TimeDelta::minutes(i64::from(m))
}

fn overlaps(a0: DateTime<Utc>, a1: DateTime<Utc>, b0: DateTime<Utc>, b1: DateTime<Utc>) -> bool {
    a0 < b1 && b0 < a1
}

/// The documented seat exception: same type, exactly this slot.
fn is_seat_of(c: &Claim, sc: &Scenario, s: &Slot) -> bool {
    c.appointment_type == sc.appt.id && c.start == s.start && c.end == s.end
}

/// Does claim `c` block slot `s` (ignoring the seat exception)?
fn claim_blocks(c: &Claim, sc: &Scenario, s: &Slot) -> bool {
    let a = &sc.appt;
    c.start < c.end
        && (overlaps(
            s.start - mins(a.buffer_before_minutes),
            s.end + mins(a.buffer_after_minutes),
            c.start,
            c.end,
        ) || overlaps(
            s.start,
            s.end,
            c.start - mins(c.buffer_before_minutes),
            c.end + mins(c.buffer_after_minutes),
        ))
}

fn busy_blocks(b: &BusyInterval, sc: &Scenario, s: &Slot) -> bool {
    let a = &sc.appt;
    overlaps(
        s.start - mins(a.buffer_before_minutes),
        s.end + mins(a.buffer_after_minutes),
        b.start,
        b.end,
    )
}

/// First instant whose wall-clock reading is `local` or later, found by a
/// different method than the crate's (walking local minutes over a gap).
fn first_instant_ref(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut t = local;
    loop {
        if let Some(x) = tz.from_local_datetime(&t).earliest() {
            return x.with_timezone(&Utc);
        }
        t += TimeDelta::minutes(1);
    }
}

fn midnight(date: NaiveDate) -> NaiveDateTime {
    date.and_time(NaiveTime::MIN)
}

/// Naive reference: every rule checked literally, every claim against every
/// candidate.
fn reference(sc: &Scenario) -> Vec<Slot> {
    let tz = sc.schedule.time_zone;
    let a = &sc.appt;
    let first = sc.window.from.with_timezone(&tz).date_naive() - TimeDelta::days(2);
    let last = sc.window.to.with_timezone(&tz).date_naive() + TimeDelta::days(2);
    let mut out = Vec::new();
    let mut date = first;
    while date <= last {
        for iv in sc.schedule.hours_on(date) {
            let bound = first_instant_ref(tz, midnight(date) + mins(iv.end.minutes()));
            let mut m = iv.start.minutes();
            while m < iv.end.minutes() {
                let local = midnight(date) + mins(m);
                m += a.interval_minutes;
                let Some(start) = tz.from_local_datetime(&local).earliest() else {
                    continue;
                };
                let start = start.with_timezone(&Utc);
                let slot = Slot {
                    start,
                    end: start + a.duration(),
                    remaining: 0,
                };
                let in_bounds = slot.end <= bound
                    && sc.window.from <= start
                    && start < sc.window.to
                    && start >= sc.now + a.min_notice()
                    && start <= sc.now + a.horizon();
                let blocked = sc.busy.iter().any(|b| busy_blocks(b, sc, &slot))
                    || sc
                        .claims
                        .iter()
                        .any(|c| !is_seat_of(c, sc, &slot) && claim_blocks(c, sc, &slot));
                let taken: u32 = sc
                    .claims
                    .iter()
                    .filter(|c| is_seat_of(c, sc, &slot))
                    .map(|c| c.seats)
                    .sum();
                if in_bounds && !blocked && taken < a.capacity {
                    out.push(Slot {
                        remaining: a.capacity - taken,
                        ..slot
                    });
                }
            }
        }
        date = date.succ_opt().unwrap();
    }
    out.sort();
    out.dedup_by_key(|s| s.start);
    out
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_slot_conflicts_with_claims_or_busy_times(spec in spec()) {
        let sc = materialize(&spec);
        for s in run(&sc) {
            for b in &sc.busy {
                prop_assert!(!busy_blocks(b, &sc, &s), "{s:?} blocked by busy {b:?}");
            }
            for c in &sc.claims {
                prop_assert!(
                    is_seat_of(c, &sc, &s) || !claim_blocks(c, &sc, &s),
                    "{s:?} blocked by claim {c:?}"
                );
            }
        }
    }

    #[test]
    fn every_slot_lies_in_working_hours(spec in spec()) {
        let sc = materialize(&spec);
        let tz = sc.schedule.time_zone;
        for s in run(&sc) {
            prop_assert_eq!(s.end - s.start, sc.appt.duration(), "real duration");
            let local = s.start.with_timezone(&tz).naive_local();
            let date = local.date();
            prop_assert_eq!(local.second(), 0);
            // The start is the first occurrence of its wall-clock reading.
            prop_assert_eq!(
                tz.from_local_datetime(&local).earliest().map(|t| t.with_timezone(&Utc)),
                Some(s.start)
            );
            let m = local.hour() * 60 + local.minute();
            let fits = sc.schedule.hours_on(date).iter().any(|iv| {
                (iv.start.minutes()..iv.end.minutes()).contains(&m)
                    && (m - iv.start.minutes()) % sc.appt.interval_minutes == 0
                    && s.end <= first_instant_ref(tz, midnight(date) + mins(iv.end.minutes()))
            });
            prop_assert!(fits, "{s:?} (local {local}) outside {:?}", sc.schedule.hours_on(date));
        }
    }

    #[test]
    fn no_slot_before_notice_or_beyond_horizon(spec in spec()) {
        let sc = materialize(&spec);
        for s in run(&sc) {
            prop_assert!(s.start >= sc.now + sc.appt.min_notice(), "{s:?} before notice");
            prop_assert!(s.start <= sc.now + sc.appt.horizon(), "{s:?} beyond horizon");
        }
    }

    #[test]
    fn remaining_seats_are_capacity_minus_seats_taken(spec in spec()) {
        let sc = materialize(&spec);
        for s in run(&sc) {
            let taken: u32 = sc.claims.iter().filter(|c| is_seat_of(c, &sc, &s)).map(|c| c.seats).sum();
            prop_assert!(s.remaining >= 1 && s.remaining <= sc.appt.capacity, "{s:?}");
            prop_assert_eq!(s.remaining, sc.appt.capacity.saturating_sub(taken));
        }
    }

    #[test]
    fn output_is_sorted_without_duplicates(spec in spec()) {
        let sc = materialize(&spec);
        let slots = run(&sc);
        for w in slots.windows(2) {
            prop_assert!(w[0].start < w[1].start, "{:?} then {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn slots_start_inside_the_window(spec in spec()) {
        let sc = materialize(&spec);
        for s in run(&sc) {
            prop_assert!(sc.window.from <= s.start && s.start < sc.window.to, "{s:?} outside {:?}", sc.window);
        }
    }

    #[test]
    fn matches_naive_reference(spec in spec()) {
        let sc = materialize(&spec);
        prop_assert_eq!(run(&sc), reference(&sc));
    }

    /// Claims and busy times may come in any order.
    #[test]
    fn input_order_does_not_matter(spec in spec()) {
        let mut sc = materialize(&spec);
        let before = run(&sc);
        sc.claims.reverse();
        sc.busy.reverse();
        prop_assert_eq!(run(&sc), before);
    }
}

/// A schedule with one interval whose ends sit on a 5-minute grid around a
/// real clock change (so starts and ends land inside gaps and repeated hours),
/// the whole transition day in the window, and nothing else in the way.
fn dst_edge() -> impl Strategy<Value = Scenario> {
    (
        prop::sample::select(TRANSITIONS),
        0u32..=36,
        0u32..=36,
        1u32..=24,
        1u32..=12,
    )
        .prop_filter_map(
            "no clock change found",
            |((zone, (y, m, d)), before, after, duration, interval)| {
                let tz = tz(zone);
                let anchor = NaiveDate::from_ymd_opt(y, m, d).unwrap() - TimeDelta::days(1);
                let (date, change) = first_clock_change(tz, anchor)?;
                let start = change.saturating_sub(before * 5);
                let end = (change + after * 5).min(24 * 60);
                if start >= end {
                    return None;
                }
                let mut weekly = WeeklyHours::default();
                *weekly.day_mut(date.weekday()) = vec![LocalInterval {
                    start: WallTime::from_minutes(start).unwrap(),
                    end: WallTime::from_minutes(end).unwrap(),
                }];
                let from = first_instant_ref(tz, midnight(date - TimeDelta::days(1)));
                Some(Scenario {
                    schedule: Schedule {
                        time_zone: tz,
                        weekly,
                        overrides: Vec::new(),
                    },
                    appt: AppointmentType {
                        id: TYPE.into(),
                        duration_minutes: duration * 5,
                        interval_minutes: interval * 5,
                        buffer_before_minutes: 0,
                        buffer_after_minutes: 0,
                        min_notice_minutes: 0,
                        horizon_minutes: 365 * 24 * 60,
                        capacity: 1,
                    },
                    claims: Vec::new(),
                    busy: Vec::new(),
                    window: Window::new(from, from + TimeDelta::days(3)).unwrap(),
                    now: from - TimeDelta::days(1),
                })
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// DST edges checked against both the working-hours rule and the reference.
    #[test]
    fn clock_change_edges(sc in dst_edge()) {
        let slots = run(&sc);
        prop_assert_eq!(&slots, &reference(&sc));
        let tz = sc.schedule.time_zone;
        for s in &slots {
            let local = s.start.with_timezone(&tz).naive_local();
            let iv = sc.schedule.weekly.day(local.date().weekday())[0];
            let m = local.hour() * 60 + local.minute();
            prop_assert!((iv.start.minutes()..iv.end.minutes()).contains(&m));
            prop_assert!(s.end <= first_instant_ref(tz, midnight(local.date()) + mins(iv.end.minutes())));
        }
    }
}

/// Guard against a generator that never reaches the interesting cases: over a
/// fixed sample, a decent share of scenarios must produce slots, include
/// seat claims that matter, and block something.
#[test]
fn generator_reaches_interesting_cases() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut with_slots, mut with_seats, mut with_blocking, mut with_gap) = (0, 0, 0, 0);
    for _ in 0..400 {
        let sc = materialize(&spec().new_tree(&mut runner).unwrap().current());
        let slots = run(&sc);
        let tz = sc.schedule.time_zone;
        with_slots += usize::from(!slots.is_empty());
        with_seats += usize::from(slots.iter().any(|s| s.remaining < sc.appt.capacity));
        let free = compute_slots(&sc.schedule, &sc.appt, &[], &[], sc.window, sc.now).unwrap();
        with_blocking += usize::from(free.len() > slots.len());
        let day = sc.window.from.with_timezone(&tz).date_naive();
        with_gap += usize::from((0..8).any(|d| {
            let date = day + TimeDelta::days(d);
            (0..48).any(|h| {
                tz.from_local_datetime(&(midnight(date) + mins(h * 30)))
                    .single()
                    .is_none()
            })
        }));
    }
    assert!(
        with_slots > 150,
        "only {with_slots}/400 scenarios have slots"
    );
    assert!(with_seats > 20, "only {with_seats}/400 use seats");
    assert!(with_blocking > 100, "only {with_blocking}/400 block");
    assert!(with_gap > 80, "only {with_gap}/400 span a clock change");
}
