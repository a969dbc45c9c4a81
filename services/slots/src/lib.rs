//! Pure slot computation: rules, claims and busy times in, bookable slots out.
//!
//! [`compute_slots`] is a pure function of
//! `(schedule, appointment type, claims, busy times, window, now)`; it does no
//! I/O and reads no clock, so the availability service can cache, test and
//! parallelise it freely.
//!
//! # Rules
//!
//! **Slot layout (local time).** For every local date `D` from the local date
//! of the window start to that of the window end, the date's working intervals
//! are its [`DateOverride`] if there is one, else the [`WeeklyHours`] of its
//! weekday. In each interval `[ws, we)` candidate starts are the wall-clock
//! times `D ws + k * interval` (`k = 0, 1, ...`) before `D we`.
//!
//! **Duration is real time.** A slot is `[start, start + duration)` in UTC:
//! an appointment lasts `duration` of elapsed time even across a DST change.
//!
//! **DST and other clock jumps.**
//! - A candidate whose wall-clock time does not exist (skipped by a spring
//!   forward, or a whole skipped day like Pacific/Apia 2011-12-30) gets no
//!   slot; it is not shifted to a later time.
//! - A candidate whose wall-clock time occurs twice (fall back) uses its first
//!   occurrence only, so no UTC instant is ever produced twice and the
//!   repeated hour is not offered a second time.
//! - A slot fits its interval iff it ends no later than the first instant at
//!   which the wall clock reads `D we` or later (see
//!   [`first_instant_at_or_after`]): the earliest occurrence of `D we`, or the
//!   end of the gap if `D we` is skipped. So a fall-back night has one more
//!   real hour to fill and a spring-forward night one less. `24:00` means the
//!   next day's `00:00`.
//!
//! **Window, notice, horizon.** A slot is returned only if its *start* `s`
//! satisfies `window.from <= s < window.to`, `s >= now + min_notice` and
//! `s <= now + horizon`. Selecting by start lets adjacent windows partition the
//! slots.
//!
//! **Blocking.** Intervals are half-open, so touching is not overlapping.
//! - A busy time `[b0, b1)` blocks slot `[s, e)` iff the slot widened by its
//!   own buffers, `[s - buffer_before, e + buffer_after)`, overlaps it.
//! - A claim `[c0, c1)` blocks slot `[s, e)` iff the widened slot overlaps the
//!   claim, **or** the slot overlaps the claim widened by the claim's own
//!   buffers `[c0 - claim.buffer_before, c1 + claim.buffer_after)`. In words:
//!   each side's buffers must be free of the *other side's appointment*, but
//!   two buffers may overlap each other; equivalently, the gap between them
//!   must be at least the larger of the two facing buffers (not their sum).
//! - Exception, shared seats: a claim made through the *same appointment type*
//!   for *exactly the same slot* (same start, and end - start equals the
//!   type's duration) does not block that slot; it takes its `seats` from the
//!   slot's capacity instead. It still blocks every other slot it overlaps,
//!   like any claim. A claim of another type, or of this type at another time
//!   or with another length, blocks completely.
//!
//! **Output.** Slots sorted by start, no two with the same start, each with
//! `remaining = capacity - seats taken` in `1..=capacity`. Full or blocked
//! slots are left out rather than flagged: callers only ever offer open ones.
//!
//! **Invalid input.** [`Schedule::validate`], [`AppointmentType::validate`]
//! and [`Window::validate`] run on every call and return [`SlotError`];
//! [`Window::ensure_max_len`] with [`MAX_WINDOW`] is the cap request handlers
//! should apply to user-supplied windows.
//!
//! # Example
//!
//! ```
//! use berth_slots::*;
//! use chrono::{DateTime, TimeDelta, Utc, Weekday};
//!
//! let schedule = Schedule {
//!     time_zone: chrono_tz::Europe::Berlin,
//!     weekly: WeeklyHours::on_days(
//!         &[Weekday::Mon, Weekday::Tue],
//!         &[LocalInterval::parse("09:00", "12:00")?],
//!     ),
//!     overrides: vec![],
//! };
//! let consult = AppointmentType {
//!     id: "consult".into(),
//!     duration_minutes: 60,
//!     interval_minutes: 30,
//!     buffer_before_minutes: 0,
//!     buffer_after_minutes: 15,
//!     min_notice_minutes: 120,
//!     horizon_minutes: 60 * 24 * 60,
//!     capacity: 1,
//! };
//! let from: DateTime<Utc> = "2026-06-01T00:00:00Z".parse()?; // a Monday
//! let window = Window::new(from, from + TimeDelta::days(7))?;
//! window.ensure_max_len(MAX_WINDOW)?;
//! let slots = compute_slots(&schedule, &consult, &[], &[], window, from)?;
//! // 09:00, 09:30, 10:00, 10:30, 11:00 on Monday and Tuesday (CEST = UTC+2).
//! assert_eq!(slots.len(), 10);
//! assert_eq!(slots[0].start, "2026-06-01T07:00:00Z".parse::<DateTime<Utc>>()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod engine;
mod error;
mod model;

pub use engine::{compute_slots, first_instant_at_or_after};
pub use error::{DayRef, SlotError};
pub use model::{
    AppointmentType, AppointmentTypeId, BusyInterval, Claim, DateOverride, LocalInterval,
    MAX_DURATION_MINUTES, MAX_HORIZON_MINUTES, MAX_WINDOW, OverrideHours, Schedule, Slot, WallTime,
    WeeklyHours, Window,
};
