//! Webhook delivery: each event POSTed to every endpoint, signed at send
//! time (`Stripe-Signature: t=..,v1=..` per secret), retried with
//! doubling backoff; faults bend all of this. As Stripe does, deliveries
//! run concurrently (up to `IN_FLIGHT`); one object's events still go in
//! creation order unless `reorder` is on, so only the faults reorder.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::time::Instant;

use crate::control::types::DeliveryRecord;
use crate::state::{Pending, Shared, State};

/// `t=<unix>,v1=<hex>` with one `v1` per secret, as Stripe signs during
/// secret rotation.
pub fn signature_header(body: &str, secrets: &[String], timestamp: i64) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&sign(body, secret, timestamp));
    }
    header
}

fn sign(body: &str, secret: &str, timestamp: i64) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{timestamp}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A secret no endpoint has, for `bad_signature`.
const WRONG_SECRET: &str = "whsec_emulator_wrong_secret";

/// Deliveries sent at once, each to its own object's events.
const IN_FLIGHT: usize = 32;

/// One delivery, prepared under the lock and sent without it.
struct Job {
    /// The event's object (`pi_...`): its events go one after the other.
    object_id: String,
    pending: Pending,
    url: String,
    body: String,
    event_type: String,
    signature: String,
}

/// Runs until the emulator stops.
pub(crate) async fn worker(shared: Arc<Shared>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    loop {
        let (jobs, next_due, delay_ms, copies) = take_due(&shared);
        if jobs.is_empty() {
            let sleep = match next_due {
                Some(at) => tokio::time::sleep_until(at),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                () = shared.wake.notified() => {}
                () = sleep => {}
            }
            continue;
        }
        let mut running = tokio::task::JoinSet::new();
        for lane in lanes(jobs) {
            while running.len() >= IN_FLIGHT {
                running.join_next().await;
            }
            let (http, shared) = (http.clone(), shared.clone());
            running.spawn(async move {
                for job in lane {
                    deliver(&http, &shared, job, delay_ms, copies).await;
                }
            });
        }
        // A batch ends before the next starts, so an object's later event
        // never overtakes one still in flight.
        while running.join_next().await.is_some() {}
    }
}

/// The jobs grouped by object, each group in the order taken.
fn lanes(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut lanes: Vec<Vec<Job>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for job in jobs {
        match index.get(&job.object_id) {
            Some(&i) => lanes[i].push(job),
            None => {
                index.insert(job.object_id.clone(), lanes.len());
                lanes.push(vec![job]);
            }
        }
    }
    lanes
}

async fn deliver(http: &reqwest::Client, shared: &Shared, job: Job, delay_ms: u64, copies: usize) {
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let mut ok = false;
    for _ in 0..copies {
        let (status, error) = send(http, &job).await;
        ok |= status.is_some_and(|s| (200..300).contains(&s));
        record(shared, &job, status, error);
    }
    settle(shared, job.pending, ok);
}

/// Takes the deliveries due now (held ones only once flushed), oldest
/// event first, and signs them with the faults in force.
fn take_due(shared: &Shared) -> (Vec<Job>, Option<Instant>, u64, usize) {
    let mut st = shared.lock();
    let now = Instant::now();
    let hold = st.faults.hold;
    let due = |p: &Pending| p.due <= now && (!hold || p.released);
    let mut taken: Vec<Pending> = Vec::new();
    let mut rest = std::collections::VecDeque::new();
    while let Some(p) = st.queue.pop_front() {
        if due(&p) {
            taken.push(p)
        } else {
            rest.push_back(p)
        }
    }
    let next_due = rest
        .iter()
        .filter(|p| !hold || p.released)
        .map(|p| p.due)
        .min();
    st.queue = rest;
    taken.sort_by_key(|p| p.event_seq);
    if st.faults.reorder {
        taken.reverse();
    }
    let jobs = taken.into_iter().filter_map(|p| prepare(&st, p)).collect();
    let copies = if st.faults.duplicate { 2 } else { 1 };
    (jobs, next_due, st.faults.delay_ms, copies)
}

fn prepare(st: &State, pending: Pending) -> Option<Job> {
    let endpoint = st.endpoints.iter().find(|e| e.id == pending.endpoint_id)?;
    let event = st.events.get(&pending.event_id)?;
    let body = serde_json::to_string_pretty(&event.to_json()).ok()?;
    let timestamp = State::now() - st.faults.stale_timestamp_secs as i64;
    let signature = if st.faults.bad_signature {
        signature_header(&body, &[WRONG_SECRET.to_owned()], timestamp)
    } else {
        signature_header(&body, &endpoint.secrets, timestamp)
    };
    let object_id = event.object["id"].as_str().unwrap_or_default().to_owned();
    Some(Job {
        object_id,
        url: endpoint.url.clone(),
        event_type: event.type_.clone(),
        body,
        signature,
        pending,
    })
}

async fn send(http: &reqwest::Client, job: &Job) -> (Option<u16>, Option<String>) {
    let result = http
        .post(&job.url)
        .header("content-type", "application/json; charset=utf-8")
        .header(
            "user-agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        )
        .header("stripe-signature", &job.signature)
        .body(job.body.clone())
        .send()
        .await;
    match result {
        Ok(res) => (Some(res.status().as_u16()), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

fn record(shared: &Shared, job: &Job, status: Option<u16>, error: Option<String>) {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    shared.lock().deliveries.push(DeliveryRecord {
        event_id: job.pending.event_id.clone(),
        event_type: job.event_type.clone(),
        endpoint_url: job.url.clone(),
        attempt: job.pending.attempts + 1,
        status,
        error,
        signature: job.signature.clone(),
        at,
        redelivery: job.pending.redelivery,
    });
}

/// Success lowers `pending_webhooks`; failure retries after a doubling
/// backoff until the attempts run out.
fn settle(shared: &Shared, mut pending: Pending, ok: bool) {
    let mut st = shared.lock();
    if ok {
        st.mark_delivered(&pending.event_id, &pending.endpoint_id);
        return;
    }
    pending.attempts += 1;
    if pending.attempts >= shared.retry.max_attempts {
        return;
    }
    let factor = 2u32.saturating_pow(pending.attempts - 1);
    let backoff = shared
        .retry
        .initial_backoff
        .saturating_mul(factor)
        .min(shared.retry.max_backoff);
    pending.due = Instant::now() + backoff;
    pending.released = false;
    st.queue.push_back(pending);
}

/// Queues the event again for every endpoint, due now.
pub(crate) fn redeliver(st: &mut State, event_id: &str) -> Option<usize> {
    let seq = st.events.get(event_id)?.seq;
    let endpoints: Vec<String> = st.endpoints.iter().map(|e| e.id.clone()).collect();
    for endpoint_id in &endpoints {
        st.queue.push_back(Pending {
            event_id: event_id.to_owned(),
            event_seq: seq,
            endpoint_id: endpoint_id.clone(),
            attempts: 0,
            due: Instant::now(),
            released: true,
            redelivery: true,
        });
    }
    Some(endpoints.len())
}

/// Releases everything held: due now, whatever `hold` says.
pub(crate) fn flush(st: &mut State) -> usize {
    let now = Instant::now();
    for p in st.queue.iter_mut() {
        p.released = true;
        p.due = p.due.min(now);
    }
    st.queue.len()
}
