//! Calendar feeds: fetched from a real local HTTP server, parsed (TZID,
//! all-day, cancelled), and their busy times block slots and claims. The
//! feeds are on 127.0.0.1, so these handles allow private feed URLs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::get;
use berth_availability::Availability;
use berth_ledger::{Ledger, LedgerError};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::{Api, scenarios};
use serde_json::json;
use uuid::Uuid;

/// A feed server whose body and status can be changed, counting requests.
#[derive(Clone)]
struct Feed {
    body: Arc<Mutex<String>>,
    status: Arc<Mutex<StatusCode>>,
    hits: Arc<AtomicUsize>,
}

impl Feed {
    async fn start(body: String) -> (Feed, SocketAddr) {
        let feed = Feed {
            body: Arc::new(Mutex::new(body)),
            status: Arc::new(Mutex::new(StatusCode::OK)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let state = feed.clone();
        let app = axum::Router::new().route(
            "/feed.ics",
            get(move || {
                let state = state.clone();
                async move {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    let status = *state.status.lock().unwrap();
                    (
                        status,
                        [("content-type", "text/calendar")],
                        state.body.lock().unwrap().clone(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (feed, addr)
    }
}

fn ymd(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

/// A timed event in Berlin time on `d` 10:00–11:30, an all-day event on
/// `d+1`, and a cancelled event on `d+2` 10:00–11:00.
fn ics(d: NaiveDate) -> String {
    let d1 = d.succ_opt().unwrap();
    let d2 = d1.succ_opt().unwrap();
    let d3 = d2.succ_opt().unwrap();
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//berth//test//EN\r\n\
BEGIN:VEVENT\r\nUID:timed@test\r\nDTSTART;TZID=Europe/Berlin:{d}T100000\r\n\
DTEND;TZID=Europe/Berlin:{d}T113000\r\nSUMMARY:Dentist\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:allday@test\r\nDTSTART;VALUE=DATE:{d1}\r\nDTEND;VALUE=DATE:{d2}\r\n\
SUMMARY:Conference\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:cancelled@test\r\nDTSTART;TZID=Europe/Berlin:{d2}T100000\r\n\
DTEND;TZID=Europe/Berlin:{d2}T110000\r\nSTATUS:CANCELLED\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:free@test\r\nDTSTART;TZID=Europe/Berlin:{d3}T100000\r\n\
DTEND;TZID=Europe/Berlin:{d3}T110000\r\nTRANSP:TRANSPARENT\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n",
        d = ymd(d),
        d1 = ymd(d1),
        d2 = ymd(d2),
        d3 = ymd(d3),
    )
}

struct Setup {
    api: Api,
    resource: Uuid,
    ty: Uuid,
    day: NaiveDate,
}

/// A Berlin resource open 08:00–18:00 daily with hourly one-hour slots.
async fn setup(av: &Availability) -> Setup {
    let api = Api::new(av);
    let resource = api.resource("Dr. Ics", "Europe/Berlin").await;
    let day = json!([{"start": "08:00", "end": "18:00"}]);
    let week = json!({"monday": day, "tuesday": day, "wednesday": day, "thursday": day,
                      "friday": day, "saturday": day, "sunday": day});
    assert_eq!(
        api.put(&format!("/v1/resources/{resource}/schedule"), week)
            .await
            .status,
        200
    );
    let ty = api
        .appointment_type(
            resource,
            json!({"name": "hour", "duration_minutes": 60, "currency": "EUR"}),
        )
        .await;
    Setup {
        api,
        resource,
        ty,
        day: Utc::now()
            .date_naive()
            .checked_add_days(chrono::Days::new(5))
            .unwrap(),
    }
}

fn berlin(d: NaiveDate, h: u32) -> DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .from_local_datetime(&d.and_hms_opt(h, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// Local hours offered on `d`.
async fn hours(s: &Setup, d: NaiveDate) -> Vec<u32> {
    let slots = s
        .api
        .slots(s.resource, s.ty, berlin(d, 0), berlin(d, 23))
        .await;
    slots
        .iter()
        .map(|(t, _)| {
            use chrono::Timelike;
            t.with_timezone(&chrono_tz::Europe::Berlin).hour()
        })
        .collect()
}

async fn feed_blocks_slots_and_claims(av: &Availability) {
    let s = setup(av).await;
    let d = s.day;
    let (d1, d2, d3) = (
        d + chrono::Days::new(1),
        d + chrono::Days::new(2),
        d + chrono::Days::new(3),
    );
    let (feed, addr) = Feed::start(ics(d)).await;
    let url = format!("http://{addr}/feed.ics");
    let r = s
        .api
        .post(
            &format!("/v1/resources/{}/calendars", s.resource),
            json!({"url": url, "name": "work"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        feed.hits.load(Ordering::SeqCst),
        1,
        "fetched once on creation"
    );
    assert_eq!(r.body["source"], "url");
    let cal: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(r.headers["location"], format!("/v1/calendars/{cal}"));

    // 10:00–11:30 blocks the 10:00 and 11:00 slots.
    assert_eq!(hours(&s, d).await, vec![8, 9, 12, 13, 14, 15, 16, 17]);
    assert_eq!(hours(&s, d1).await, Vec::<u32>::new(), "all-day event");
    assert_eq!(
        hours(&s, d2).await.len(),
        10,
        "cancelled event blocks nothing"
    );
    assert_eq!(
        hours(&s, d3).await.len(),
        10,
        "transparent event blocks nothing"
    );
    assert_eq!(
        feed.hits.load(Ordering::SeqCst),
        1,
        "cached within the refresh interval"
    );

    // Busy times block claims too.
    let claim = av
        .claim(scenarios::request(s.resource, s.ty, berlin(d, 11), "b"))
        .await;
    assert!(
        matches!(claim, Err(LedgerError::SlotUnavailable(_))),
        "{claim:?}"
    );
    av.claim(scenarios::request(s.resource, s.ty, berlin(d, 12), "b"))
        .await
        .unwrap();

    // An uploaded calendar adds its busy times; deleting a calendar removes them.
    let upload = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:u\r\nDTSTART:{}T130000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        ymd(d2)
    );
    let u = s
        .api
        .post(
            &format!("/v1/resources/{}/calendars", s.resource),
            json!({"ics": upload}),
        )
        .await;
    assert_eq!(u.status, StatusCode::CREATED, "{}", u.body);
    assert_eq!(u.body["source"], "upload");
    let local = {
        use chrono::Timelike;
        d2.and_hms_opt(13, 0, 0)
            .unwrap()
            .and_utc()
            .with_timezone(&chrono_tz::Europe::Berlin)
            .hour()
    };
    assert!(
        !hours(&s, d2).await.contains(&local),
        "13:00Z is {local}:00 in Berlin"
    );
    let listed = s
        .api
        .get(&format!("/v1/resources/{}/calendars", s.resource))
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 2);
    assert_eq!(
        s.api.delete(&format!("/v1/calendars/{cal}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(hours(&s, d1).await.len(), 10);
    assert!(hours(&s, d).await.contains(&10));
}

#[tokio::test]
async fn feed_on_sqlite() {
    let av = common::sqlite().await.with_private_calendar_urls(true);
    feed_blocks_slots_and_claims(&av).await;
}

#[tokio::test]
async fn feed_on_postgres() {
    let (av, _db) = common::pg(false).await;
    feed_blocks_slots_and_claims(&av.with_private_calendar_urls(true)).await;
}

/// A due feed is fetched again before slots are computed; a failing fetch
/// keeps the previous busy times and records the error.
#[tokio::test]
async fn feeds_refresh_and_survive_failures() {
    let (av, db) = common::pg(false).await;
    let av = av.with_private_calendar_urls(true);
    let s = setup(&av).await;
    let d = s.day;
    let (feed, addr) = Feed::start(ics(d)).await;
    let r = s
        .api
        .post(
            &format!("/v1/resources/{}/calendars", s.resource),
            json!({"url": format!("http://{addr}/feed.ics"), "refresh_interval_secs": 60}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let cal: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    let make_due = || async {
        let mut conn = db.conn().await;
        sqlx::query("UPDATE availability.calendars SET fetched_at = now() - interval '1 hour' WHERE id = $1")
            .bind(cal)
            .execute(&mut conn)
            .await
            .unwrap();
    };

    // The feed breaks: previous busy times stay, the error is recorded.
    *feed.status.lock().unwrap() = StatusCode::INTERNAL_SERVER_ERROR;
    make_due().await;
    assert!(!hours(&s, d).await.contains(&10));
    assert_eq!(feed.hits.load(Ordering::SeqCst), 2);
    let c = s.api.get(&format!("/v1/calendars/{cal}")).await;
    assert!(
        c.body["last_error"].as_str().unwrap().contains("500"),
        "{}",
        c.body
    );

    // The feed recovers with the dentist moved to 15:00.
    *feed.status.lock().unwrap() = StatusCode::OK;
    *feed.body.lock().unwrap() = ics(d)
        .replace("T100000", "T150000")
        .replace("T113000", "T160000");
    make_due().await;
    let now_free = hours(&s, d).await;
    assert!(
        now_free.contains(&10) && !now_free.contains(&15),
        "{now_free:?}"
    );
    assert_eq!(feed.hits.load(Ordering::SeqCst), 3);
    let c = s.api.get(&format!("/v1/calendars/{cal}")).await;
    assert!(c.body["last_error"].is_null(), "{}", c.body);
}
