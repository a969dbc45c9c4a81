//! The ledger over gRPC: a server wrapping any [`Ledger`] (the availability
//! service) and [`GrpcLedger`], a client that is itself a [`Ledger`], so the
//! booking service calls the same trait in-process or across pods.
//!
//! Errors cross the wire in one place each way: `LedgerError` → `Problem` →
//! `tonic::Status` ([`Problem::to_grpc_status`]) on the server, and
//! `Status` → `Problem` ([`Problem::from_grpc_status`]) → `LedgerError` on
//! the client.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use berth_ledger::{CancellationPolicy, ClaimReceipt, ClaimRequest, Ledger, LedgerError};
use berth_runtime::Problem;
use berth_runtime::batch::Batcher;
use berth_runtime::grpc::{GrpcChannel, SendChannel as Channel, to_timestamp};
use berth_runtime::replicas::Replicas;
use chrono::{DateTime, Utc};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use uuid::Uuid;

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("berth.availability.v1");
}

use pb::ledger_client::LedgerClient;
use pb::ledger_server::LedgerServer;

/// Fully qualified name of the gRPC service (for health and reflection).
pub const LEDGER_SERVICE_NAME: &str = "berth.availability.v1.Ledger";

/// Encoded descriptors of `ledger.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ledger_descriptor.bin"));

/// Metadata that tells the client's resilience stack a call may be retried.
/// Every ledger call is safe to repeat: claims are idempotent per owner and
/// slot, confirm and release per claim, reschedule per claim and start.
const IDEMPOTENT: &str = "x-berth-idempotent";

fn status(error: LedgerError) -> Status {
    Problem::from(error).to_grpc_status()
}

fn ledger_error(status: &Status) -> LedgerError {
    LedgerError::from(Problem::from_grpc_status(status))
}

fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, LedgerError> {
    raw.parse()
        .map_err(|_| LedgerError::Invalid(format!("{field}: {raw:?} is not a UUID")))
}

fn from_timestamp(
    field: &str,
    t: Option<prost_types::Timestamp>,
) -> Result<DateTime<Utc>, LedgerError> {
    let t = t.ok_or_else(|| LedgerError::Invalid(format!("{field}: required")))?;
    berth_runtime::grpc::from_timestamp(&t)
        .ok_or_else(|| LedgerError::Invalid(format!("{field}: not a valid timestamp")))
}

fn from_duration(d: prost_types::Duration) -> Result<Duration, LedgerError> {
    let bad = || LedgerError::Invalid("hold_for: must be a positive duration".to_owned());
    let seconds = u64::try_from(d.seconds).map_err(|_| bad())?;
    let nanos = u32::try_from(d.nanos).map_err(|_| bad())?;
    Ok(Duration::new(seconds, nanos))
}

fn to_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Below 1e9 by definition.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn receipt_to_pb(r: ClaimReceipt) -> pb::ClaimReceipt {
    pb::ClaimReceipt {
        claim_id: r.claim_id.to_string(),
        resource_id: r.resource_id.to_string(),
        appointment_type_id: r.appointment_type_id.to_string(),
        start: Some(to_timestamp(r.start)),
        end: Some(to_timestamp(r.end)),
        seats: r.seats,
        expires_at: r.expires_at.map(to_timestamp),
        price_minor: r.price_minor,
        currency: r.currency,
        resource_owner: r.resource_owner,
        cancellation_policy: r.cancellation_policy.map(|p| pb::CancellationPolicy {
            full_refund_notice: Some(to_duration(p.full_refund_notice)),
            late_refund_percent: p.late_refund_percent.into(),
        }),
    }
}

fn policy_from_pb(p: pb::CancellationPolicy) -> Result<CancellationPolicy, LedgerError> {
    let notice = p
        .full_refund_notice
        .ok_or_else(|| LedgerError::Invalid("full_refund_notice: required".to_owned()))?;
    let full_refund_notice = u64::try_from(notice.seconds)
        .ok()
        .zip(u32::try_from(notice.nanos).ok())
        .filter(|&(_, nanos)| nanos < 1_000_000_000)
        .map(|(seconds, nanos)| Duration::new(seconds, nanos))
        .ok_or_else(|| {
            LedgerError::Invalid("full_refund_notice: must not be negative".to_owned())
        })?;
    let late_refund_percent = u8::try_from(p.late_refund_percent)
        .ok()
        .filter(|&percent| percent <= 100)
        .ok_or_else(|| {
            LedgerError::Invalid(format!(
                "late_refund_percent: {} is not between 0 and 100",
                p.late_refund_percent
            ))
        })?;
    Ok(CancellationPolicy {
        full_refund_notice,
        late_refund_percent,
    })
}

fn receipt_from_pb(r: pb::ClaimReceipt) -> Result<ClaimReceipt, LedgerError> {
    // A malformed answer from the server is its fault, not the caller's.
    let internal = |e: LedgerError| LedgerError::Internal(format!("malformed ledger receipt: {e}"));
    Ok(ClaimReceipt {
        claim_id: parse_uuid("claim_id", &r.claim_id).map_err(internal)?,
        resource_id: parse_uuid("resource_id", &r.resource_id).map_err(internal)?,
        appointment_type_id: parse_uuid("appointment_type_id", &r.appointment_type_id)
            .map_err(internal)?,
        start: from_timestamp("start", r.start).map_err(internal)?,
        end: from_timestamp("end", r.end).map_err(internal)?,
        seats: r.seats,
        expires_at: r
            .expires_at
            .map(|t| from_timestamp("expires_at", Some(t)))
            .transpose()
            .map_err(internal)?,
        price_minor: r.price_minor,
        currency: r.currency,
        resource_owner: r.resource_owner,
        cancellation_policy: r
            .cancellation_policy
            .map(policy_from_pb)
            .transpose()
            .map_err(internal)?,
    })
}

fn claim_from_pb(r: pb::ClaimRequest) -> Result<ClaimRequest, LedgerError> {
    Ok(ClaimRequest {
        resource_id: parse_uuid("resource_id", &r.resource_id)?,
        appointment_type_id: parse_uuid("appointment_type_id", &r.appointment_type_id)?,
        start: from_timestamp("start", r.start)?,
        seats: r.seats,
        hold_for: r.hold_for.map(from_duration).transpose()?,
        owner: r.owner,
    })
}

fn claim_to_pb(r: ClaimRequest) -> pb::ClaimRequest {
    pb::ClaimRequest {
        resource_id: r.resource_id.to_string(),
        appointment_type_id: r.appointment_type_id.to_string(),
        start: Some(to_timestamp(r.start)),
        seats: r.seats,
        hold_for: r.hold_for.map(to_duration),
        owner: r.owner,
    }
}

/// A claim's outcome on the wire: its receipt, or the problem JSON that a
/// `Claim` call would carry in its status details.
fn outcome_to_pb(outcome: Result<ClaimReceipt, LedgerError>) -> pb::ClaimOutcome {
    use pb::claim_outcome::Outcome;
    let outcome = match outcome {
        Ok(receipt) => Outcome::Receipt(receipt_to_pb(receipt)),
        Err(error) => {
            Outcome::Problem(serde_json::to_vec(&Problem::from(error)).unwrap_or_default())
        }
    };
    pb::ClaimOutcome {
        outcome: Some(outcome),
    }
}

fn outcome_from_pb(outcome: pb::ClaimOutcome) -> Result<ClaimReceipt, LedgerError> {
    use pb::claim_outcome::Outcome;
    match outcome.outcome {
        Some(Outcome::Receipt(receipt)) => receipt_from_pb(receipt),
        Some(Outcome::Problem(json)) => Err(serde_json::from_slice::<Problem>(&json).map_or_else(
            |e| LedgerError::Internal(format!("malformed ledger problem: {e}")),
            LedgerError::from,
        )),
        None => Err(LedgerError::Internal("empty ledger outcome".to_owned())),
    }
}

/// Serves any [`Ledger`] as `berth.availability.v1.Ledger`.
pub(crate) struct LedgerService<L> {
    ledger: L,
}

pub(crate) fn server<L: Ledger>(ledger: L) -> LedgerServer<LedgerService<L>> {
    LedgerServer::new(LedgerService { ledger })
}

/// gRPC routes serving `ledger` (the availability service, or a wrapper of
/// it in tests).
pub fn routes<L: Ledger>(ledger: L) -> tonic::service::Routes {
    tonic::service::Routes::new(server(ledger))
}

#[async_trait]
impl<L: Ledger> pb::ledger_server::Ledger for LedgerService<L> {
    async fn claim(
        &self,
        request: Request<pb::ClaimRequest>,
    ) -> Result<Response<pb::ClaimReceipt>, Status> {
        let request = claim_from_pb(request.into_inner()).map_err(status)?;
        let receipt = self.ledger.claim(request).await.map_err(status)?;
        Ok(Response::new(receipt_to_pb(receipt)))
    }

    async fn claim_many(
        &self,
        request: Request<pb::ClaimManyRequest>,
    ) -> Result<Response<pb::ClaimManyResponse>, Status> {
        let claims = request.into_inner().claims;
        if claims.len() > MAX_CLAIMS_PER_CALL {
            return Err(status(LedgerError::Invalid(format!(
                "claims: at most {MAX_CLAIMS_PER_CALL} per call, got {}",
                claims.len()
            ))));
        }
        // A malformed claim fails alone, like a Claim call would.
        let parsed: Vec<Result<ClaimRequest, LedgerError>> =
            claims.into_iter().map(claim_from_pb).collect();
        let valid: Vec<ClaimRequest> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
        let mut decided = self.ledger.claim_many(valid).await.into_iter();
        let outcomes = parsed
            .into_iter()
            .map(|p| {
                let outcome = match p {
                    Ok(_) => decided.next().unwrap_or_else(|| {
                        Err(LedgerError::Internal("claim not decided".to_owned()))
                    }),
                    Err(error) => Err(error),
                };
                outcome_to_pb(outcome)
            })
            .collect();
        Ok(Response::new(pb::ClaimManyResponse { outcomes }))
    }

    async fn confirm(
        &self,
        request: Request<pb::ConfirmRequest>,
    ) -> Result<Response<pb::ClaimReceipt>, Status> {
        let id = parse_uuid("claim_id", &request.into_inner().claim_id).map_err(status)?;
        let receipt = self.ledger.confirm(id).await.map_err(status)?;
        Ok(Response::new(receipt_to_pb(receipt)))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let id = parse_uuid("claim_id", &request.into_inner().claim_id).map_err(status)?;
        self.ledger.release(id).await.map_err(status)?;
        Ok(Response::new(pb::ReleaseResponse {}))
    }

    async fn reschedule(
        &self,
        request: Request<pb::RescheduleRequest>,
    ) -> Result<Response<pb::ClaimReceipt>, Status> {
        let r = request.into_inner();
        let id = parse_uuid("claim_id", &r.claim_id).map_err(status)?;
        let start = from_timestamp("new_start", r.new_start).map_err(status)?;
        let receipt = self.ledger.reschedule(id, start).await.map_err(status)?;
        Ok(Response::new(receipt_to_pb(receipt)))
    }
}

/// The channel's boxed error as a concrete type. The boxed error is its
/// source, so tonic finds a `Status` in it (an open breaker answers
/// Unavailable) instead of calling everything Unknown.
/// The ledger of a remote availability service. Calls go through the
/// runtime's resilient channel (timeout, breaker, retries, trace context).
/// Concurrent claims are gathered into `ClaimMany` calls (group commit on
/// the wire; availability decides them together). Over [`Replicas`], each
/// claim goes to its resource's replica, whose known ledger of that
/// resource then stays uncontested.
#[derive(Clone)]
pub struct GrpcLedger {
    route: Route,
    /// Started on the first claim (it needs a running Tokio runtime).
    claims: Arc<OnceLock<Batcher<ClaimRequest, Result<ClaimReceipt, LedgerError>>>>,
}

#[derive(Clone)]
enum Route {
    /// One channel, whatever is behind it.
    One(LedgerClient<Channel>),
    /// Every replica found by DNS, chosen per key.
    Replicas(Arc<Replicas>),
}

impl Route {
    /// The client for calls about `key` (a resource, or a claim when the
    /// resource is not known) on the `rank`-th choice of replica, and which
    /// replica that is; `None` when there is no such replica.
    fn client(
        &self,
        key: Uuid,
        rank: usize,
    ) -> Option<(Option<SocketAddr>, LedgerClient<Channel>)> {
        match self {
            Route::One(client) => (rank == 0).then(|| (None, client.clone())),
            Route::Replicas(replicas) => replicas
                .pick(key.as_bytes(), rank)
                .map(|(addr, channel)| (addr, LedgerClient::new(Channel(channel)))),
        }
    }

    /// The client of the next replica for `key` after its own could not be
    /// reached, which also asks for the replicas to be resolved again.
    fn fail_over(&self, key: Uuid) -> Option<(Option<SocketAddr>, LedgerClient<Channel>)> {
        if let Route::Replicas(replicas) = self {
            replicas.refresh_soon();
        }
        self.client(key, 1)
    }

    /// `call` on the replica for `key`; when that replica cannot be
    /// reached, once more on the next one (every ledger call is idempotent,
    /// so a call that did reach the first is answered the same).
    async fn call<T, F, Fut>(&self, key: Uuid, call: F) -> Result<T, LedgerError>
    where
        F: Fn(LedgerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, LedgerError>>,
    {
        let Some((_, first)) = self.client(key, 0) else {
            return Err(LedgerError::Unavailable("no ledger replica".to_owned()));
        };
        match call(first).await {
            Err(LedgerError::Unavailable(detail)) => match self.fail_over(key) {
                Some((_, next)) => call(next).await,
                None => Err(LedgerError::Unavailable(detail)),
            },
            other => other,
        }
    }
}

/// Claims per `ClaimMany` call at most (the server's limit).
const MAX_CLAIMS_PER_CALL: usize = 256;
/// Claims the client gathers into one call, and calls in flight at once.
const CLIENT_BATCH: usize = 64;
const CLIENT_CALLS_IN_FLIGHT: usize = 4;

impl GrpcLedger {
    /// A client of whatever `channel` reaches.
    pub fn new(channel: GrpcChannel) -> Self {
        Self::with_route(Route::One(LedgerClient::new(Channel(channel))))
    }

    /// A client that sends each resource's calls to one of `replicas`.
    pub fn over(replicas: Arc<Replicas>) -> Self {
        Self::with_route(Route::Replicas(replicas))
    }

    fn with_route(route: Route) -> Self {
        Self {
            route,
            claims: Arc::new(OnceLock::new()),
        }
    }

    fn batcher(&self) -> &Batcher<ClaimRequest, Result<ClaimReceipt, LedgerError>> {
        self.claims.get_or_init(|| {
            // The batcher holds a handle without the batcher (no cycle).
            let route = self.route.clone();
            Batcher::spawn(
                "ledger_claim_calls",
                CLIENT_BATCH,
                CLIENT_CALLS_IN_FLIGHT,
                move |requests| routed_claim_calls(route.clone(), requests),
            )
        })
    }
}

/// Claims split by replica, one `ClaimMany` call each, concurrently;
/// outcomes in the order of `requests`. Claims whose replica could not be
/// reached go once more to their next replica (claims are idempotent per
/// owner and slot).
async fn routed_claim_calls(
    route: Route,
    requests: Vec<ClaimRequest>,
) -> Vec<Result<ClaimReceipt, LedgerError>> {
    let mut outcomes: Vec<Option<Result<ClaimReceipt, LedgerError>>> = vec![None; requests.len()];
    let mut pending: Vec<usize> = (0..requests.len()).collect();
    for rank in 0..2 {
        let mut groups: Vec<(Option<SocketAddr>, LedgerClient<Channel>, Vec<usize>)> = Vec::new();
        for &i in &pending {
            let resource = requests[i].resource_id;
            let choice = if rank == 0 {
                route.client(resource, 0)
            } else {
                route.fail_over(resource)
            };
            let Some((addr, client)) = choice else {
                continue;
            };
            match groups.iter_mut().find(|(a, _, _)| *a == addr) {
                Some((_, _, positions)) => positions.push(i),
                None => groups.push((addr, client, vec![i])),
            }
        }
        let calls = groups.into_iter().map(|(_, client, positions)| {
            let chunk = positions.iter().map(|&i| requests[i].clone()).collect();
            async move { (positions, claim_call(client, chunk).await) }
        });
        for (positions, answered) in futures::future::join_all(calls).await {
            for (i, outcome) in positions.into_iter().zip(answered) {
                outcomes[i] = Some(outcome);
            }
        }
        pending.retain(|&i| matches!(outcomes[i], Some(Err(LedgerError::Unavailable(_)))));
        if pending.is_empty() {
            break;
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(LedgerError::Unavailable("no ledger replica".to_owned()))))
        .collect()
}

/// One `ClaimMany` call; a server without it (an older version during an
/// upgrade) gets one `Claim` call per claim instead.
async fn claim_call(
    mut client: LedgerClient<Channel>,
    requests: Vec<ClaimRequest>,
) -> Vec<Result<ClaimReceipt, LedgerError>> {
    let n = requests.len();
    let message = pb::ClaimManyRequest {
        claims: requests.iter().cloned().map(claim_to_pb).collect(),
    };
    match client.claim_many(idempotent(message)).await {
        Ok(response) => {
            let outcomes = response.into_inner().outcomes;
            if outcomes.len() != n {
                let error = LedgerError::Internal(format!(
                    "ledger answered {} outcomes for {n} claims",
                    outcomes.len()
                ));
                return vec![Err(error); n];
            }
            outcomes.into_iter().map(outcome_from_pb).collect()
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            let mut outcomes = Vec::with_capacity(n);
            for request in requests {
                let response = client.claim(idempotent(claim_to_pb(request))).await;
                outcomes.push(
                    response
                        .map_err(|s| ledger_error(&s))
                        .and_then(|r| receipt_from_pb(r.into_inner())),
                );
            }
            outcomes
        }
        Err(s) => vec![Err(ledger_error(&s)); n],
    }
}

/// Marks a request as safe to retry.
fn idempotent<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(IDEMPOTENT, MetadataValue::from_static("1"));
    request
}

#[async_trait]
impl Ledger for GrpcLedger {
    async fn claim(&self, r: ClaimRequest) -> Result<ClaimReceipt, LedgerError> {
        self.batcher()
            .submit(r)
            .await
            .unwrap_or_else(|lost| Err(LedgerError::Unavailable(lost.to_string())))
    }

    async fn claim_many(
        &self,
        requests: Vec<ClaimRequest>,
    ) -> Vec<Result<ClaimReceipt, LedgerError>> {
        let mut outcomes = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(MAX_CLAIMS_PER_CALL) {
            outcomes.extend(routed_claim_calls(self.route.clone(), chunk.to_vec()).await);
        }
        outcomes
    }

    async fn confirm(&self, claim_id: Uuid) -> Result<ClaimReceipt, LedgerError> {
        let message = pb::ConfirmRequest {
            claim_id: claim_id.to_string(),
        };
        self.route
            .call(claim_id, |mut client| {
                let message = message.clone();
                async move {
                    let response = client.confirm(idempotent(message)).await;
                    receipt_from_pb(response.map_err(|s| ledger_error(&s))?.into_inner())
                }
            })
            .await
    }

    async fn release(&self, claim_id: Uuid) -> Result<(), LedgerError> {
        let message = pb::ReleaseRequest {
            claim_id: claim_id.to_string(),
        };
        self.route
            .call(claim_id, |mut client| {
                let message = message.clone();
                async move {
                    client
                        .release(idempotent(message))
                        .await
                        .map(drop)
                        .map_err(|s| ledger_error(&s))
                }
            })
            .await
    }

    async fn reschedule(
        &self,
        claim_id: Uuid,
        new_start: DateTime<Utc>,
    ) -> Result<ClaimReceipt, LedgerError> {
        let message = pb::RescheduleRequest {
            claim_id: claim_id.to_string(),
            new_start: Some(to_timestamp(new_start)),
        };
        self.route
            .call(claim_id, |mut client| {
                let message = message.clone();
                async move {
                    let response = client.reschedule(idempotent(message)).await;
                    receipt_from_pb(response.map_err(|s| ledger_error(&s))?.into_inner())
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(cancellation_policy: Option<CancellationPolicy>) -> ClaimReceipt {
        let start = DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default();
        ClaimReceipt {
            claim_id: Uuid::now_v7(),
            resource_id: Uuid::now_v7(),
            appointment_type_id: Uuid::now_v7(),
            start,
            end: start + chrono::TimeDelta::minutes(30),
            seats: 1,
            expires_at: None,
            price_minor: 2500,
            currency: "EUR".to_owned(),
            resource_owner: "staff-a".to_owned(),
            cancellation_policy,
        }
    }

    #[test]
    fn the_cancellation_policy_crosses_the_wire() {
        for policy in [
            None,
            Some(CancellationPolicy {
                full_refund_notice: Duration::from_secs(24 * 3600),
                late_refund_percent: 50,
            }),
            Some(CancellationPolicy {
                full_refund_notice: Duration::ZERO,
                late_refund_percent: 100,
            }),
        ] {
            let sent = receipt(policy);
            let wire = receipt_to_pb(sent.clone());
            assert_eq!(wire.cancellation_policy.is_some(), policy.is_some());
            assert_eq!(receipt_from_pb(wire), Ok(sent));
        }
    }

    #[test]
    fn a_malformed_cancellation_policy_is_the_servers_fault() {
        let policy = |notice: Option<prost_types::Duration>, percent| pb::CancellationPolicy {
            full_refund_notice: notice,
            late_refund_percent: percent,
        };
        let day = prost_types::Duration {
            seconds: 86_400,
            nanos: 0,
        };
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        for bad in [
            policy(Some(day), 101),
            policy(Some(day), 256),
            policy(None, 50),
            policy(Some(negative), 50),
        ] {
            let wire = pb::ClaimReceipt {
                cancellation_policy: Some(bad),
                ..receipt_to_pb(receipt(None))
            };
            let outcome = receipt_from_pb(wire);
            assert!(
                matches!(outcome, Err(LedgerError::Internal(_))),
                "{outcome:?}"
            );
        }
    }
}
