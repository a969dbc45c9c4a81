//! The SSRF guard on calendar feed URLs, with the default setting: private
//! and local destinations are refused when a calendar is created (400,
//! nothing written, nothing fetched) and again whenever a stored feed is
//! refreshed. Redirects are covered by the `egress` unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use axum::routing::get;
use common::Api;
use serde_json::json;

const REFUSED: &str = "calendar URL points to a private or local address";
const ICS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n";

/// A feed on 127.0.0.1 counting its requests.
async fn feed() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/feed.ics",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { ICS }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

#[tokio::test]
async fn private_feed_urls_are_refused_at_creation() {
    let av = common::sqlite().await;
    let api = Api::new(&av);
    let resource = api.resource("Guarded", "UTC").await;
    let (addr, hits) = feed().await;
    let port = addr.port();
    let before = av.table_counts().await.unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/feed.ics"),
        "http://10.1.2.3/feed.ics".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/feed.ics"),
        format!("http://[::ffff:127.0.0.1]:{port}/feed.ics"),
        format!("http://localhost:{port}/feed.ics"),
    ] {
        let r = api
            .post(
                &format!("/v1/resources/{resource}/calendars"),
                json!({ "url": url }),
            )
            .await;
        assert_eq!(r.assert_problem(400)["detail"], REFUSED, "{url}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was fetched");
    assert_eq!(av.table_counts().await.unwrap(), before, "nothing written");

    // The same feed is fine once private addresses are allowed (`berth dev`).
    let local = Api::new(&av.with_private_calendar_urls(true));
    let url = format!("http://localhost:{port}/feed.ics");
    let r = local
        .post(
            &format!("/v1/resources/{resource}/calendars"),
            json!({ "url": url }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// A feed stored while private URLs were allowed is not fetched by a
/// guarded handle: the refresh records the refusal and keeps what it had.
#[tokio::test]
async fn stored_private_feeds_are_refused_at_refresh() {
    let (guarded, db) = common::pg(false).await;
    let open = guarded.clone().with_private_calendar_urls(true);
    let api = Api::new(&open);
    let resource = api.resource("Stored", "UTC").await;
    api.open_all_week(resource).await;
    let ty = api
        .appointment_type(
            resource,
            json!({"name": "t", "duration_minutes": 30, "currency": "EUR"}),
        )
        .await;
    let (addr, hits) = feed().await;
    let r = api
        .post(
            &format!("/v1/resources/{resource}/calendars"),
            json!({"url": format!("http://{addr}/feed.ics"), "refresh_interval_secs": 60}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let cal = r.body["id"].as_str().unwrap().to_owned();
    let mut conn = db.conn().await;
    sqlx::query("UPDATE availability.calendars SET fetched_at = now() - interval '1 hour'")
        .execute(&mut conn)
        .await
        .unwrap();

    // Slots refresh due feeds first; the guarded handle refuses this one.
    let from = common::day_at(1, 0, 0);
    let guarded_api = Api::new(&guarded);
    guarded_api
        .slots(resource, ty, from, from + chrono::TimeDelta::hours(1))
        .await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "only the creation fetched");
    let c = guarded_api.get(&format!("/v1/calendars/{cal}")).await;
    assert_eq!(c.body["last_error"], REFUSED, "{}", c.body);
}
