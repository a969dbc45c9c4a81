//! A recorded run: every client operation with what it was told, and the
//! final state read from the databases after holds lapsed and sagas ended.
//! Times are microseconds since the Unix epoch, as the services store them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A half-open time range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Hold {
        resource: Uuid,
        span: Span,
        seats: u32,
    },
    Confirm {
        booking: Uuid,
    },
    Cancel {
        booking: Uuid,
    },
    Reschedule {
        booking: Uuid,
        span: Span,
    },
}

impl Request {
    /// The booking an operation on an existing booking is about.
    pub fn booking(&self) -> Option<Uuid> {
        match self {
            Self::Hold { .. } => None,
            Self::Confirm { booking }
            | Self::Cancel { booking }
            | Self::Reschedule { booking, .. } => Some(*booking),
        }
    }
}

/// The booking as an answer described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Told {
    pub id: Uuid,
    pub status: String,
    pub version: i64,
    pub span: Span,
}

/// How an operation ended for its client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer: its status, a digest of its body (a replay must be
    /// byte-identical) and the booking it described.
    Ok {
        status: u16,
        body_digest: String,
        booking: Told,
    },
    /// A 4xx answer: refused, nothing changed.
    Refused { status: u16 },
    /// No answer (timeout, reset) or a 5xx: it may or may not have happened.
    Unknown,
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The caller's subject (idempotency keys are scoped by it).
    pub client: String,
    pub idempotency_key: String,
    pub request: Request,
    pub invoked: i64,
    /// When the answer came or the client gave up.
    pub completed: i64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A booking as the booking database holds it at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalBooking {
    pub id: Uuid,
    pub resource: Uuid,
    pub span: Span,
    pub seats: u32,
    pub status: String,
    pub version: i64,
    /// Of a priced appointment type (its payment may move it on its own).
    pub priced: bool,
    /// The (subject, idempotency key) whose request created it, from the
    /// booking service's key table.
    pub created_by: Option<(String, String)>,
}

/// A live claim in the availability ledger at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub resource: Uuid,
    pub span: Span,
    pub seats: u32,
}

/// Everything read after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    pub bookings: Vec<FinalBooking>,
    pub claims: Vec<Claim>,
    /// Seats per resource; a resource not listed has capacity 1.
    pub capacity: BTreeMap<Uuid, u32>,
}
