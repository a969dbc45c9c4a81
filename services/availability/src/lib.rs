//! The `availability` service: resources, schedules, calendars and the time
//! ledger; computes bookable slots.
//!
//! Its core promise is **no double booking, ever**. The ledger
//! ([`berth_ledger::Ledger`], implemented by [`Availability`]) records every
//! claim inside a transaction that holds the resource's row lock, checks it
//! with the same slot engine that computes the offered slots, and stores it
//! in a block that a database constraint keeps from overlapping any other.
//! Redis locks (when configured) only make racing clients queue; without
//! Redis, or while it is down, claims stay correct, just slower.
//!
//! Storage is PostgreSQL (schema `availability`) in production and SQLite
//! for `berth dev`; see [`Availability::connect`].

mod access;
mod calendars;
mod catalog;
mod currency;
mod error;
pub mod grpc;
mod ics;
mod ledger;
mod locks;
pub mod model;
mod rest;
mod row_cache;
mod rules;
mod slot_inputs;
mod slots;
mod store;
/// The workspace's scratch-database helper, for unit tests against PostgreSQL.
#[cfg(test)]
#[allow(dead_code)] // shared helper; this crate uses part of it
#[path = "../../../tests/support/db.rs"]
mod test_db;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::auth::Verifier;
use tokio_util::sync::CancellationToken;

pub use error::AvailabilityError;
pub use grpc::{FILE_DESCRIPTOR_SET, GrpcLedger, LEDGER_SERVICE_NAME};
pub use rest::openapi;
/// For the test that checks how PostgreSQL plans the resource listing.
#[doc(hidden)]
pub use store::resource_page_sql;

use berth_runtime::egress::{Egress, EgressOptions};
use locks::Locks;
use store::Store;

/// Name used in logs, metrics and `berth serve <name>`.
pub const NAME: &str = "availability";

/// How often [`Availability::spawn_sweeper`] tidies up.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The availability service: REST API, ledger and gRPC server in one handle.
/// Cheap to clone; clones share the pools and locks.
#[derive(Clone)]
pub struct Availability {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    locks: Locks,
    egress: Egress,
    /// Group commit of claims (PostgreSQL); `None` on SQLite.
    claims: Option<ledger::ClaimShards>,
    /// What slots are computed on, checked per request (PostgreSQL).
    slot_inputs: slot_inputs::SlotInputCache,
    /// What the group commit knows of resources' ledgers (PostgreSQL).
    known_ledgers: ledger::KnownLedgers,
}

impl Availability {
    /// Connects to `database_url` and runs the migrations.
    ///
    /// `postgres://…` uses PostgreSQL (schema `availability`, created if
    /// missing; needs the `btree_gist` extension, created if missing).
    /// `sqlite:path.db` or `sqlite::memory:` uses SQLite, where writes are
    /// serialised on one connection (see the `store::sqlite` module).
    /// `redis_url`, when given, adds cross-process lock queueing; Redis is
    /// connected lazily, so it may be down at start.
    ///
    /// Calendar feed URLs that point to private or local addresses are
    /// refused; see [`Availability::with_private_calendar_urls`].
    pub async fn connect(
        database_url: &str,
        redis_url: Option<&str>,
    ) -> Result<Self, AvailabilityError> {
        let locks = Locks::new(redis_url)
            .map_err(|e| AvailabilityError::Config(format!("redis URL: {e}")))?;
        let store = Store::connect(database_url).await?;
        let egress = Egress::new(&EgressOptions {
            user_agent: concat!("berth-availability/", env!("CARGO_PKG_VERSION")).to_owned(),
            ..EgressOptions::default()
        })
        .map_err(|e| AvailabilityError::Config(format!("HTTP client: {e}")))?;
        let grouped = matches!(store, Store::Postgres(_));
        let plain = Self {
            inner: Arc::new(Inner {
                store,
                locks,
                egress,
                claims: None,
                slot_inputs: slot_inputs::SlotInputCache::new(),
                known_ledgers: ledger::KnownLedgers::new(),
            }),
        };
        if !grouped {
            return Ok(plain);
        }
        // The batchers run claims on a handle without batchers of its own.
        let claims = Some(ledger::ClaimShards::spawn(&plain));
        let inner = &plain.inner;
        Ok(Self {
            inner: Arc::new(Inner {
                store: inner.store.clone(),
                locks: inner.locks.clone(),
                egress: inner.egress.clone(),
                claims,
                slot_inputs: inner.slot_inputs.clone(),
                known_ledgers: inner.known_ledgers.clone(),
            }),
        })
    }

    /// A handle that also fetches calendar feeds from loopback, private and
    /// link-local addresses (`allow = true`): for `berth dev` and tests that
    /// serve feeds locally, never for a deployment reachable by users. It
    /// shares pools and locks with `self`; clones made earlier keep their
    /// setting, so call it right after [`Availability::connect`].
    #[must_use]
    pub fn with_private_calendar_urls(self, allow: bool) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                store: inner.store.clone(),
                locks: inner.locks.clone(),
                egress: inner.egress.clone().allowing_private(allow),
                claims: inner.claims.clone(),
                slot_inputs: inner.slot_inputs.clone(),
                known_ledgers: inner.known_ledgers.clone(),
            }),
        }
    }

    /// All REST routes (`/v1/resources…`, `/v1/appointment-types…`,
    /// `/v1/calendars…`), state included, behind `verifier`: reads are
    /// public, writes need a token (see the `access` module for the rules).
    pub fn rest_routes(&self, verifier: &Verifier) -> axum::Router {
        rest::router(self.clone()).layer(verifier.layer())
    }

    /// The `berth.availability.v1.Ledger` gRPC service.
    pub fn grpc_routes(&self) -> tonic::service::Routes {
        grpc::routes(self.clone())
    }

    /// Readiness: the database answers. Redis is deliberately not part of
    /// it: without Redis the ledger is still correct, so an outage must not
    /// take every replica out of service (see [`Availability::check_redis`]).
    pub async fn check_ready(&self) -> Result<(), String> {
        self.inner
            .store
            .ping()
            .await
            .map_err(|e| format!("database: {e}"))
    }

    /// Redis answers `PING` (`Ok` when no Redis is configured). For a
    /// dashboard or a non-gating check.
    pub async fn check_redis(&self) -> Result<(), String> {
        self.inner.locks.ping_redis().await.unwrap_or(Ok(()))
    }

    /// Claims that went ahead on the database lock alone because Redis failed.
    pub fn redis_fallbacks(&self) -> u64 {
        self.inner.locks.redis_fallbacks()
    }

    /// Reads the whole ledger and describes every violation of its
    /// invariants: live claims on one resource that overlap without sharing
    /// a slot, blocks holding more live seats than their capacity, live
    /// claims that do not match their block, overlapping blocks. Empty means
    /// sound.
    pub async fn find_overlaps(&self) -> Result<Vec<String>, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        Ok(tx.overlaps(ledger::now()).await?)
    }

    /// Tidies up in the background until `stop`: releases lapsed holds
    /// (claims already ignore them; this keeps tables small) and refreshes
    /// calendar feeds that are due.
    pub fn spawn_sweeper(&self, stop: CancellationToken) {
        let av = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(SWEEP_EVERY) => {}
                }
                match av.sweep_lapsed().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(released = n, "released lapsed holds"),
                    Err(error) => tracing::warn!(%error, "sweeping lapsed holds failed"),
                }
                if let Err(error) = av.refresh_feeds(None).await {
                    tracing::warn!(%error, "refreshing calendar feeds failed");
                }
            }
        });
    }

    /// Row counts per table. For tests proving that bad input wrote nothing.
    #[doc(hidden)]
    pub async fn table_counts(&self) -> Result<BTreeMap<String, i64>, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        let mut counts = BTreeMap::new();
        for table in store::TABLES {
            counts.insert((*table).to_owned(), tx.count_rows(table).await?);
        }
        Ok(counts)
    }

    /// Runs one sweep now (what the sweeper does every 30 s).
    #[doc(hidden)]
    pub async fn sweep_now(&self) -> Result<u64, AvailabilityError> {
        Ok(self.sweep_lapsed().await?)
    }
}
