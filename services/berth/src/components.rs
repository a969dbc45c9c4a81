//! The only place that knows every service: builds each one from the
//! runtime config and hands back its REST (and gRPC) surface.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use berth_availability::{Availability, GrpcLedger};
use berth_booking::{Booking, BookingConfig, GrpcSettlement};
use berth_ledger::Ledger;
use berth_payment::{PaymentConfig, Payments};
use berth_runtime::auth::{RemoteJwksOptions, Verifier};
use berth_runtime::replicas::Replicas;
use berth_runtime::{Runtime, RuntimeConfig, RuntimeError};
use berth_settlement::Settlement;
use berth_user::{SigningKeySource, UserConfig, Users};
use clap::ValueEnum;
use utoipa::openapi::OpenApi;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] berth_runtime::ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{service}: {message}")]
    Service {
        service: &'static str,
        message: String,
    },
    #[error("configuration: setting `{setting}` {problem}")]
    Setting {
        setting: &'static str,
        problem: String,
    },
    #[error("the ledger has {0} problem(s); see above")]
    LedgerUnsound(usize),
    #[error("money and bookings disagree in {0} place(s); see above")]
    MoneyUnsound(usize),
}

impl StartError {
    pub fn service(service: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Service {
            service,
            message: error.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Component {
    User,
    Availability,
    Booking,
    Payment,
    Notification,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::User => berth_user::NAME,
            Component::Availability => berth_availability::NAME,
            Component::Booking => berth_booking::NAME,
            Component::Payment => berth_payment::NAME,
            Component::Notification => berth_notification::NAME,
        }
    }
}

pub struct GrpcSurface {
    pub routes: tonic::service::Routes,
    pub services: Vec<&'static str>,
    pub descriptor_sets: Vec<&'static [u8]>,
}

pub struct Started {
    pub rest: Router,
    pub grpc: Option<GrpcSurface>,
}

fn database_url(config: &RuntimeConfig) -> Result<&str, StartError> {
    config.database_url.as_deref().ok_or(StartError::Setting {
        setting: "database_url",
        problem: "is required (set BERTH_DATABASE_URL)".to_owned(),
    })
}

/// A string from the service-specific `[service]` table.
fn service_setting<'a>(config: &'a RuntimeConfig, key: &'static str) -> Option<&'a str> {
    config.service.get(key).and_then(|v| v.as_str())
}

pub async fn start(component: Component, rt: &Runtime) -> Result<Started, StartError> {
    let config = &rt.config;
    match component {
        Component::Availability => {
            let verifier = remote_verifier(config)?;
            // Off unless asked for: feeds on internal addresses are an SSRF risk.
            let private_feeds = config
                .service
                .get("allow_private_calendar_urls")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let availability = start_availability(
                rt,
                database_url(config)?,
                config.redis_url.as_deref(),
                private_feeds,
            )
            .await?;
            Ok(Started {
                rest: with_openapi(
                    availability.rest_routes(&verifier),
                    berth_availability::openapi(),
                ),
                grpc: Some(GrpcSurface {
                    routes: availability.grpc_routes(),
                    services: vec![berth_availability::LEDGER_SERVICE_NAME],
                    descriptor_sets: vec![berth_availability::FILE_DESCRIPTOR_SET],
                }),
            })
        }
        Component::Booking => {
            let endpoint =
                service_setting(config, "availability_grpc").ok_or(StartError::Setting {
                    setting: "service.availability_grpc",
                    problem:
                        "is required: the availability gRPC address, e.g. http://availability:9090 \
                          (BERTH_SERVICE__AVAILABILITY_GRPC); a name that resolves to every replica \
                          (a headless Service) or several comma-separated addresses spread the claims"
                            .to_owned(),
                })?;
            // Each address is resolved again every few seconds: a headless
            // Service name reaches every availability replica.
            let replicas = Replicas::start(endpoint, rt.dependencies.clone(), "availability")
                .await
                .map_err(|e| StartError::Setting {
                    setting: "service.availability_grpc",
                    problem: e.to_string(),
                })?;
            let ledger: Arc<dyn Ledger> = Arc::new(GrpcLedger::over(replicas));
            let verifier = remote_verifier(config)?;
            let booking = start_booking(rt, database_url(config)?, ledger).await?;
            Ok(Started {
                rest: with_openapi(booking.rest_routes(&verifier), berth_booking::openapi()),
                grpc: Some(GrpcSurface {
                    routes: booking.grpc_routes(),
                    services: vec![berth_booking::SETTLEMENT_SERVICE_NAME],
                    descriptor_sets: vec![berth_booking::FILE_DESCRIPTOR_SET],
                }),
            })
        }
        Component::User => {
            let mut user = user_config(config);
            // One SMTP and one SMS setting for every service that sends.
            user.smtp = smtp_settings(config)?;
            user.sms = sms_settings(config)?;
            let users = start_users(
                rt,
                database_url(config)?,
                config.redis_url.as_deref(),
                user,
                None,
            )
            .await?;
            Ok(Started {
                rest: with_openapi(users.rest_routes(), berth_user::openapi()),
                grpc: None,
            })
        }
        Component::Payment => {
            if !payments_enabled(config) {
                tracing::warn!(
                    "payments are disabled (service.payments.provider = none): serving only the operational endpoints"
                );
                return Ok(Started {
                    rest: axum::Router::new(),
                    grpc: None,
                });
            }
            let endpoint = service_setting(config, "booking_grpc").ok_or(StartError::Setting {
                setting: "service.booking_grpc",
                problem: "is required: the booking gRPC address, e.g. http://booking:9090 \
                              (BERTH_SERVICE__BOOKING_GRPC)"
                    .to_owned(),
            })?;
            let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
                .map_err(|e| StartError::Setting {
                    setting: "service.booking_grpc",
                    problem: format!("is not a valid URL: {e}"),
                })?
                .connect_lazy();
            let settlement: Arc<dyn Settlement> = Arc::new(GrpcSettlement::new(
                berth_runtime::grpc::grpc_channel(channel, rt.dependencies.get("booking")),
            ));
            let verifier = remote_verifier(config)?;
            let payments = start_payments(
                rt,
                database_url(config)?,
                settlement,
                stripe_config(config)?,
            )
            .await?;
            Ok(Started {
                rest: with_openapi(payments.rest_routes(&verifier), berth_payment::openapi()),
                grpc: None,
            })
        }
        Component::Notification => {
            let (mailer, from) = match smtp_mailer(rt)? {
                Some((mailer, from)) => (Some(mailer), from),
                None => {
                    // Webhooks and texts still go; a platform without mail
                    // still rolls out.
                    tracing::warn!(
                        "email is off: no service.smtp.host (BERTH_SERVICE__SMTP__HOST, \
                         __PORT, __SECURITY, __FROM; __USERNAME and __PASSWORD from a Secret)"
                    );
                    (None, String::new())
                }
            };
            let url = service_setting(config, "availability_url").ok_or(StartError::Setting {
                setting: "service.availability_url",
                problem:
                    "is required: availability's REST base URL, e.g. http://availability:8080 \
                          (BERTH_SERVICE__AVAILABILITY_URL), to name resources and their zones"
                        .to_owned(),
            })?;
            let verifier = remote_verifier(config)?;
            // Off unless asked for: webhooks to internal addresses are an SSRF risk.
            let private_webhooks = config
                .service
                .get("allow_private_webhook_urls")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let notifications = start_notifications(
                rt,
                database_url(config)?,
                berth_notification::Senders {
                    mail: mailer,
                    sms: sms_sender(rt)?,
                },
                &from,
                Arc::new(berth_notification::HttpFetch::new(
                    url,
                    rt.dependencies
                        .get(berth_notification::AVAILABILITY_DEPENDENCY),
                )),
                private_webhooks,
            )
            .await?;
            Ok(Started {
                rest: with_openapi(
                    notifications.rest_routes(&verifier),
                    berth_notification::openapi(),
                ),
                grpc: None,
            })
        }
    }
}

/// One OpenAPI document for every service's REST API (as `berth dev`
/// serves them in one process).
pub fn openapi() -> OpenApi {
    berth_runtime::openapi::merged(
        "Berth",
        [
            berth_user::openapi(),
            berth_availability::openapi(),
            berth_booking::openapi(),
            berth_payment::openapi(),
            berth_notification::openapi(),
        ],
    )
}

/// `rest` plus `GET /openapi.json`, the OpenAPI document of its routes,
/// serialised once: it cannot change while the process runs.
pub fn with_openapi(rest: Router, document: OpenApi) -> Router {
    let json = match document.to_json() {
        Ok(json) => bytes::Bytes::from(json),
        Err(error) => {
            // Not reachable with utoipa's types (string keys, no floats).
            tracing::error!(%error, "the OpenAPI document does not serialise; not serving it");
            return rest;
        }
    };
    rest.route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], json) }
        }),
    )
}

/// A string from the `[service.auth]` table (`BERTH_SERVICE__AUTH__*`).
fn auth_setting<'a>(config: &'a RuntimeConfig, key: &str) -> Option<&'a str> {
    config
        .service
        .get("auth")
        .and_then(|v| v.as_table())
        .and_then(|t| t.get(key))
        .and_then(|v| v.as_str())
}

/// Verifies access tokens against the user service's JWKS. Issuer and
/// audience default to the user service's defaults.
fn remote_verifier(config: &RuntimeConfig) -> Result<Verifier, StartError> {
    let url = auth_setting(config, "jwks_url").ok_or(StartError::Setting {
        setting: "service.auth.jwks_url",
        problem: "is required: the user service's JWKS, e.g. \
                  http://user:8080/.well-known/jwks.json (BERTH_SERVICE__AUTH__JWKS_URL)"
            .to_owned(),
    })?;
    let parsed: http::Uri = url.parse().map_err(|e| StartError::Setting {
        setting: "service.auth.jwks_url",
        problem: format!("is not a valid URL: {e}"),
    })?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(StartError::Setting {
            setting: "service.auth.jwks_url",
            problem: "must be an http or https URL".to_owned(),
        });
    }
    let defaults = UserConfig::default();
    Ok(Verifier::from_jwks_url(
        auth_setting(config, "issuer").unwrap_or(&defaults.issuer),
        auth_setting(config, "audience").unwrap_or(&defaults.audience),
        url,
        RemoteJwksOptions::default(),
    ))
}

/// User-service settings from the `[service]` table (the operator sets them
/// as `BERTH_SERVICE__AUTH__*`); unset keys keep the dev defaults.
fn user_config(config: &RuntimeConfig) -> UserConfig {
    let mut user = UserConfig::default();
    let auth_setting = |key: &str| auth_setting(config, key);
    if let Some(issuer) = auth_setting("issuer") {
        user.issuer = issuer.to_owned();
    }
    if let Some(audience) = auth_setting("audience") {
        user.audience = audience.to_owned();
    }
    if let Some(pem) = auth_setting("jwt_signing_key") {
        user.signing_key = SigningKeySource::Pem(pem.to_owned());
    }
    if let Some(url) = service_setting(config, "public_url") {
        user.public_url = url.to_owned();
    }
    user
}

/// A string from the `[service.<table>]` table (`BERTH_SERVICE__<TABLE>__*`).
fn nested_setting<'a>(config: &'a RuntimeConfig, table: &str, key: &str) -> Option<&'a str> {
    config
        .service
        .get(table)
        .and_then(|v| v.as_table())
        .and_then(|t| t.get(key))
        .and_then(|v| v.as_str())
}

/// `service.payments.provider`: `stripe` (the default) or `none`.
fn payments_enabled(config: &RuntimeConfig) -> bool {
    nested_setting(config, "payments", "provider") != Some("none")
}

/// The payment service's Stripe settings from `[service.stripe]`
/// (`BERTH_SERVICE__STRIPE__API_KEY`, `__WEBHOOK_SECRET` — several
/// comma-separated while a secret is rolled — and `__API_BASE`).
pub fn stripe_config(config: &RuntimeConfig) -> Result<PaymentConfig, StartError> {
    let key = nested_setting(config, "stripe", "api_key").ok_or(StartError::Setting {
        setting: "service.stripe.api_key",
        problem: "is required: a Stripe secret key (BERTH_SERVICE__STRIPE__API_KEY, from a Secret)"
            .to_owned(),
    })?;
    let secrets = nested_setting(config, "stripe", "webhook_secret")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut payments = PaymentConfig::new(key, secrets);
    if let Some(base) = nested_setting(config, "stripe", "api_base") {
        base.clone_into(&mut payments.stripe_api_base);
    }
    Ok(payments)
}

/// `service.smtp.*`, read once for the user and notification services.
fn smtp_settings(
    config: &RuntimeConfig,
) -> Result<Option<berth_notification::messaging::SmtpConfig>, StartError> {
    berth_notification::messaging::smtp_from_settings(&config.service).map_err(|problem| {
        StartError::Setting {
            setting: "service.smtp",
            problem,
        }
    })
}

/// A mail sender shared by services.
pub type Mailer = Arc<dyn berth_notification::messaging::MailSender>;
/// A text sender shared by services.
pub type Texter = Arc<dyn berth_notification::messaging::SmsSender>;

fn sms_settings(
    config: &RuntimeConfig,
) -> Result<Option<berth_notification::messaging::TwilioConfig>, StartError> {
    berth_notification::messaging::twilio_from_settings(&config.service).map_err(|problem| {
        StartError::Setting {
            setting: "service.sms",
            problem,
        }
    })
}

/// Resilience settings of the SMTP server (`[dependencies.smtp]`) and
/// the SMS provider (`[dependencies.sms]`): their circuit breakers.
pub const SMTP_DEPENDENCY: &str = "smtp";
pub const SMS_DEPENDENCY: &str = "sms";

/// The SMS provider of `service.sms.*` behind its breaker; `None` when no
/// account is set.
pub fn sms_sender(rt: &Runtime) -> Result<Option<Texter>, StartError> {
    use berth_notification::messaging::{Guarded, SmsSender, TwilioSms};
    Ok(sms_settings(&rt.config)?.map(|twilio| {
        let provider: Arc<dyn SmsSender> = Arc::new(TwilioSms::new(twilio));
        let texter: Texter = Arc::new(Guarded::new(provider, rt.dependencies.get(SMS_DEPENDENCY)));
        texter
    }))
}

/// The SMTP sender of `service.smtp.*` behind its breaker, and its
/// `From:`; `None` when no host is set.
pub fn smtp_mailer(rt: &Runtime) -> Result<Option<(Mailer, String)>, StartError> {
    use berth_notification::messaging::{Guarded, MailSender, SmtpMailer};
    smtp_settings(&rt.config)?
        .map(|smtp| {
            SmtpMailer::new(&smtp)
                .map(|m| {
                    let server: Arc<dyn MailSender> = Arc::new(m);
                    let mailer: Mailer =
                        Arc::new(Guarded::new(server, rt.dependencies.get(SMTP_DEPENDENCY)));
                    (mailer, smtp.from.clone())
                })
                .map_err(|problem| StartError::Setting {
                    setting: "service.smtp",
                    problem,
                })
        })
        .transpose()
}

/// `service.reminders.offsets`: how long before a confirmed booking's
/// start its reminders go, e.g. `["24h", "1h"]` in the file or
/// `BERTH_SERVICE__REMINDERS__OFFSETS=24h,1h`; `[]` (or `""`) turns
/// reminders off; unset: 24 h and 1 h.
fn reminder_offsets(config: &RuntimeConfig) -> Result<Option<Vec<Duration>>, StartError> {
    let Some(value) = config
        .service
        .get("reminders")
        .and_then(|v| v.as_table())
        .and_then(|t| t.get("offsets"))
    else {
        return Ok(None);
    };
    let problem = |problem: String| StartError::Setting {
        setting: "service.reminders.offsets",
        problem,
    };
    let texts: Vec<&str> = if let Some(items) = value.as_array() {
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| problem(format!("{v} is not a string such as \"24h\"")))
            })
            .collect::<Result<_, _>>()?
    } else if let Some(list) = value.as_str() {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        return Err(problem(format!(
            "{value} is not a list of durations such as [\"24h\", \"1h\"]"
        )));
    };
    texts
        .into_iter()
        .map(|t| berth_notification::parse_reminder_offset(t).map_err(problem))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The notification service with its metrics, readiness check and
/// workers, as both `berth serve notification` and `berth dev` run it.
pub async fn start_notifications(
    rt: &Runtime,
    database_url: &str,
    senders: berth_notification::Senders,
    from: &str,
    availability: Arc<dyn berth_notification::Fetch>,
    private_webhook_urls: bool,
) -> Result<berth_notification::Notifications, StartError> {
    // `Berth <no-reply@example.com>` → the invite's organizer address.
    let organizer = from
        .rsplit_once('<')
        .map_or(from, |(_, address)| address.trim_end_matches('>'))
        .trim()
        .to_owned();
    let reminder_offsets = reminder_offsets(&rt.config)?;
    berth_notification::Notifications::register_metrics(rt.metrics.registry())
        .map_err(|e| StartError::service("notification", e))?;
    let defaults = berth_notification::NotificationConfig::default();
    let notifications = berth_notification::Notifications::connect(
        database_url,
        rt.config.redis_url.as_deref(),
        senders,
        availability,
        berth_notification::NotificationConfig {
            organizer,
            webhooks: berth_notification::WebhookConfig {
                allow_private_urls: private_webhook_urls,
                ..berth_notification::WebhookConfig::default()
            },
            reminder_offsets: reminder_offsets.unwrap_or_else(|| defaults.reminder_offsets.clone()),
            // `service.templates.dir`: templates replacing the built-in ones.
            templates_dir: rt
                .config
                .service
                .get("templates")
                .and_then(|t| t.get("dir"))
                .and_then(|d| d.as_str())
                .filter(|d| !d.is_empty())
                .map(std::path::PathBuf::from),
            ..defaults
        },
    )
    .await
    .map_err(|e| StartError::service("notification", e))?;
    ready_check(rt, "notification", &notifications, |n| async move {
        n.check_ready().await
    });
    notifications.spawn_workers(rt.stop_token());
    Ok(notifications)
}

/// The payment service with its metrics, readiness check and workers, as
/// both `berth serve payment` and `berth dev` run it.
pub async fn start_payments(
    rt: &Runtime,
    database_url: &str,
    settlement: Arc<dyn Settlement>,
    config: PaymentConfig,
) -> Result<Payments, StartError> {
    Payments::register_metrics(rt.metrics.registry())
        .map_err(|e| StartError::service("payment", e))?;
    let payments = Payments::connect(
        database_url,
        rt.config.redis_url.as_deref(),
        settlement,
        rt.dependencies.get(berth_payment::STRIPE_DEPENDENCY),
        config,
    )
    .await
    .map_err(|e| StartError::service("payment", e))?;
    ready_check(rt, "payment", &payments, |p| async move {
        p.check_ready().await
    });
    payments.spawn_workers(rt.stop_token());
    Ok(payments)
}

pub async fn start_booking(
    rt: &Runtime,
    database_url: &str,
    ledger: Arc<dyn Ledger>,
) -> Result<Booking, StartError> {
    let config = BookingConfig {
        max_body_bytes: rt.config.max_body_bytes,
        payments_enabled: payments_enabled(&rt.config),
        ..BookingConfig::default()
    };
    let booking = Booking::connect(database_url, rt.config.redis_url.as_deref(), ledger, config)
        .await
        .map_err(|e| StartError::service("booking", e))?;
    ready_check(
        rt,
        "booking",
        &booking,
        |b| async move { b.check_ready().await },
    );
    booking.spawn_workers(rt.stop_token());
    Ok(booking)
}

/// Availability with its readiness check and hold sweeper, as both
/// `berth serve availability` and `berth dev` run it.
pub async fn start_availability(
    rt: &Runtime,
    database_url: &str,
    redis_url: Option<&str>,
    private_calendar_urls: bool,
) -> Result<Availability, StartError> {
    let availability = Availability::connect(database_url, redis_url)
        .await
        .map_err(|e| StartError::service("availability", e))?
        .with_private_calendar_urls(private_calendar_urls);
    ready_check(rt, "availability", &availability, |a| async move {
        a.check_ready().await
    });
    availability.spawn_sweeper(rt.stop_token());
    Ok(availability)
}

/// The user service with its readiness check and account-event relay.
pub async fn start_users(
    rt: &Runtime,
    database_url: &str,
    redis_url: Option<&str>,
    config: UserConfig,
    senders: Option<berth_notification::Senders>,
) -> Result<Users, StartError> {
    let users = match senders {
        // `berth dev`: the same senders as notifications (a mailbox and a
        // text folder stand in for the providers).
        Some(senders) => {
            let mail = senders.mail.unwrap_or_else(|| {
                let memory: Mailer =
                    Arc::new(berth_notification::messaging::MemoryMailer::default());
                memory
            });
            let sms = senders.sms.unwrap_or_else(|| {
                let memory: Texter = Arc::new(berth_notification::messaging::MemorySms::default());
                memory
            });
            Users::connect_with(database_url, redis_url, config, mail, sms).await
        }
        None => Users::connect(database_url, redis_url, config).await,
    }
    .map_err(|e| StartError::service("user", e))?;
    ready_check(rt, "user", &users, |u| async move { u.check_ready().await });
    users.spawn_event_relay(rt.stop_token());
    Ok(users)
}

/// Registers `check(service)` under `name` in `/readyz`.
fn ready_check<S, F, Fut>(rt: &Runtime, name: &str, service: &S, check: F)
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let service = service.clone();
    rt.health.add_check(name, move || check(service.clone()));
}

/// `berth migrate`: connecting runs each service's embedded migrations.
pub async fn migrate() -> Result<(), StartError> {
    let config = RuntimeConfig::load()?;
    berth_runtime::telemetry::init_command("berth-migrate", config.log_format, &config.log);
    let url = database_url(&config)?;
    let availability = Availability::connect(url, None)
        .await
        .map_err(|e| StartError::service("availability", e))?;
    let ledger: Arc<dyn Ledger> = Arc::new(availability);
    Booking::connect(url, None, ledger, BookingConfig::default())
        .await
        .map_err(|e| StartError::service("booking", e))?;
    Users::connect(url, None, UserConfig::default())
        .await
        .map_err(|e| StartError::service("user", e))?;
    berth_payment::migrate(url)
        .await
        .map_err(|e| StartError::service("payment", e))?;
    berth_notification::migrate(url)
        .await
        .map_err(|e| StartError::service("notification", e))?;
    tracing::info!("migrations applied");
    Ok(())
}

/// `berth check-ledger`: exits non-zero when the ledger is unsound.
pub async fn check_ledger() -> Result<(), StartError> {
    let config = RuntimeConfig::load()?;
    berth_runtime::telemetry::init_command("berth-check-ledger", config.log_format, &config.log);
    let availability = Availability::connect(database_url(&config)?, None)
        .await
        .map_err(|e| StartError::service("availability", e))?;
    let problems = availability
        .find_overlaps()
        .await
        .map_err(|e| StartError::service("availability", e))?;
    for problem in &problems {
        println!("{problem}");
    }
    if problems.is_empty() {
        println!("ledger sound: no overlaps, no over-booked slots");
        Ok(())
    } else {
        Err(StartError::LedgerUnsound(problems.len()))
    }
}

/// `berth check-money`: every priced booking against its payment and what
/// Stripe shows; exits non-zero when they disagree.
pub async fn check_money() -> Result<(), StartError> {
    let config = RuntimeConfig::load()?;
    berth_runtime::telemetry::init_command("berth-check-money", config.log_format, &config.log);
    let url = database_url(&config)?;
    let availability = Availability::connect(url, None)
        .await
        .map_err(|e| StartError::service("availability", e))?;
    let ledger: Arc<dyn Ledger> = Arc::new(availability);
    let booking = Booking::connect(url, None, ledger, BookingConfig::default())
        .await
        .map_err(|e| StartError::service("booking", e))?;
    let dependencies = berth_runtime::resilience::Dependencies::new(
        &prometheus::Registry::new(),
        config.dependencies.clone(),
    )
    .map_err(|e| StartError::service("payment", e))?;
    let settlement: Arc<dyn Settlement> = Arc::new(booking.clone());
    let payments = Payments::connect(
        url,
        None,
        settlement,
        dependencies.get(berth_payment::STRIPE_DEPENDENCY),
        stripe_config(&config)?,
    )
    .await
    .map_err(|e| StartError::service("payment", e))?;
    let bookings = booking
        .priced_bookings()
        .await
        .map_err(|e| StartError::service("booking", e))?;
    let findings = payments
        .check_money(&bookings)
        .await
        .map_err(|e| StartError::service("payment", e))?;
    for finding in &findings {
        println!("{finding}");
    }
    if findings.is_empty() {
        println!(
            "money sound: {} priced booking(s) agree with their payments and Stripe",
            bookings.len()
        );
        Ok(())
    } else {
        Err(StartError::MoneyUnsound(findings.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merged_openapi_document_is_complete() {
        let every_service: Vec<String> = [
            berth_user::openapi(),
            berth_availability::openapi(),
            berth_booking::openapi(),
            berth_payment::openapi(),
            berth_notification::openapi(),
        ]
        .iter()
        .flat_map(berth_runtime::openapi::operations)
        .collect();
        let routes: Vec<&str> = every_service.iter().map(String::as_str).collect();
        let defects = berth_runtime::openapi::defects(&openapi(), &routes);
        assert!(defects.is_empty(), "{defects:#?}");
    }

    #[test]
    fn reminder_offsets_come_from_a_list_or_an_environment_string() {
        let with = |toml_text: &str| {
            let config = RuntimeConfig {
                service: toml_text.parse().unwrap_or_default(),
                ..RuntimeConfig::default()
            };
            reminder_offsets(&config)
        };
        let hours = |h: &[u64]| Some(h.iter().map(|h| Duration::from_secs(h * 3600)).collect());
        assert_eq!(with("").ok().flatten(), None);
        assert_eq!(
            with("[reminders]\noffsets = [\"24h\", \"1h\"]")
                .ok()
                .flatten(),
            hours(&[24, 1])
        );
        assert_eq!(
            with("[reminders]\noffsets = \"48h, 2h\"").ok().flatten(),
            hours(&[48, 2])
        );
        assert_eq!(with("[reminders]\noffsets = []").ok().flatten(), hours(&[]));
        assert!(with("[reminders]\noffsets = [\"soon\"]").is_err());
        assert!(with("[reminders]\noffsets = 3").is_err());
    }

    /// In a cluster the user service and booking run apart and meet only
    /// on Redis: booking must read account events where user writes them.
    #[test]
    fn booking_reads_account_events_where_user_publishes_them() {
        assert_eq!(
            BookingConfig::default().accounts_stream_key,
            UserConfig::default().event_stream_key
        );
        assert_ne!(
            BookingConfig::default().stream_key,
            UserConfig::default().event_stream_key,
            "account events share a stream with booking events"
        );
    }
}
