//! The `notification` service: turns booking and payment events into
//! messages people receive, each exactly once in effect.
//!
//! - Events come from Redis streams in consumer groups (`events`; in
//!   process under `berth dev`) and are recorded once by event id, in the
//!   same transaction as the deliveries they create (`intake`, `store`).
//! - A delivery row is the durable intent: a sender takes due rows under a
//!   lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), sends, and writes the
//!   outcome; failures retry with backoff, a permanent refusal is recorded
//!   and not retried (`worker`).
//! - Email goes through the shared mail sender, texts (where the booking
//!   carries the customer's verified phone and a provider is set up)
//!   through the shared SMS sender (`berth_messaging`, [`Senders`]).
//! - Messages are rendered from templates with the booking's times in its
//!   resource's zone, and carry an iCalendar invite whose `UID` is the
//!   booking's and whose `SEQUENCE` is its version (`render`); what the
//!   booking events lack (resource name, zone) comes from availability's
//!   public API (`directory`).
//! - Webhooks to endpoints platforms register, signed as Standard Webhooks
//!   specifies, retried for about three days, then dead-lettered and
//!   replayable; destinations pass the runtime's egress guard (`webhooks`).
//! - Reminders before each confirmed booking's start, one per configured
//!   offset, stored with the booking version they were planned for, moved
//!   or ended with every event that changes the booking, and checked
//!   again when due: a stale one is dropped, a late one skipped and
//!   recorded, a current one handed to `deliveries` (`reminders`).
//!
//! Templates are minijinja rather than askama: they are data (loaded by
//! name, and to be overridable per platform without rebuilding), and
//! minijinja renders any serde value with Jinja's autoescaping for `.html`,
//! where askama compiles templates into the binary as Rust code.

mod config;
mod directory;
mod error;
mod events;
mod intake;
mod metrics;
mod model;
mod reminders;
mod render;
mod rest;
mod store;
mod webhooks;
mod worker;

use std::sync::Arc;

use axum::Router;
use berth_messaging::{MailSender, SmsSender};
use berth_runtime::auth::Verifier;
use berth_runtime::egress::{Egress, EgressOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The senders this service takes (shared with the user service).
pub use berth_messaging as messaging;
pub use config::{NotificationConfig, parse_offset as parse_reminder_offset};
pub use directory::{Fetch, HttpFetch, ResourceInfo, RouterFetch};
pub use error::NotificationError;
pub use intake::{BOOKINGS as BOOKINGS_GROUP, PAYMENTS as PAYMENTS_GROUP};
pub use rest::openapi;
pub use webhooks::{EVENT_TYPES as WEBHOOK_EVENT_TYPES, WebhookConfig};

use directory::Directory;
use store::Store;

/// Name used in logs, metrics and `berth serve <name>`.
pub const NAME: &str = "notification";
/// The resilience settings' name for lookups in availability (`[dependencies.availability]`).
pub const AVAILABILITY_DEPENDENCY: &str = "availability";

/// Applies the notification service's migrations to `database_url` (`berth migrate`).
pub async fn migrate(database_url: &str) -> Result<(), NotificationError> {
    Store::connect(database_url, 1).await.map(drop)
}

/// Where messages go out.
#[derive(Clone)]
pub struct Senders {
    /// Email; `None` sends none (webhooks and texts still go).
    pub mail: Option<Arc<dyn MailSender>>,
    /// Texts; `None` sends none (customers' phones are ignored).
    pub sms: Option<Arc<dyn SmsSender>>,
}

/// The notification service: cheap to clone, shared by handlers and workers.
#[derive(Clone)]
pub struct Notifications {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: NotificationConfig,
    directory: Directory,
    templates: render::Templates,
    /// `None`: no SMTP server; nothing is planned as email.
    mailer: Option<Arc<dyn MailSender>>,
    /// `None`: no text provider; nothing is planned as a text.
    sms: Option<Arc<dyn SmsSender>>,
    redis: Option<redis::Client>,
    /// Poked after deliveries are recorded, so the sender starts at once.
    sender_wake: Notify,
    webhook_wake: Notify,
    /// Webhook requests: through the SSRF guard unless
    /// `webhooks.allow_private_urls`; redirects not followed.
    egress: Egress,
}

impl Notifications {
    /// Opens the database (`postgres://…` or `sqlite:…`) and runs its
    /// migrations. Mail goes through `senders.mail`, texts through
    /// `senders.sms`; resources are looked up through `availability`.
    pub async fn connect(
        database_url: &str,
        redis_url: Option<&str>,
        senders: Senders,
        availability: Arc<dyn Fetch>,
        config: NotificationConfig,
    ) -> Result<Self, NotificationError> {
        config.validate()?;
        let templates = render::Templates::load(config.templates_dir.as_deref())
            .map_err(NotificationError::Config)?;
        let redis = redis_url.map(redis::Client::open).transpose()?;
        let store = Store::connect(database_url, config.max_connections)
            .await?
            .with_reminder_offsets(&config.reminder_offsets)
            .with_reminder_channels(senders.mail.is_some(), senders.sms.is_some());
        let egress = Egress::new(&EgressOptions {
            user_agent: concat!("berth-webhooks/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: config.webhooks.timeout,
            connect_timeout: config.webhooks.timeout,
            max_redirects: 0,
        })
        .map_err(|e| NotificationError::Config(format!("webhook HTTP client: {e}")))?
        .allowing_private(config.webhooks.allow_private_urls);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                config,
                directory: Directory::new(availability),
                templates,
                mailer: senders.mail,
                sms: senders.sms,
                redis,
                sender_wake: Notify::new(),
                webhook_wake: Notify::new(),
                egress,
            }),
        })
    }

    /// `/v1/notifications/…`, `/v1/webhook-endpoints/…` and
    /// `/v1/webhook-deliveries/…`, behind `verifier`.
    pub fn rest_routes(&self, verifier: &Verifier) -> Router {
        rest::routes(self.clone(), verifier)
    }

    /// Readiness: the database answers. SMTP and the SMS provider are not
    /// checked: their outages are absorbed by the sender's retries.
    pub async fn check_ready(&self) -> Result<(), String> {
        self.inner.store.ping().await.map_err(|e| e.to_string())
    }

    /// Adds this service's metrics to `registry`.
    pub fn register_metrics(registry: &prometheus::Registry) -> prometheus::Result<()> {
        metrics::register(registry)
    }

    /// Starts the sender and (with Redis) the event consumers; they stop
    /// when `stop` is cancelled.
    pub fn spawn_workers(&self, stop: CancellationToken) {
        worker::spawn(self.clone(), stop.clone());
        reminders::spawn(self.clone(), stop.clone());
        webhooks::sender::spawn(self.clone(), stop.clone());
        events::spawn_consumers(self, stop);
    }

    fn wake_sender(&self) {
        self.inner.sender_wake.notify_one();
        self.inner.webhook_wake.notify_one();
    }
}
