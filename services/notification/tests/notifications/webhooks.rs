//! Outbound webhooks against a real receiver that verifies every request
//! with the Standard Webhooks reference implementation (PyPI
//! `standardwebhooks`), never with our code.

use std::time::Duration;

use berth_notification::WebhookConfig;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::common::*;

const ADMIN: &str = "admin-ann";

fn options(replicas: usize, in_process_too: bool) -> Options {
    Options {
        // Mail is not what these tests look at; nothing listens there.
        smtp_port: free_port(),
        replicas,
        in_process_too,
        refuse: None,
        reminder_offsets: None,
        workers: true,
        sms: None,
        mail: true,
    }
}

/// Like `Env::send`, also answering the response's content type.
async fn call(
    env: &Env,
    who: &str,
    roles: &[&str],
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String, Value) {
    let mut request = env
        .http
        .request(method.parse().unwrap(), format!("{}{path}", env.base))
        .bearer_auth(env.issuer.token(who, roles));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

/// Registers an endpoint; answers (id, secret).
async fn register(
    env: &Env,
    who: &str,
    role: &str,
    url: &str,
    event_types: &[&str],
) -> (String, String) {
    let (status, endpoint) = env
        .send(
            who,
            &[role],
            "POST",
            "/v1/webhook-endpoints",
            Some(json!({"url": url, "event_types": event_types})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    (
        endpoint["id"].as_str().unwrap().to_owned(),
        endpoint["secret"].as_str().unwrap().to_owned(),
    )
}

async fn deliveries(env: &Env, query: &str) -> Vec<Value> {
    let (status, page) = env
        .send(
            ADMIN,
            &["admin"],
            "GET",
            &format!("/v1/webhook-deliveries{query}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

async fn wait_dead(env: &Env, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let dead = deliveries(env, "?status=dead").await;
        if dead.len() >= n {
            return dead;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One confirmation reaches each endpoint that may see it exactly once,
/// although two replicas each get every event twice (stream and in
/// process); the reference library verifies it; the body has no customer
/// data; staff endpoints hear only of their own resources.
#[tokio::test]
async fn a_confirmation_is_one_signed_webhook_per_endpoint_that_may_see_it() {
    let receiver = WebhookReceiver::start();
    let env = Env::start(options(2, true)).await;
    let (admin_endpoint, admin_secret) = register(
        &env,
        ADMIN,
        "admin",
        &receiver.url("/admin"),
        &["booking.confirmed"],
    )
    .await;
    let (_, sam_secret) = register(
        &env,
        STAFF,
        "staff",
        &receiver.url("/sam"),
        &["booking.confirmed"],
    )
    .await;
    let (_, other_secret) = register(
        &env,
        "staff-other",
        "staff",
        &receiver.url("/other"),
        &["booking.confirmed"],
    )
    .await;
    assert!(admin_secret.starts_with("whsec_"));
    receiver
        .set("ok", &[&admin_secret, &sam_secret, &other_secret])
        .await;

    // The secret is shown once only.
    let (status, shown) = env
        .send(
            ADMIN,
            &["admin"],
            "GET",
            &format!("/v1/webhook-endpoints/{admin_endpoint}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    assert!(shown.get("secret").is_none(), "{shown}");
    assert!(!shown.to_string().contains(&admin_secret));

    let booking = env.book(at(1, 9), Some("alice@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    receiver.wait_for(2, 20).await;
    // Long enough for doubles to show: the retry schedule is sub-second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = receiver.received().await;
    assert_eq!(got.len(), 2, "one per endpoint that may see it: {got:#?}");

    for (hook, path, secret) in [(&got, "/admin", 0usize), (&got, "/sam", 1)] {
        let hook = hook
            .iter()
            .find(|h| h.path == path)
            .unwrap_or_else(|| panic!("nothing at {path}: {got:#?}"));
        assert_eq!(
            hook.verified_by,
            vec![secret],
            "{path}: only its own secret verifies it ({:?})",
            hook.errors
        );
        assert_eq!(hook.body["type"], "booking.confirmed");
        assert_eq!(hook.body["data"]["booking"]["id"], id);
        assert_eq!(hook.body["data"]["booking"]["version"], booking["version"]);
        assert_eq!(hook.content_type, "application/json");
        let raw = hook.body.to_string();
        assert!(
            !raw.contains("alice") && !raw.contains("Alice") && !raw.contains("customer"),
            "no customer data in {raw}"
        );
        assert!(hook.signature.starts_with("v1,"));
    }

    // The log shows each sent, its id being the `webhook-id` header.
    let log = deliveries(&env, "?status=sent").await;
    assert_eq!(log.len(), 2, "{log:#?}");
    for d in &log {
        assert!(got.iter().any(|h| h.id == d["id"].as_str().unwrap()));
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_status"], 200);
    }
    // Staff see only their own endpoints' deliveries.
    let (status, mine) = env
        .send(STAFF, &["staff"], "GET", "/v1/webhook-deliveries", None)
        .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    env.finish().await;
}

/// 500s are retried on the schedule, with growing gaps, then the delivery
/// is dead-lettered (and not tried again); replaying it sends it again.
#[tokio::test]
async fn failures_are_retried_with_growing_delays_then_dead_lettered_and_replayable() {
    let receiver = WebhookReceiver::start();
    let env = Env::start_with(
        options(1, false),
        WebhookConfig {
            retry_schedule: vec![
                Duration::from_millis(300),
                Duration::from_millis(700),
                Duration::from_millis(1500),
            ],
            ..test_webhooks()
        },
    )
    .await;
    let (_, secret) = register(
        &env,
        ADMIN,
        "admin",
        &receiver.url("/hook"),
        &["booking.confirmed", "booking.cancelled"],
    )
    .await;
    receiver.set("fail", &[&secret]).await;
    env.book(at(2, 10), None).await;

    let tries = receiver.wait_for(4, 20).await;
    let dead = wait_dead(&env, 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let tries_after = receiver.received().await;
    assert_eq!(tries_after.len(), 4, "dead letters are not retried");
    assert!(tries.iter().all(|t| t.id == tries[0].id), "one webhook-id");
    assert!(tries.iter().all(|t| t.verified_by == [0]));
    let gaps: Vec<f64> = tries
        .windows(2)
        .map(|w| w[1].arrived - w[0].arrived)
        .collect();
    assert!(gaps[0] >= 0.25, "{gaps:?}");
    assert!(gaps[0] < gaps[1] && gaps[1] < gaps[2], "growing: {gaps:?}");
    assert_eq!(dead[0]["status"], "dead");
    assert_eq!(dead[0]["attempts"], 4);
    assert_eq!(dead[0]["last_status"], 500);
    assert!(dead[0]["last_error"].as_str().unwrap().contains("gave up"));

    // Replayed once the receiver is fixed: delivered, same id.
    receiver.set("ok", &[&secret]).await;
    let delivery = dead[0]["id"].as_str().unwrap();
    let (status, replayed) = env
        .send(
            ADMIN,
            &["admin"],
            "POST",
            &format!("/v1/webhook-deliveries/{delivery}/replay"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{replayed}");
    let all = receiver.wait_for(5, 10).await;
    assert_eq!(all[4].id, delivery);
    assert_eq!(all[4].mode, "ok");
    assert_eq!(all[4].verified_by, [0]);
    env.eventually(10, "the replay is recorded as sent", || async {
        deliveries(&env, "?status=sent").await.len() == 1
    })
    .await;
    // Only a dead letter can be replayed.
    let (status, content_type, problem) = call(
        &env,
        ADMIN,
        &["admin"],
        "POST",
        &format!("/v1/webhook-deliveries/{delivery}/replay"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    env.finish().await;
}

/// `410 Gone` disables the endpoint at once: no retry, no new deliveries;
/// re-enabled and replayed, it is delivered. A slow receiver times out and
/// is retried.
#[tokio::test]
async fn gone_disables_the_endpoint_and_a_slow_receiver_is_retried() {
    let receiver = WebhookReceiver::start();
    let env = Env::start_with(
        options(1, false),
        WebhookConfig {
            timeout: Duration::from_secs(1),
            ..test_webhooks()
        },
    )
    .await;
    let (endpoint, secret) = register(
        &env,
        ADMIN,
        "admin",
        &receiver.url("/hook"),
        &["booking.confirmed"],
    )
    .await;
    receiver.set("gone", &[&secret]).await;
    env.book(at(3, 9), None).await;
    let dead = wait_dead(&env, 1).await;
    assert_eq!(dead[0]["last_status"], 410);
    let (_, shown) = env
        .send(
            ADMIN,
            &["admin"],
            "GET",
            &format!("/v1/webhook-endpoints/{endpoint}"),
            None,
        )
        .await;
    assert_eq!(shown["enabled"], false, "{shown}");
    assert!(
        shown["disabled_reason"].as_str().unwrap().contains("410"),
        "{shown}"
    );
    env.book(at(3, 11), None).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(receiver.received().await.len(), 1, "no retry, nothing new");
    assert_eq!(deliveries(&env, "").await.len(), 1, "none planned");

    // Re-enabled; the receiver is slow at first: timed out, then retried.
    receiver
        .control(json!({"mode": "slow", "secrets": [&secret], "slow_seconds": 3}))
        .await;
    let (status, body) = env
        .send(
            ADMIN,
            &["admin"],
            "PATCH",
            &format!("/v1/webhook-endpoints/{endpoint}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], true);
    let delivery = dead[0]["id"].as_str().unwrap();
    let (status, _) = env
        .send(
            ADMIN,
            &["admin"],
            "POST",
            &format!("/v1/webhook-deliveries/{delivery}/replay"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    receiver.wait_for(2, 10).await;
    receiver.set("ok", &[&secret]).await;
    receiver.wait_for(3, 10).await;
    env.eventually(10, "sent after the timeout", || async {
        deliveries(&env, "?status=sent").await.len() == 1
    })
    .await;
    let sent = deliveries(&env, "?status=sent").await;
    assert_eq!(sent[0]["attempts"], 2, "{sent:#?}");
    env.finish().await;
}

/// After a rotation both secrets verify each webhook until the grace
/// ends; then only the new one does.
#[tokio::test]
async fn a_rotated_secret_and_its_predecessor_both_verify_during_the_grace() {
    let receiver = WebhookReceiver::start();
    let env = Env::start_with(
        options(1, false),
        WebhookConfig {
            secret_grace: Duration::from_secs(4),
            ..test_webhooks()
        },
    )
    .await;
    let (endpoint, old) = register(
        &env,
        STAFF,
        "staff",
        &receiver.url("/hook"),
        &["booking.confirmed"],
    )
    .await;
    let (status, rotated) = env
        .send(
            STAFF,
            &["staff"],
            "POST",
            &format!("/v1/webhook-endpoints/{endpoint}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string());
    receiver.set("ok", &[&old, &new]).await;

    env.book(at(4, 9), None).await;
    let first = receiver.wait_for(1, 20).await.remove(0);
    assert_eq!(first.verified_by, [0, 1], "{:?}", first.errors);
    assert_eq!(first.signature.split(' ').count(), 2);

    tokio::time::sleep(Duration::from_secs(4)).await;
    env.book(at(4, 11), None).await;
    let second = receiver.wait_for(2, 20).await.remove(1);
    assert_eq!(second.verified_by, [1], "the old secret expired");
    assert_eq!(second.signature.split(' ').count(), 1);
    env.finish().await;
}

/// With the guard on (the production setting): loopback, private and
/// metadata URLs are refused at registration (400, nothing written); one
/// that is stored anyway is refused at send time and never reached. Bad
/// input is problem+json and writes nothing; only staff and admins may
/// manage endpoints.
#[tokio::test]
async fn the_egress_guard_and_bad_input_refuse_and_write_nothing() {
    let receiver = WebhookReceiver::start();
    let env = Env::start_with(
        options(1, false),
        WebhookConfig {
            allow_private_urls: false,
            ..test_webhooks()
        },
    )
    .await;
    let port = receiver.port;
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://10.1.2.3/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let body = json!({"url": url, "event_types": ["booking.confirmed"]}).to_string();
        let (status, content_type, problem) = call(
            &env,
            ADMIN,
            &["admin"],
            "POST",
            "/v1/webhook-endpoints",
            Some(&body),
        )
        .await;
        assert_eq!(status, 400, "{url}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(
            problem["detail"],
            "webhook URL points to a private or local address"
        );
    }

    let bad: [(&str, u16, &str); 8] = [
        (
            r#"{"url": "ftp://example.com/x", "event_types": ["booking.confirmed"]}"#,
            422,
            "url",
        ),
        (
            r#"{"url": "not a url", "event_types": ["booking.confirmed"]}"#,
            422,
            "url",
        ),
        (
            r#"{"url": "https://example.com/x", "event_types": []}"#,
            422,
            "event_types",
        ),
        (
            r#"{"url": "https://example.com/x", "event_types": ["booking.nope"]}"#,
            422,
            "event_types",
        ),
        (
            r#"{"url": "https://example.com/x", "event_types": ["booking.confirmed"], "secret": "whsec_x"}"#,
            422,
            "",
        ),
        (r#"{"url": "https://example.com/x"}"#, 422, ""),
        (
            r#"{"url": "https://example.com/x", "event_types": ["booking.confirmed"],"#,
            400,
            "",
        ),
        (
            r#"{"url": 7, "event_types": ["booking.confirmed"]}"#,
            422,
            "",
        ),
    ];
    for (body, want, field) in bad {
        let (status, content_type, problem) = call(
            &env,
            STAFF,
            &["staff"],
            "POST",
            "/v1/webhook-endpoints",
            Some(body),
        )
        .await;
        assert_eq!(status, want, "{body}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{body}");
        if !field.is_empty() {
            assert_eq!(problem["field"], field, "{body}: {problem}");
        }
    }
    // Customers may not manage endpoints at all.
    let body = json!({"url": "https://example.com/x", "event_types": ["booking.confirmed"]});
    let (status, content_type, _) = call(
        &env,
        ALICE,
        &["customer"],
        "POST",
        "/v1/webhook-endpoints",
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (403, "application/problem+json")
    );
    let (status, _, _) = call(
        &env,
        ALICE,
        &["customer"],
        "GET",
        "/v1/webhook-deliveries",
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        env.sql_count("SELECT count(*) FROM notification.webhook_endpoints")
            .await,
        0,
        "nothing written"
    );

    // A public URL is accepted; staff cannot see or change another's.
    let (endpoint, secret) = register(
        &env,
        ADMIN,
        "admin",
        "https://93.184.215.14/hook",
        &["booking.confirmed"],
    )
    .await;
    let (status, _, _) = call(
        &env,
        STAFF,
        &["staff"],
        "GET",
        &format!("/v1/webhook-endpoints/{endpoint}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, problem) = call(
        &env,
        ADMIN,
        &["admin"],
        "PATCH",
        &format!("/v1/webhook-endpoints/{endpoint}"),
        Some(&json!({"url": format!("http://127.0.0.1:{port}/hook")}).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{problem}");

    // Stored pointing at loopback anyway (as if a name had been rebound
    // since): the sender's own check refuses it, the receiver never hears.
    let mut conn = PgConnection::connect(&env.db.url).await.unwrap();
    sqlx::query("UPDATE notification.webhook_endpoints SET url = $1")
        .bind(format!("http://127.0.0.1:{port}/hook"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    receiver.set("ok", &[&secret]).await;
    env.book(at(5, 9), None).await;
    let dead = wait_dead(&env, 1).await;
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("private or local"),
        "{dead:#?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(receiver.received().await.is_empty(), "never reached");
    env.finish().await;
}

/// A platform without SMTP still tells its systems: the webhook goes, no
/// email is planned (none would ever be sent), and reminders are none.
#[tokio::test]
async fn without_smtp_webhooks_still_go_and_no_email_is_planned() {
    let receiver = WebhookReceiver::start();
    let env = Env::start(Options {
        mail: false,
        ..options(1, false)
    })
    .await;
    let (_, secret) = register(
        &env,
        ADMIN,
        "admin",
        &receiver.url("/admin"),
        &["booking.confirmed"],
    )
    .await;
    receiver.set("ok", &[&secret]).await;
    let booking = env.book(at(1, 11), Some("alice@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    receiver.wait_for(1, 20).await;
    for table in ["deliveries", "reminders"] {
        let planned =
            format!("SELECT count(*) FROM notification.{table} WHERE booking_id = '{id}'");
        assert_eq!(env.sql_count(&planned).await, 0, "{table}");
    }
    env.finish().await;
}
