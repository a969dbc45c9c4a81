//! The clients' side of P7: paid bookings (hold → start paying → confirm
//! at Stripe) and free ones (hold → confirm), 64 clients taking jobs in
//! turn, each on kept-alive HTTP/1.1 connections of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::load::{Client, post};

/// What one round's clients saw.
#[derive(Default)]
pub struct Seen {
    /// Per request kind (in the order sent), each answer's latency.
    pub latencies: Vec<(&'static str, Vec<Duration>)>,
    /// Answers that were not what the flow needs, with their body.
    pub errors: Vec<String>,
    pub elapsed: Duration,
    /// Each intent confirmed at Stripe and when its answer came (Unix µs).
    pub confirmed: Vec<(String, i64)>,
}

impl Seen {
    fn add(&mut self, kind: &'static str, latency: Duration) {
        match self.latencies.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, all)) => all.push(latency),
            None => self.latencies.push((kind, vec![latency])),
        }
    }

    fn merge(&mut self, other: Seen) {
        for (kind, all) in other.latencies {
            for latency in all {
                self.add(kind, latency);
            }
        }
        self.errors.extend(other.errors);
        self.confirmed.extend(other.confirmed);
    }
}

/// Where the clients send what.
#[derive(Clone)]
pub struct Targets {
    /// `host:port` of booking, payment and the emulator.
    pub booking: String,
    pub payment: String,
    pub emulator: String,
    /// One bearer per client (its own customer).
    pub customers: Arc<Vec<String>>,
}

/// One job: the booking request's JSON body.
pub type Job = Bytes;

struct Connections {
    booking: Client,
    payment: Client,
    emulator: Client,
}

/// Sends `request`; (status, JSON body, latency).
async fn call(client: &mut Client, request: Request<Full<Bytes>>) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = client.send(request).await;
    let latency = started.elapsed();
    let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response.status().as_u16(), body, latency)
}

fn keyed<'a>(bearer: &'a str, key: &'a str) -> [(&'a str, &'a str); 2] {
    [("authorization", bearer), ("idempotency-key", key)]
}

/// Books and pays for `job`: hold, `POST /v1/payments`, confirm at the
/// emulator with a test card (as Stripe.js would). Confirmation follows
/// by webhook, on the server's side.
async fn paid_job(c: &mut Connections, bearer: &str, job: Job, seen: &mut Seen) {
    let key = uuid::Uuid::new_v4().to_string();
    let request = post("/v1/bookings", &keyed(bearer, &key), job);
    let (status, booking, latency) = call(&mut c.booking, request).await;
    seen.add("hold", latency);
    if status != 201 {
        seen.errors.push(format!("hold: {status} {booking}"));
        return;
    }
    let body = json!({"booking_id": booking["id"]}).to_string();
    let key = uuid::Uuid::new_v4().to_string();
    let request = post("/v1/payments", &keyed(bearer, &key), Bytes::from(body));
    let (status, payment, latency) = call(&mut c.payment, request).await;
    seen.add("POST /v1/payments", latency);
    let (Some(intent), Some(secret)) = (
        payment["payment_intent"].as_str(),
        payment["client_secret"].as_str(),
    ) else {
        seen.errors.push(format!("payment: {status} {payment}"));
        return;
    };
    // Test-mode ids and secrets are [A-Za-z0-9_]: nothing to escape.
    let form = format!("client_secret={secret}&payment_method=pm_card_visa");
    let request = Request::post(format!("/v1/payment_intents/{intent}/confirm"))
        .header(http::header::HOST, "bench")
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", crate::support::paid::PUBLISHABLE_KEY),
        )
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    let (status, confirmed, latency) = call(&mut c.emulator, request).await;
    seen.add("confirm at Stripe", latency);
    if status != 200 || confirmed["status"] != "requires_capture" {
        seen.errors.push(format!("confirm: {status} {confirmed}"));
        return;
    }
    let now = chrono::Utc::now().timestamp_micros();
    seen.confirmed.push((intent.to_owned(), now));
}

/// A free booking: hold, then confirm it (what P1 times is the hold).
async fn free_job(c: &mut Connections, bearer: &str, job: Job, seen: &mut Seen) {
    let key = uuid::Uuid::new_v4().to_string();
    let request = post("/v1/bookings", &keyed(bearer, &key), job);
    let (status, booking, latency) = call(&mut c.booking, request).await;
    seen.add("hold", latency);
    let Some(id) = booking["id"].as_str().filter(|_| status == 201) else {
        seen.errors.push(format!("hold: {status} {booking}"));
        return;
    };
    let key = uuid::Uuid::new_v4().to_string();
    let path = format!("/v1/bookings/{id}/confirm");
    let request = post(&path, &keyed(bearer, &key), Bytes::new());
    let (status, confirmed, latency) = call(&mut c.booking, request).await;
    seen.add("confirm", latency);
    if status != 200 || confirmed["status"] != "confirmed" {
        seen.errors.push(format!("confirm: {status} {confirmed}"));
    }
}

/// `clients` clients take `jobs` in turn, paying for each (`paid`) or not.
/// `pace`: jobs per second to start at most (job `n` not before `n / pace`
/// seconds), for a round below saturation; `None` starts each job as soon
/// as a client is free.
pub async fn run(
    targets: &Targets,
    clients: usize,
    jobs: Vec<Job>,
    paid: bool,
    pace: Option<f64>,
) -> Seen {
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut connected = Vec::new();
    for _ in 0..clients {
        let mut c = Connections {
            booking: Client::new(&targets.booking),
            payment: Client::new(&targets.payment),
            emulator: Client::new(&targets.emulator),
        };
        // Connected outside the timed part.
        c.booking.send(crate::support::load::get("/livez")).await;
        if paid {
            c.payment.send(crate::support::load::get("/livez")).await;
            c.emulator
                .send(crate::support::load::get("/v1/nothing"))
                .await;
        }
        connected.push(c);
    }
    let started = Instant::now();
    let workers: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let (jobs, next) = (jobs.clone(), next.clone());
            let bearer = targets.customers[i % targets.customers.len()].clone();
            tokio::spawn(async move {
                let mut seen = Seen::default();
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = jobs.get(job) else {
                        break seen;
                    };
                    if let Some(rate) = pace {
                        let due = started + Duration::from_secs_f64(job as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    if paid {
                        paid_job(&mut c, &bearer, body.clone(), &mut seen).await;
                    } else {
                        free_job(&mut c, &bearer, body.clone(), &mut seen).await;
                    }
                }
            })
        })
        .collect();
    let mut all = Seen::default();
    for worker in workers {
        all.merge(worker.await.unwrap());
    }
    all.elapsed = started.elapsed();
    all
}
