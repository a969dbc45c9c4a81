//! The P2 scenario, shared by `benches/slots.rs` and `examples/p2_latency.rs`:
//! one resource in America/New_York (the window crosses the 2026-03-08 spring
//! forward), weekdays 08:00-18:00, 30-minute appointments every 15 minutes
//! with 5-minute buffers, a 30-day window and 1,000 existing claims plus 50
//! external busy times, all inside the window and in no particular order.

use berth_slots::{
    AppointmentType, BusyInterval, Claim, LocalInterval, Schedule, Slot, SlotError, WeeklyHours,
    Window, compute_slots,
};
use chrono::{DateTime, TimeDelta, Utc, Weekday};

pub const CLAIMS: usize = 1_000;
pub const BUSY: usize = 50;
pub const WINDOW_DAYS: i64 = 30;

pub struct P2 {
    pub schedule: Schedule,
    pub appointment: AppointmentType,
    pub claims: Vec<Claim>,
    pub busy: Vec<BusyInterval>,
    pub window: Window,
    pub now: DateTime<Utc>,
}

impl P2 {
    pub fn run(&self) -> Result<Vec<Slot>, SlotError> {
        compute_slots(
            &self.schedule,
            &self.appointment,
            &self.claims,
            &self.busy,
            self.window,
            self.now,
        )
    }
}

/// Small deterministic PRNG (xorshift64*) so runs are comparable without a
/// `rand` dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

pub fn scenario() -> Result<P2, SlotError> {
    let schedule = Schedule {
        time_zone: chrono_tz::America::New_York,
        weekly: WeeklyHours::on_days(
            &[
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            &[LocalInterval::parse("08:00", "18:00")?],
        ),
        overrides: Vec::new(),
    };
    let appointment = AppointmentType {
        id: "consult".into(),
        duration_minutes: 30,
        interval_minutes: 15,
        buffer_before_minutes: 5,
        buffer_after_minutes: 5,
        min_notice_minutes: 60,
        horizon_minutes: 90 * 24 * 60,
        capacity: 1,
    };
    // Monday 2026-03-02 00:00 EST.
    let from = DateTime::from_timestamp(1_772_427_600, 0).unwrap_or_default();
    let window = Window::new(from, from + TimeDelta::days(WINDOW_DAYS))?;
    let now = from - TimeDelta::hours(1);

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Claims on quarter hours between 08:00 and 17:30 local (approximated in
    // UTC: EST is UTC-5), 30 minutes long, mostly this type.
    let claim_at = |rng: &mut Rng| {
        let day = rng.below(WINDOW_DAYS as u64) as i64;
        let quarter = rng.below(39) as i64;
        from + TimeDelta::days(day) + TimeDelta::hours(13) + TimeDelta::minutes(quarter * 15)
    };
    let claims = (0..CLAIMS)
        .map(|i| {
            let start = claim_at(&mut rng);
            Claim {
                start,
                end: start + TimeDelta::minutes(30),
                appointment_type: if i % 5 == 0 { "other" } else { "consult" }.into(),
                seats: 1,
                buffer_before_minutes: 5,
                buffer_after_minutes: 5,
            }
        })
        .collect();
    let busy = (0..BUSY)
        .map(|_| {
            let start = claim_at(&mut rng);
            BusyInterval {
                start,
                end: start + TimeDelta::minutes(15 * (1 + rng.below(8) as i64)),
            }
        })
        .collect();
    Ok(P2 {
        schedule,
        appointment,
        claims,
        busy,
        window,
        now,
    })
}
