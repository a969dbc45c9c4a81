//! The settlement contract over gRPC: a server wrapping any [`Settlement`]
//! (the booking service) and [`GrpcSettlement`], a client that is itself a
//! [`Settlement`], so the payment service calls the same trait in-process or
//! across pods. Errors cross the wire as problem+json in the status details
//! (`SettlementError` → `Problem` → `Status` and back).

use async_trait::async_trait;
use berth_ledger::CancellationPolicy;
use berth_runtime::Problem;
use berth_runtime::grpc::{GrpcChannel, SendChannel, from_timestamp, to_timestamp};
use berth_settlement::{
    BookingState, FailureReason, Paid, PayableBooking, Secured, Settlement, SettlementError,
};
use chrono::{DateTime, Utc};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use uuid::Uuid;

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("berth.booking.v1");
}

use pb::settlement_client::SettlementClient;
use pb::settlement_server::SettlementServer;
use pb::{mark_paid_response, secure_response};

/// Fully qualified name of the gRPC service (for health and reflection).
pub const SETTLEMENT_SERVICE_NAME: &str = "berth.booking.v1.Settlement";

/// Encoded descriptors of `settlement.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/settlement_descriptor.bin"));

/// Every settlement call is idempotent, so the client's resilience stack
/// may retry it.
const IDEMPOTENT: &str = "x-berth-idempotent";

fn status(error: SettlementError) -> Status {
    Problem::from(error).to_grpc_status()
}

fn invalid(message: String) -> Status {
    Problem::validation(message).to_grpc_status()
}

fn parse_id(raw: &str) -> Result<Uuid, Status> {
    raw.parse()
        .map_err(|_| invalid(format!("booking_id: {raw:?} is not a UUID")))
}

fn to_pb(b: PayableBooking) -> pb::PayableBooking {
    pb::PayableBooking {
        id: b.id.to_string(),
        state: b.state.as_str().to_owned(),
        time_secured: b.time_secured,
        price_minor: b.price_minor,
        currency: b.currency,
        customer_id: b.customer_id,
        resource_owner_id: b.resource_owner_id,
        start: Some(to_timestamp(b.start)),
        hold_expires_at: b.hold_expires_at.map(to_timestamp),
        cancellation_policy: b.cancellation_policy.map(|p| pb::CancellationPolicy {
            full_refund_notice_secs: p.full_refund_notice.as_secs(),
            late_refund_percent: u32::from(p.late_refund_percent),
        }),
        updated_at: Some(to_timestamp(b.updated_at)),
    }
}

fn from_pb(b: Option<pb::PayableBooking>) -> Result<PayableBooking, SettlementError> {
    let bad = |what: &str| SettlementError::Internal(format!("malformed booking answer: {what}"));
    let b = b.ok_or_else(|| bad("missing"))?;
    let time = |t: Option<prost_types::Timestamp>, field: &str| -> Result<DateTime<Utc>, _> {
        t.as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| bad(field))
    };
    let cancellation_policy = match b.cancellation_policy {
        None => None,
        Some(p) => Some(CancellationPolicy {
            full_refund_notice: std::time::Duration::from_secs(p.full_refund_notice_secs),
            late_refund_percent: u8::try_from(p.late_refund_percent)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| bad("late_refund_percent"))?,
        }),
    };
    Ok(PayableBooking {
        id: b.id.parse().map_err(|_| bad("id"))?,
        state: BookingState::parse(&b.state).ok_or_else(|| bad("state"))?,
        time_secured: b.time_secured,
        price_minor: b.price_minor,
        currency: b.currency,
        customer_id: b.customer_id,
        resource_owner_id: b.resource_owner_id,
        start: time(b.start, "start")?,
        hold_expires_at: b
            .hold_expires_at
            .map(|t| time(Some(t), "hold_expires_at"))
            .transpose()?,
        cancellation_policy,
        updated_at: time(b.updated_at, "updated_at")?,
    })
}

pub(crate) struct SettlementService<S> {
    settlement: S,
}

/// gRPC routes serving `settlement` (the booking service).
pub fn routes<S: Settlement>(settlement: S) -> tonic::service::Routes {
    tonic::service::Routes::new(SettlementServer::new(SettlementService { settlement }))
}

#[async_trait]
impl<S: Settlement> pb::settlement_server::Settlement for SettlementService<S> {
    async fn get_booking(
        &self,
        request: Request<pb::BookingRef>,
    ) -> Result<Response<pb::PayableBooking>, Status> {
        let id = parse_id(&request.into_inner().booking_id)?;
        let booking = self.settlement.booking(id).await.map_err(status)?;
        Ok(Response::new(to_pb(booking)))
    }

    async fn secure(
        &self,
        request: Request<pb::BookingRef>,
    ) -> Result<Response<pb::SecureResponse>, Status> {
        use secure_response::Outcome;
        let id = parse_id(&request.into_inner().booking_id)?;
        let (outcome, booking) = match self.settlement.secure(id).await.map_err(status)? {
            Secured::Held(b) => (Outcome::Held, b),
            Secured::SlotTaken(b) => (Outcome::SlotTaken, b),
            Secured::Ended(b) => (Outcome::Ended, b),
        };
        Ok(Response::new(pb::SecureResponse {
            outcome: outcome.into(),
            booking: Some(to_pb(booking)),
        }))
    }

    async fn mark_paid(
        &self,
        request: Request<pb::BookingRef>,
    ) -> Result<Response<pb::MarkPaidResponse>, Status> {
        use mark_paid_response::Outcome;
        let id = parse_id(&request.into_inner().booking_id)?;
        let (outcome, booking) = match self.settlement.mark_paid(id).await.map_err(status)? {
            Paid::Confirmed(b) => (Outcome::Confirmed, b),
            Paid::Ended(b) => (Outcome::Ended, b),
        };
        Ok(Response::new(pb::MarkPaidResponse {
            outcome: outcome.into(),
            booking: Some(to_pb(booking)),
        }))
    }

    async fn fail_payment(
        &self,
        request: Request<pb::FailPaymentRequest>,
    ) -> Result<Response<pb::PayableBooking>, Status> {
        let request = request.into_inner();
        let id = parse_id(&request.booking_id)?;
        let reason = FailureReason::parse(&request.reason).ok_or_else(|| {
            invalid(format!(
                "reason: {:?} is not a failure reason",
                request.reason
            ))
        })?;
        let booking = self
            .settlement
            .fail_payment(id, reason)
            .await
            .map_err(status)?;
        Ok(Response::new(to_pb(booking)))
    }
}

/// The settlement of a remote booking service, through the runtime's
/// resilient channel (timeout, breaker, retries, trace context).
#[derive(Clone)]
pub struct GrpcSettlement {
    client: SettlementClient<SendChannel>,
}

impl GrpcSettlement {
    pub fn new(channel: GrpcChannel) -> Self {
        Self {
            client: SettlementClient::new(SendChannel(channel)),
        }
    }
}

fn idempotent<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(IDEMPOTENT, MetadataValue::from_static("1"));
    request
}

fn remote_error(status: &Status) -> SettlementError {
    SettlementError::from(Problem::from_grpc_status(status))
}

fn booking_ref(id: Uuid) -> Request<pb::BookingRef> {
    idempotent(pb::BookingRef {
        booking_id: id.to_string(),
    })
}

#[async_trait]
impl Settlement for GrpcSettlement {
    async fn booking(&self, id: Uuid) -> Result<PayableBooking, SettlementError> {
        let answer = self.client.clone().get_booking(booking_ref(id)).await;
        from_pb(Some(answer.map_err(|s| remote_error(&s))?.into_inner()))
    }

    async fn secure(&self, id: Uuid) -> Result<Secured, SettlementError> {
        use secure_response::Outcome;
        let answer = self.client.clone().secure(booking_ref(id)).await;
        let answer = answer.map_err(|s| remote_error(&s))?.into_inner();
        let booking = from_pb(answer.booking)?;
        match Outcome::try_from(answer.outcome) {
            Ok(Outcome::Held) => Ok(Secured::Held(booking)),
            Ok(Outcome::SlotTaken) => Ok(Secured::SlotTaken(booking)),
            Ok(Outcome::Ended) => Ok(Secured::Ended(booking)),
            _ => Err(SettlementError::Internal(
                "malformed booking answer: outcome".into(),
            )),
        }
    }

    async fn mark_paid(&self, id: Uuid) -> Result<Paid, SettlementError> {
        use mark_paid_response::Outcome;
        let answer = self.client.clone().mark_paid(booking_ref(id)).await;
        let answer = answer.map_err(|s| remote_error(&s))?.into_inner();
        let booking = from_pb(answer.booking)?;
        match Outcome::try_from(answer.outcome) {
            Ok(Outcome::Confirmed) => Ok(Paid::Confirmed(booking)),
            Ok(Outcome::Ended) => Ok(Paid::Ended(booking)),
            _ => Err(SettlementError::Internal(
                "malformed booking answer: outcome".into(),
            )),
        }
    }

    async fn fail_payment(
        &self,
        id: Uuid,
        reason: FailureReason,
    ) -> Result<PayableBooking, SettlementError> {
        let request = idempotent(pb::FailPaymentRequest {
            booking_id: id.to_string(),
            reason: reason.as_str().to_owned(),
        });
        let answer = self.client.clone().fail_payment(request).await;
        from_pb(Some(answer.map_err(|s| remote_error(&s))?.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookings_survive_the_wire() {
        let booking = PayableBooking {
            id: Uuid::now_v7(),
            state: BookingState::PendingPayment,
            time_secured: true,
            price_minor: 4500,
            currency: "EUR".into(),
            customer_id: Some("ada".into()),
            resource_owner_id: None,
            start: DateTime::from_timestamp(1_800_000_000, 123_000).unwrap(),
            hold_expires_at: None,
            cancellation_policy: Some(CancellationPolicy {
                full_refund_notice: std::time::Duration::from_secs(86_400),
                late_refund_percent: 50,
            }),
            updated_at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        };
        assert_eq!(from_pb(Some(to_pb(booking.clone()))).unwrap(), booking);
        let mut bad = to_pb(booking);
        bad.state = "paid".into();
        assert!(matches!(
            from_pb(Some(bad)),
            Err(SettlementError::Internal(_))
        ));
    }
}
