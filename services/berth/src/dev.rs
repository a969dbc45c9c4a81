//! `berth dev`: every service in one process, on embedded SQLite files and
//! in-process locks and events, behind one HTTP listener. Booking calls
//! availability through the same `Ledger` trait as in Kubernetes, here
//! implemented by the availability service itself; payment calls booking
//! through `Settlement` likewise.
//!
//! Payments run in test mode against the Stripe-API emulator, started in
//! this process on its own loopback port (its webhooks come back to this
//! listener), unless a Stripe key is configured (`service.stripe.*`). The
//! emulator is only ever started here: `berth serve` has no way to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use berth_booking::Booking;
use berth_ledger::Ledger;
use berth_runtime::{Runtime, RuntimeConfig};
use berth_user::{UserConfig, Users};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::components::{
    StartError, start_availability, start_booking, start_payments, start_users, stripe_config,
};
use crate::seed;

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".local/share/berth/dev")
}

/// Each service gets its own file, as each has its own schema in production.
fn sqlite_url(dir: &std::path::Path, service: &str) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.join(format!("{service}.db")).display()
    )
}

pub async fn run(addr: SocketAddr, data_dir: Option<PathBuf>) -> Result<(), StartError> {
    let mut config = RuntimeConfig::load()?;
    config.http_addr = addr;
    let rt = Runtime::new("berth-dev", config)?;
    let dir = data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| StartError::Setting {
        setting: "--data-dir",
        problem: format!("{} cannot be created: {e}", dir.display()),
    })?;

    let senders = dev_senders(&rt, &dir)?;
    let users = start_users(
        &rt,
        &sqlite_url(&dir, "user"),
        None,
        UserConfig::default(),
        Some(senders.senders.clone()),
    )
    .await?;
    users
        .ensure_demo_user(seed::DEMO_EMAIL, seed::DEMO_PASSWORD)
        .await
        .map_err(|e| StartError::service("user", e))?;
    // The user service is in this process: verify with its keys directly.
    let verifier = users.verifier();

    // A laptop's own calendar server is a fine feed here.
    let availability =
        start_availability(&rt, &sqlite_url(&dir, "availability"), None, true).await?;
    let ledger: Arc<dyn Ledger> = Arc::new(availability.clone());
    let booking = start_booking(&rt, &sqlite_url(&dir, "booking"), ledger).await?;
    forward_account_deletions(&users, &booking, rt.stop_token());

    let (payment_config, emulator) = payments_mode(&rt, addr).await?;
    let settlement: Arc<dyn berth_settlement::Settlement> = Arc::new(booking.clone());
    let payments = start_payments(
        &rt,
        &sqlite_url(&dir, "payment"),
        settlement,
        payment_config,
    )
    .await?;
    forward_booking_events(&booking, &payments, rt.stop_token());
    let notifications = dev_notifications(&rt, &dir, &senders, &availability, &verifier).await?;
    forward_to_notifications(&booking, &payments, &notifications, rt.stop_token());

    let app = Router::new()
        .merge(availability.rest_routes(&verifier))
        .merge(booking.rest_routes(&verifier))
        .merge(users.rest_routes())
        .merge(payments.rest_routes(&verifier))
        .merge(notifications.rest_routes(&verifier));
    let app = rt.finish_app(crate::components::with_openapi(
        app,
        crate::components::openapi(),
    ));
    let demo = seed::ensure_demo(&app).await?;

    let listener = Runtime::bind(addr).await?;
    tracing::info!(%addr, data = %dir.display(), "berth dev: all services in one process");
    print_banner(addr, &dir, &demo, emulator.as_ref());
    println!("  notifications: {}", senders.mail_to);
    println!("  texts: {}\n", senders.texts_to);
    let served = crate::run_until_stopped(&rt, listener, app).await;
    if let Some(emulator) = emulator {
        emulator.stop().await;
    }
    served
}

/// Test mode (the emulator, in this process) unless a Stripe key is set.
async fn payments_mode(
    rt: &Runtime,
    addr: SocketAddr,
) -> Result<
    (
        berth_payment::PaymentConfig,
        Option<berth_stripe_emulator::Running>,
    ),
    StartError,
> {
    let configured = rt
        .config
        .service
        .get("stripe")
        .and_then(|v| v.as_table())
        .is_some_and(|t| t.contains_key("api_key"));
    if configured {
        return Ok((stripe_config(&rt.config)?, None));
    }
    let secret = format!("whsec_dev_{:032x}", rand::random::<u128>());
    // Next to the platform's port, so the README's commands can name it.
    let emulator_addr = SocketAddr::new(addr.ip(), addr.port().checked_add(1).unwrap_or(0));
    let config = berth_stripe_emulator::Config {
        addr: if addr.port() == 0 {
            SocketAddr::new(addr.ip(), 0)
        } else {
            emulator_addr
        },
        api_key: DEV_STRIPE_KEY.to_owned(),
        // The emulator forgets everything on exit while the payments stay
        // on disk: new intents must not reuse the ids of earlier runs.
        seed: rand::random(),
        publishable_key: DEV_PUBLISHABLE_KEY.to_owned(),
        endpoints: vec![berth_stripe_emulator::Endpoint {
            url: format!("http://{addr}/v1/webhooks/stripe"),
            secrets: vec![secret.clone()],
        }],
        ..berth_stripe_emulator::Config::default()
    };
    let emulator = berth_stripe_emulator::Emulator::start(config)
        .await
        .map_err(|e| StartError::service("stripe emulator", e))?;
    tracing::warn!(stripe = %emulator.base_url, "payments in TEST MODE: Stripe is the built-in emulator; no money moves");
    let mut payments = berth_payment::PaymentConfig::new(DEV_STRIPE_KEY, vec![secret]);
    payments.stripe_api_base = emulator.base_url.clone();
    Ok((payments, Some(emulator)))
}

const DEV_STRIPE_KEY: &str = "sk_test_berth_dev";
const DEV_PUBLISHABLE_KEY: &str = "pk_test_berth_dev";

/// No Redis stream here: booking events reach the payment service (a
/// cancellation to refund) through booking's in-process channel.
fn forward_booking_events(
    booking: &Booking,
    payments: &berth_payment::Payments,
    stop: CancellationToken,
) {
    let mut events = booking.subscribe_events();
    let payments = payments.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) => {
                    if let Err(error) = payments
                        .handle_booking_event(event.id, &event.event_type, event.booking_id)
                        .await
                    {
                        tracing::warn!(%error, booking = %event.booking_id, "a booking event did not reach payments");
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "booking events missed; the payment reconciler catches up"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// Where `berth dev` sends, for every service in it, and what the banner
/// says about it.
struct DevSenders {
    senders: berth_notification::Senders,
    from: String,
    mail_to: String,
    texts_to: String,
}

/// Mail through `service.smtp.*` when set, otherwise into
/// `<data dir>/mailbox` as `.eml` files; texts through `service.sms.*`
/// when set, otherwise into `<data dir>/texts` as `.txt` files.
fn dev_senders(rt: &Runtime, dir: &std::path::Path) -> Result<DevSenders, StartError> {
    use berth_notification::messaging::{FolderSms, MailSender, MailboxMailer, SmsSender};
    let folder_problem = |problem| StartError::Setting {
        setting: "--data-dir",
        problem,
    };
    let (mail, from, mail_to) = match crate::components::smtp_mailer(rt)? {
        Some((mailer, from)) => (
            mailer,
            from,
            "mail goes out through service.smtp".to_owned(),
        ),
        None => {
            let from = "Berth <no-reply@berth.dev>".to_owned();
            let mailbox = dir.join("mailbox");
            let mailer: Arc<dyn MailSender> =
                Arc::new(MailboxMailer::new(&mailbox, &from).map_err(folder_problem)?);
            let mail_to = format!(
                "no SMTP configured: every message is an .eml file in {} (open it in a mail client; its invite in a calendar)",
                mailbox.display()
            );
            (mailer, from, mail_to)
        }
    };
    let (sms, texts_to) = match crate::components::sms_sender(rt)? {
        Some(texter) => (texter, "texts go out through service.sms".to_owned()),
        None => {
            let folder = dir.join("texts");
            let texter: Arc<dyn SmsSender> =
                Arc::new(FolderSms::new(&folder).map_err(folder_problem)?);
            let texts_to = format!(
                "no SMS provider configured: phone login codes and booking texts are .txt files in {}",
                folder.display()
            );
            (texter, texts_to)
        }
    };
    Ok(DevSenders {
        senders: berth_notification::Senders {
            mail: Some(mail),
            sms: Some(sms),
        },
        from,
        mail_to,
        texts_to,
    })
}

/// Notifications in process, sending through `senders`.
async fn dev_notifications(
    rt: &Runtime,
    dir: &std::path::Path,
    senders: &DevSenders,
    availability: &berth_availability::Availability,
    verifier: &berth_runtime::auth::Verifier,
) -> Result<berth_notification::Notifications, StartError> {
    // Resource names and zones from availability's own router, in process.
    let fetch = Arc::new(berth_notification::RouterFetch::new(
        availability.rest_routes(verifier),
    ));
    let notifications = crate::components::start_notifications(
        rt,
        &sqlite_url(dir, "notification"),
        senders.senders.clone(),
        &senders.from,
        fetch,
        // A receiver on the laptop is a fine webhook endpoint here.
        true,
    )
    .await?;
    tracing::info!(mail_to = %senders.mail_to, texts_to = %senders.texts_to, "notifications in process");
    Ok(notifications)
}

/// No Redis streams here: booking and payment events reach notifications
/// through the services' in-process channels, encoded as the outboxes
/// write them to the streams.
fn forward_to_notifications(
    booking: &Booking,
    payments: &berth_payment::Payments,
    notifications: &berth_notification::Notifications,
    stop: CancellationToken,
) {
    let mut bookings = booking.subscribe_events();
    let mut paid = payments.subscribe_events();
    let notifications = notifications.clone();
    tokio::spawn(async move {
        loop {
            let (json, what) = tokio::select! {
                _ = stop.cancelled() => return,
                event = bookings.recv() => match event {
                    Ok(event) => (serde_json::to_string(&event), "booking"),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "booking events missed by notifications");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                },
                event = paid.recv() => match event {
                    Ok(event) => (serde_json::to_string(&event), "payment"),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "payment events missed by notifications");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                },
            };
            let Ok(json) = json else { continue };
            let handled = if what == "booking" {
                notifications.handle_booking_event(&json).await
            } else {
                notifications.handle_payment_event(&json).await
            };
            if let Err(error) = handled {
                tracing::warn!(%error, what, "an event did not reach notifications");
            }
        }
    });
}

/// There is no Redis stream here: account deletions reach booking through
/// the user service's in-process channel instead.
fn forward_account_deletions(users: &Users, booking: &Booking, stop: CancellationToken) {
    let mut events = users.subscribe_account_events();
    let booking = booking.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) if event.event_type == berth_user::ACCOUNT_DELETED => {
                    if let Err(error) = booking
                        .handle_account_deleted(event.id, &event.account_id)
                        .await
                    {
                        tracing::warn!(%error, account = %event.account_id, "bookings not anonymised");
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "account events missed; their bookings keep personal data"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

fn print_banner(
    addr: SocketAddr,
    dir: &std::path::Path,
    demo: &seed::Demo,
    emulator: Option<&berth_stripe_emulator::Running>,
) {
    let base = format!("http://{addr}");
    println!("\nberth dev is up on {base}  (data: {})", dir.display());
    println!("  health  {base}/readyz   metrics  {base}/metrics");
    println!(
        "  demo resource {} / appointment type {}",
        demo.resource_id, demo.appointment_type_id
    );
    println!("  log in as the demo user (keeps the access token in $TOKEN):");
    println!(
        "    TOKEN=$(curl -s -X POST {base}/v1/auth/login -H 'Content-Type: application/json' \\\n      -d '{{\"email\":\"{}\",\"password\":\"{}\"}}' | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')",
        seed::DEMO_EMAIL,
        seed::DEMO_PASSWORD
    );
    match &demo.next_slot {
        Some(start) => {
            println!("  book the next free slot ({start}):");
            println!(
                "    curl -s -X POST {base}/v1/bookings -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n      -H \"Idempotency-Key: $(date +%s%N)\" -d '{{\"resource_id\":\"{}\",\"appointment_type_id\":\"{}\",\"start\":\"{start}\"}}'",
                demo.resource_id, demo.appointment_type_id
            );
        }
        None => println!("  (no free demo slot in the next days)"),
    }
    match emulator {
        Some(emulator) => {
            let stripe = emulator.base_url.trim_end_matches('/');
            println!(
                "  payments: TEST MODE, Stripe is the built-in emulator at {stripe} (no money moves)"
            );
            println!(
                "    paid type {}: book it as above, then start paying and get the client secret:",
                demo.paid_type_id
            );
            println!(
                "    curl -s -X POST {base}/v1/payments -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n      -d '{{\"booking_id\":\"'$BOOKING'\"}}'"
            );
            println!(
                "    pay as Stripe.js would, with a test card (pm_card_visa; pm_card_chargeDeclined declines):"
            );
            println!(
                "    curl -s -X POST {stripe}/v1/payment_intents/$INTENT/confirm -u {DEV_PUBLISHABLE_KEY}: \\\n      -d client_secret=$CLIENT_SECRET -d payment_method=pm_card_visa"
            );
            println!(
                "    the webhook confirms the booking: curl -s {base}/v1/bookings/$BOOKING -H \"Authorization: Bearer $TOKEN\""
            );
        }
        None => println!("  payments: live Stripe settings from service.stripe.*"),
    }
    println!();
}
