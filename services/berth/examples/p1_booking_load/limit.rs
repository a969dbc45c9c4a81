//! The physical limit P1 is compared to: `pgbench` on the same server.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support;
use crate::{CLIENTS, PGBENCH_SECONDS};

/// `pgbench` with the ledger's insert, the physical limit P1 is measured
/// against: one block per transaction into a table created `LIKE` the
/// ledger's `blocks` (exclusion constraint, generated period, checks,
/// primary key), same server, same client count. The bare
/// `(int, tstzrange)` insert, the limit before 2026-12-01, runs beside it
/// for comparison.
pub struct PhysicalLimit {
    db_url: String,
    scripts: [std::path::PathBuf; 2],
    /// One per placement, in the order P1 measures them.
    pub runs: Vec<LimitRuns>,
}

/// The bursts of one placement.
#[derive(Default)]
pub struct LimitRuns {
    /// Transactions per second of each script, one per burst.
    pub tps: [Vec<f64>; 2],
    /// The machine while the ledger insert ran.
    pub machine: support::MachineTicks,
}

/// The scripts of a [`PhysicalLimit`], by index.
pub const LEDGER: usize = 0;
pub const BARE: usize = 1;

impl PhysicalLimit {
    /// Creates the tables and scripts, then waits for a quiet server.
    pub async fn prepare(db_url: &str, name: &str, placements: usize) -> Self {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db_url)
            .await
            .unwrap();
        for ddl in [
            "CREATE TABLE pgbench_blocks (LIKE availability.blocks INCLUDING ALL)",
            "CREATE EXTENSION IF NOT EXISTS btree_gist",
            "CREATE TABLE pgbench_bare (resource int NOT NULL, period tstzrange NOT NULL, \
             EXCLUDE USING gist (resource WITH =, period WITH &&))",
        ] {
            sqlx::query(ddl).execute(&mut conn).await.unwrap();
        }
        // 100 resources, random 30-minute slots: conflicts are rare, as in P1.
        let vars = "\\set r random(1, 100)\n\\set s random(0, 1000000)\n";
        let slot = "timestamptz '2030-01-01' + :s * interval '30 minutes', \
                    timestamptz '2030-01-01' + (:s + 1) * interval '30 minutes'";
        let texts = [
            format!(
                "{vars}INSERT INTO pgbench_blocks (id, resource_id, appointment_type_id, \
                 starts_at, ends_at, capacity) VALUES (gen_random_uuid(), \
                 lpad(:r::text, 32, '0')::uuid, lpad(:r::text, 32, '0')::uuid, {slot}, 1) \
                 ON CONFLICT DO NOTHING;\n"
            ),
            format!(
                "{vars}INSERT INTO pgbench_bare VALUES (:r, tstzrange({slot})) \
                 ON CONFLICT DO NOTHING;\n"
            ),
        ];
        let scripts = [LEDGER, BARE].map(|i| {
            let path = std::env::temp_dir().join(format!("{name}-{i}.sql"));
            std::fs::write(&path, &texts[i]).unwrap();
            path
        });
        wait_quiet(&mut conn).await;
        Self {
            db_url: db_url.to_owned(),
            scripts,
            runs: (0..placements).map(|_| LimitRuns::default()).collect(),
        }
    }

    /// Runs each script for `PGBENCH_SECONDS` and records its rate under
    /// placement `slot`; which runs first alternates, so neither always
    /// meets what the other left.
    pub fn burst(&mut self, slot: usize) {
        let run = &mut self.runs[slot];
        let order = if run.tps[LEDGER].len().is_multiple_of(2) {
            [LEDGER, BARE]
        } else {
            [BARE, LEDGER]
        };
        for i in order {
            let (script, rates) = (&self.scripts[i], &mut run.tps[i]);
            let machine_before = support::MachineTicks::read();
            let output = Command::new("pgbench")
                .args(["-n", "-c", &CLIENTS.to_string(), "-j", "2"])
                .args(["-T", &PGBENCH_SECONDS.to_string(), "-f"])
                .arg(script)
                .arg(&self.db_url)
                .output()
                .expect("pgbench (Debian package postgresql-client)");
            if i == LEDGER {
                run.machine.add_since(machine_before);
            }
            let out = String::from_utf8_lossy(&output.stdout);
            let tps = out
                .lines()
                .find(|l| l.starts_with("tps = "))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "pgbench output: {out}{}",
                        String::from_utf8_lossy(&output.stderr)
                    )
                });
            rates.push(tps);
        }
    }

    pub fn mean(&self, slot: usize, script: usize) -> f64 {
        let rates = &self.runs[slot].tps[script];
        rates.iter().sum::<f64>() / rates.len().max(1) as f64
    }
}

impl Drop for PhysicalLimit {
    fn drop(&mut self) {
        for script in &self.scripts {
            let _ = std::fs::remove_file(script);
        }
    }
}

/// Waits (at most 30 s) until no autovacuum works on the database, then
/// checkpoints: the booking rounds' aftermath is not charged to the limit.
async fn wait_quiet(conn: &mut sqlx::PgConnection) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_type = 'autovacuum worker'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::query("CHECKPOINT").execute(&mut *conn).await.unwrap();
}
