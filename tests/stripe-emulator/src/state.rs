//! Everything the emulator knows, behind one lock. Operations run to
//! completion under it, so each call is atomic, as it is on Stripe.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::control::types::{DeliveryRecord, IntentState, RefundState, StateSnapshot};
use crate::faults::Faults;
use crate::model::{Event, Intent, PaymentMethod, Refund};
use crate::{Config, Endpoint, WebhookRetry};

/// Shared by the API, control and webhook tasks.
pub(crate) struct Shared {
    pub api_key: String,
    pub publishable_key: String,
    pub retry: WebhookRetry,
    state: Mutex<State>,
    /// Wakes the webhook worker when deliveries are queued or released.
    pub wake: Notify,
}

impl Shared {
    pub(crate) fn new(config: &Config) -> Self {
        let mut state = State::new(config.seed);
        state.set_endpoints(config.endpoints.clone());
        Self {
            api_key: config.api_key.clone(),
            publishable_key: config.publishable_key.clone(),
            retry: config.webhook_retry.clone(),
            state: Mutex::new(state),
            wake: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves plain data, still consistent
        // enough for a test double; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Who caused an event: `request` on the Event object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct EndpointState {
    pub id: String,
    pub url: String,
    pub secrets: Vec<String>,
}

/// A delivery waiting to be sent (first try, retry or redelivery).
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub event_id: String,
    pub event_seq: u64,
    pub endpoint_id: String,
    /// Attempts already made.
    pub attempts: u32,
    pub due: Instant,
    /// Released by a flush: sent even while `hold` is on.
    pub released: bool,
    pub redelivery: bool,
}

/// A saved answer, or a request still running, under one idempotency key.
#[derive(Debug, Clone)]
pub(crate) enum Saved {
    InFlight {
        fingerprint: Fingerprint,
    },
    Done {
        fingerprint: Fingerprint,
        status: u16,
        body: Value,
        request_id: String,
        at: Instant,
    },
}

/// What must match for a replay: endpoint and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub method: String,
    pub path: String,
    pub params: crate::api::form::Params,
}

pub(crate) struct State {
    ids: StdRng,
    faults_rng: StdRng,
    seq: u64,
    pub intents: HashMap<String, Intent>,
    pub refunds: HashMap<String, Refund>,
    pub events: HashMap<String, Event>,
    pub payment_methods: HashMap<String, PaymentMethod>,
    /// Charge id → intent id (the emulator has no Charge objects).
    pub charges: HashMap<String, String>,
    /// Endpoints of each event that have not answered 2xx yet.
    pub undelivered: HashMap<String, BTreeSet<String>>,
    pub idempotency: HashMap<(String, String), Saved>,
    pub faults: Faults,
    pub endpoints: Vec<EndpointState>,
    pub queue: VecDeque<Pending>,
    pub deliveries: Vec<DeliveryRecord>,
}

const ID_CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Stripe keeps idempotency keys for 24 hours.
pub(crate) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

impl State {
    fn new(seed: u64) -> Self {
        Self {
            ids: StdRng::seed_from_u64(seed),
            // Separate stream: switching faults on must not change the ids.
            faults_rng: StdRng::seed_from_u64(seed ^ 0x5EED_FA17),
            seq: 0,
            intents: HashMap::new(),
            refunds: HashMap::new(),
            events: HashMap::new(),
            payment_methods: HashMap::new(),
            charges: HashMap::new(),
            undelivered: HashMap::new(),
            idempotency: HashMap::new(),
            faults: Faults::default(),
            endpoints: Vec::new(),
            queue: VecDeque::new(),
            deliveries: Vec::new(),
        }
    }

    pub(crate) fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn random(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| ID_CHARS[self.ids.random_range(0..ID_CHARS.len())] as char)
            .collect()
    }

    /// `pi_3Q...`-style ids: prefix and 24 characters from the seeded RNG.
    pub(crate) fn new_id(&mut self, prefix: &str) -> String {
        format!("{prefix}_{}", self.random(24))
    }

    /// Draws the seeded coin for `api_error_rate`.
    pub(crate) fn draw_error(&mut self) -> bool {
        let rate = self.faults.api_error_rate;
        rate > 0.0 && self.faults_rng.random_bool(rate.clamp(0.0, 1.0))
    }

    pub(crate) fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        let mut next = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            next.push(EndpointState {
                id: self.new_id("we"),
                url: e.url,
                secrets: e.secrets,
            });
        }
        self.endpoints = next;
        // Deliveries to endpoints that are gone are dropped with them.
        let live: BTreeSet<&str> = self.endpoints.iter().map(|e| e.id.as_str()).collect();
        self.queue.retain(|p| live.contains(p.endpoint_id.as_str()));
    }

    /// Records an event and queues one delivery per endpoint.
    pub(crate) fn emit(
        &mut self,
        origin: &Origin,
        type_: &str,
        object: Value,
        previous_attributes: Option<Value>,
    ) -> String {
        let id = self.new_id("evt");
        let seq = self.next_seq();
        let targets: BTreeSet<String> = self.endpoints.iter().map(|e| e.id.clone()).collect();
        let now = Instant::now();
        for endpoint_id in &targets {
            self.queue.push_back(Pending {
                event_id: id.clone(),
                event_seq: seq,
                endpoint_id: endpoint_id.clone(),
                attempts: 0,
                due: now,
                released: false,
                redelivery: false,
            });
        }
        let event = Event {
            id: id.clone(),
            seq,
            type_: type_.to_owned(),
            created: Self::now(),
            object,
            previous_attributes,
            request_id: origin.request_id.clone(),
            idempotency_key: origin.idempotency_key.clone(),
            pending_webhooks: targets.len() as i64,
        };
        self.undelivered.insert(id.clone(), targets);
        self.events.insert(id.clone(), event);
        id
    }

    /// An endpoint answered 2xx: the event's `pending_webhooks` drops.
    pub(crate) fn mark_delivered(&mut self, event_id: &str, endpoint_id: &str) {
        if let Some(set) = self.undelivered.get_mut(event_id) {
            set.remove(endpoint_id);
            let left = set.len() as i64;
            if let Some(e) = self.events.get_mut(event_id) {
                e.pending_webhooks = left;
            }
        }
    }

    pub(crate) fn snapshot(&self) -> StateSnapshot {
        let mut intents: Vec<&Intent> = self.intents.values().collect();
        intents.sort_by_key(|i| i.seq);
        let mut refunds: Vec<&Refund> = self.refunds.values().collect();
        refunds.sort_by_key(|r| r.seq);
        StateSnapshot {
            payment_intents: intents
                .into_iter()
                .map(|i| IntentState {
                    id: i.id.clone(),
                    status: i.status.as_str().to_owned(),
                    amount: i.amount,
                    amount_capturable: i.amount_capturable,
                    amount_received: i.amount_received,
                    amount_refunded: i.amount_refunded,
                    currency: i.currency.clone(),
                    capture_method: i.capture_method.clone(),
                    cancellation_reason: i.cancellation_reason.clone(),
                    metadata: i.metadata.clone(),
                    created: i.created,
                })
                .collect(),
            refunds: refunds
                .into_iter()
                .map(|r| RefundState {
                    id: r.id.clone(),
                    payment_intent: r.payment_intent.clone(),
                    amount: r.amount,
                    currency: r.currency.clone(),
                    reason: r.reason.clone(),
                    status: "succeeded".into(),
                    created: r.created,
                })
                .collect(),
        }
    }
}
