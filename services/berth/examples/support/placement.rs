//! Which cores a benchmark's processes run on (Linux, `taskset` from
//! util-linux).
//!
//! A deployment runs the services on other nodes than its database, and
//! `pgbench` is a thin client; on one small machine the services and the
//! load generator take CPU from the database that `pgbench` leaves to it.
//! [`Placement::Split`] gives the database (every `postgres` process) its
//! own half of the cores and everything else the other half, so the
//! database has the same capacity whichever load drives it.

use std::process::{Command, Stdio};

/// Where the processes run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// Every process may run on every core.
    Shared,
    /// PostgreSQL on the first half of the cores, everything else on the
    /// second half.
    Split,
}

impl Placement {
    pub fn describe(self, pinning: Option<&Pinning>) -> String {
        match (self, pinning) {
            (Placement::Split, Some(p)) => format!(
                "database on core(s) {}, services, Redis and load generator on {}",
                p.database, p.rest
            ),
            _ => "every process on every core".to_owned(),
        }
    }
}

/// The cores of each side, and the processes outside PostgreSQL to move.
pub struct Pinning {
    all: String,
    database: String,
    rest: String,
    /// Cores on the database's side.
    pub database_cores: usize,
    services: Vec<u32>,
    others: Vec<u32>,
}

/// The cores this process may use, from `/proc/self/status`.
fn allowed_cores() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(list) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
    else {
        return Vec::new();
    };
    let mut cores = Vec::new();
    for part in list.trim().split(',') {
        let bounds: Vec<usize> = part.split('-').filter_map(|v| v.parse().ok()).collect();
        match bounds.as_slice() {
            [one] => cores.push(*one),
            [first, last] => cores.extend(*first..=*last),
            _ => {}
        }
    }
    cores
}

fn core_list(cores: &[usize]) -> String {
    cores
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Moves every thread of `pid` to `cores`; false if that failed (the
/// process may have ended meanwhile, which is fine for a backend).
fn pin(pid: u32, cores: &str) -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Pinning {
    /// The reason a split is impossible here, if it is: fewer than two
    /// cores, no `taskset`, or no PostgreSQL process on this machine.
    /// `services` are the processes to keep off the database's cores, next
    /// to Redis and this process (whose later children inherit its cores).
    pub fn detect(services: &[u32]) -> Result<Self, String> {
        let cores = allowed_cores();
        if cores.len() < 2 {
            return Err(format!("{} core(s) available", cores.len()));
        }
        if super::pids_named("postgres").is_empty() {
            return Err("no PostgreSQL process on this machine".to_owned());
        }
        let (database, rest) = cores.split_at(cores.len() / 2);
        let mut others = services.to_vec();
        others.extend(super::pids_named("redis-server"));
        others.push(std::process::id());
        let pinning = Self {
            all: core_list(&cores),
            database: core_list(database),
            rest: core_list(rest),
            database_cores: database.len(),
            services: services.to_vec(),
            others,
        };
        if !pin(std::process::id(), &pinning.all) {
            return Err("taskset (util-linux) did not run".to_owned());
        }
        // An earlier run stopped by SIGKILL may have left a split behind.
        pinning.apply(Placement::Shared);
        Ok(pinning)
    }

    /// Ends the run on Ctrl-C or SIGTERM: every process back on every core,
    /// the services stopped (an interrupted run skips destructors).
    pub fn restore_on_interrupt(self: &std::sync::Arc<Self>) {
        let pinning = self.clone();
        tokio::spawn(async move {
            let Ok(mut terminate) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            pinning.apply(Placement::Shared);
            for pid in &pinning.services {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
            std::process::exit(130);
        });
    }

    /// Puts every process where `placement` says. New PostgreSQL backends
    /// inherit the postmaster's cores, so connections opened later follow.
    pub fn apply(&self, placement: Placement) {
        let (database, rest) = match placement {
            Placement::Shared => (&self.all, &self.all),
            Placement::Split => (&self.database, &self.rest),
        };
        for pid in super::pids_named("postgres") {
            pin(pid, database);
        }
        for pid in &self.others {
            pin(*pid, rest);
        }
    }
}

impl Drop for Pinning {
    /// Leaves the stack as it was found, however the benchmark ends.
    fn drop(&mut self) {
        self.apply(Placement::Shared);
    }
}
