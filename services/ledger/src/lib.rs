//! The time-ledger contract. Availability owns the ledger; booking calls it
//! through [`Ledger`], which has two implementations with the same
//! semantics: the availability service itself (in-process, `berth dev`) and
//! its gRPC client (in Kubernetes).

use std::time::Duration;

use async_trait::async_trait;
use berth_runtime::Problem;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Ask for `seats` of the slot starting at `start` of an appointment type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub start: DateTime<Utc>,
    pub seats: u32,
    /// A hold that lapses by itself after this long; `None` claims for good.
    #[serde(default, with = "optional_duration_secs")]
    pub hold_for: Option<Duration>,
    /// Who holds the claim (a booking id). Claiming again with the same owner
    /// and slot returns the existing claim, so retries are safe.
    pub owner: String,
}

/// What the ledger recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimReceipt {
    pub claim_id: Uuid,
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub seats: u32,
    /// When the hold lapses; `None` once confirmed.
    pub expires_at: Option<DateTime<Utc>>,
    /// Price of the claimed seats, in minor units of `currency`.
    pub price_minor: i64,
    pub currency: String,
    /// The account that manages the resource (its staff owner), so the
    /// booking service can show staff the bookings on their resources.
    #[serde(default)]
    pub resource_owner: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("{0} not found")]
    NotFound(String),
    /// The time is taken (or not bookable): the caller lost the race.
    #[error("slot unavailable: {0}")]
    SlotUnavailable(String),
    /// The hold lapsed before it was confirmed.
    #[error("hold expired")]
    HoldExpired,
    #[error("invalid claim: {0}")]
    Invalid(String),
    /// The ledger could not be reached or answered in time.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    #[error("ledger failure: {0}")]
    Internal(String),
}

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Claims time atomically: either all seats are recorded or nothing is.
    async fn claim(&self, request: ClaimRequest) -> Result<ClaimReceipt, LedgerError>;

    /// Several independent claims, one outcome each, in order: as if each
    /// were [`Ledger::claim`]ed on its own (one failing says nothing about
    /// the others). Implementations decide and commit them together where
    /// they can (one round trip, one statement).
    async fn claim_many(
        &self,
        requests: Vec<ClaimRequest>,
    ) -> Vec<Result<ClaimReceipt, LedgerError>> {
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            outcomes.push(self.claim(request).await);
        }
        outcomes
    }

    /// Makes a hold permanent. Fails with [`LedgerError::HoldExpired`] if it
    /// lapsed (its capacity may already belong to someone else).
    async fn confirm(&self, claim_id: Uuid) -> Result<ClaimReceipt, LedgerError>;

    /// Frees a claim. Releasing an unknown or already released claim is a
    /// no-op, so compensations can be retried.
    async fn release(&self, claim_id: Uuid) -> Result<(), LedgerError>;

    /// Moves a claim to a new start in one transaction: the new time is
    /// claimed before the old is released, so the owner never holds both
    /// and never neither.
    async fn reschedule(
        &self,
        claim_id: Uuid,
        new_start: DateTime<Utc>,
    ) -> Result<ClaimReceipt, LedgerError>;
}

impl From<LedgerError> for Problem {
    fn from(error: LedgerError) -> Self {
        use http::StatusCode;
        match error {
            LedgerError::NotFound(what) => Problem::not_found(format!("{what} not found")),
            LedgerError::SlotUnavailable(detail) => Problem::conflict("slot-unavailable", detail),
            LedgerError::HoldExpired => {
                Problem::new(StatusCode::CONFLICT, "hold-expired", "Hold expired")
                    .with_detail("the hold lapsed before it was confirmed; book again")
            }
            LedgerError::Invalid(detail) => Problem::validation(detail),
            LedgerError::Unavailable(detail) => Problem::unavailable(detail),
            LedgerError::Internal(detail) => Problem::internal(&std::io::Error::other(detail)),
        }
    }
}

impl From<Problem> for LedgerError {
    /// The inverse mapping, used by the gRPC client after
    /// [`Problem::from_grpc_status`].
    fn from(problem: Problem) -> Self {
        let slug = problem
            .type_uri
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let detail = problem
            .detail
            .clone()
            .unwrap_or_else(|| problem.title.clone());
        match (problem.status, slug.as_str()) {
            (404, _) => LedgerError::NotFound(detail.trim_end_matches(" not found").to_owned()),
            (409, "hold-expired") => LedgerError::HoldExpired,
            (409, _) => LedgerError::SlotUnavailable(detail),
            (400 | 422, _) => LedgerError::Invalid(detail),
            (503 | 504, _) => LedgerError::Unavailable(detail),
            _ => LedgerError::Internal(detail),
        }
    }
}

mod optional_duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_problem_round_trip() {
        for error in [
            LedgerError::NotFound("claim 1".into()),
            LedgerError::SlotUnavailable("taken".into()),
            LedgerError::HoldExpired,
            LedgerError::Invalid("seats must be at least 1".into()),
            LedgerError::Unavailable("db down".into()),
        ] {
            let problem = Problem::from(error.clone());
            let via_grpc = Problem::from_grpc_status(&problem.to_grpc_status());
            assert_eq!(LedgerError::from(via_grpc), error);
        }
    }
}
