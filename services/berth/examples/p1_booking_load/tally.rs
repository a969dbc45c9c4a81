//! What P1's timed rounds add up to, per placement.

use std::time::Duration;

use crate::support::{
    self,
    load::{Answer, percentile},
};

/// What the timed rounds of one placement added up to.
#[derive(Default)]
pub struct Tally {
    timed: Duration,
    booked: usize,
    conflicts: usize,
    errors: usize,
    latencies: Vec<Duration>,
    cpu: Vec<(&'static str, f64)>,
    per_round: Vec<f64>,
    machine: support::MachineTicks,
}

impl Tally {
    pub fn add(
        &mut self,
        answers: &[Answer],
        elapsed: Duration,
        cpu_used: Vec<(&'static str, f64)>,
        machine_before: support::MachineTicks,
    ) {
        self.machine.add_since(machine_before);
        for (label, seconds) in cpu_used {
            match self.cpu.iter_mut().find(|(l, _)| *l == label) {
                Some((_, total)) => *total += seconds,
                None => self.cpu.push((label, seconds)),
            }
        }
        let won = answers.iter().filter(|a| a.status == 201).count();
        let lost = answers.iter().filter(|a| a.status == 409).count();
        self.timed += elapsed;
        self.booked += won;
        self.conflicts += lost;
        self.errors += answers.len() - won - lost;
        self.latencies.extend(answers.iter().map(|a| a.latency));
        self.per_round.push(won as f64 / elapsed.as_secs_f64());
    }

    pub fn bookings_per_s(&self) -> f64 {
        self.booked as f64 / self.timed.as_secs_f64()
    }

    /// The placement's figures; `database_cores` is what PostgreSQL may use.
    pub fn print(&mut self, expected: usize, cores: usize, database_cores: usize) {
        self.latencies.sort();
        let requests = self.booked + self.conflicts + self.errors;
        let seconds = self.timed.as_secs_f64();
        println!(
            "  requests {requests} in {seconds:.2}s timed = {:.0} req/s",
            requests as f64 / seconds
        );
        println!(
            "  booked {} (expected {expected}), conflicts 409 {}, other {}",
            self.booked, self.conflicts, self.errors
        );
        let rates: Vec<String> = self.per_round.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "  bookings/s {:.0} (rounds: {})",
            self.bookings_per_s(),
            rates.join(", ")
        );
        let at = |p| percentile(&self.latencies, p).as_secs_f64() * 1e3;
        println!(
            "  latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            at(0.50),
            at(0.99),
            at(1.0)
        );
        let cpu_total: f64 = self.cpu.iter().map(|(_, s)| s).sum();
        let per_booking = |s: f64| s * 1e3 / self.booked.max(1) as f64;
        let parts: Vec<String> = self
            .cpu
            .iter()
            .map(|(label, s)| format!("{label} {:.3}", per_booking(*s)))
            .collect();
        println!(
            "  CPU per booking (ms, with any 409s it caused): {}; total {:.3} ({:.2} of {cores} cores busy)",
            parts.join(", "),
            per_booking(cpu_total),
            cpu_total / seconds,
        );
        let database: f64 = self
            .cpu
            .iter()
            .filter(|(label, _)| *label == "postgres")
            .map(|(_, s)| s)
            .sum();
        println!(
            "  PostgreSQL busy {:.0} % of the {database_cores} core(s) it may use",
            100.0 * database / seconds / database_cores.max(1) as f64
        );
        println!(
            "  machine during the timed rounds: {}",
            self.machine.describe()
        );
    }
}
