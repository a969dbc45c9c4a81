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
    /// The appointment type's refund rule, as it was when the time was
    /// claimed (like the price); `None`: a full refund whenever cancelled.
    #[serde(default)]
    pub cancellation_policy: Option<CancellationPolicy>,
}

/// How much of a paid booking is refunded when its customer cancels: all of
/// it until `full_refund_notice` before the start, `late_refund_percent` of
/// it after that (also once the appointment has begun).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationPolicy {
    #[serde(with = "duration_secs")]
    pub full_refund_notice: Duration,
    /// 0 to 100.
    pub late_refund_percent: u8,
}

impl CancellationPolicy {
    /// The refund, in minor units, of `paid_minor` for a cancellation at
    /// `cancelled_at` of an appointment starting at `start`. Never more than
    /// was paid, never negative; a late refund rounds down (the customer
    /// gets whole minor units, the rest stays with the merchant).
    pub fn refund_minor(
        policy: Option<&Self>,
        paid_minor: i64,
        start: DateTime<Utc>,
        cancelled_at: DateTime<Utc>,
    ) -> i64 {
        let paid = paid_minor.max(0);
        let Some(policy) = policy else {
            return paid;
        };
        let notice = chrono::TimeDelta::from_std(policy.full_refund_notice)
            .unwrap_or(chrono::TimeDelta::MAX);
        let in_time = start
            .checked_sub_signed(notice)
            .is_none_or(|deadline| cancelled_at <= deadline);
        if in_time {
            return paid;
        }
        let percent = i128::from(policy.late_refund_percent.min(100));
        // paid ≤ i64::MAX and percent ≤ 100, so the product fits in i128 and
        // the quotient in i64.
        i64::try_from(i128::from(paid) * percent / 100).unwrap_or(paid)
    }
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

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
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

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::TimeDelta::hours(hours)
    }

    #[test]
    fn refunds_follow_the_cancellation_policy() {
        let policy = CancellationPolicy {
            full_refund_notice: Duration::from_secs(24 * 3600),
            late_refund_percent: 50,
        };
        let start = at(100);
        // No policy: everything back, even after the start.
        assert_eq!(
            CancellationPolicy::refund_minor(None, 2500, start, at(120)),
            2500
        );
        // Exactly at the deadline is still in time.
        assert_eq!(
            CancellationPolicy::refund_minor(Some(&policy), 2500, start, at(76)),
            2500
        );
        assert_eq!(
            CancellationPolicy::refund_minor(Some(&policy), 2500, start, at(77)),
            1250
        );
        // Rounds down; never more than paid; never negative.
        assert_eq!(
            CancellationPolicy::refund_minor(Some(&policy), 2501, start, at(99)),
            1250
        );
        assert_eq!(
            CancellationPolicy::refund_minor(Some(&policy), -5, start, at(0)),
            0
        );
        let none_late = CancellationPolicy {
            late_refund_percent: 0,
            ..policy
        };
        assert_eq!(
            CancellationPolicy::refund_minor(Some(&none_late), 2500, start, at(99)),
            0
        );
        let absurd = CancellationPolicy {
            full_refund_notice: Duration::MAX,
            late_refund_percent: 200,
        };
        assert_eq!(
            CancellationPolicy::refund_minor(Some(&absurd), i64::MAX, start, at(0)),
            i64::MAX
        );
    }

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
