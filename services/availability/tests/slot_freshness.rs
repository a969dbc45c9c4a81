//! Slots read right after any change reflect it: claims, lapsing holds,
//! time zone, hours, overrides, appointment types and calendars. On
//! PostgreSQL the second of two identical reads comes from the slot-input
//! cache, so every later read checks that the cache noticed the change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use berth_availability::Availability;
use berth_ledger::Ledger;
use chrono::{DateTime, Days, Timelike, Utc};
use common::{Api, day_at, scenarios};
use serde_json::json;
use uuid::Uuid;

fn hits() -> u64 {
    berth_runtime::metrics::cache_lookups()
        .with_label_values(&["slot_inputs", "hit"])
        .get()
}

fn hours_week(start: &str, end: &str) -> serde_json::Value {
    let day = json!([{"start": start, "end": end}]);
    json!({
        "monday": day, "tuesday": day, "wednesday": day, "thursday": day,
        "friday": day, "saturday": day, "sunday": day,
    })
}

struct Setup {
    api: Api,
    resource: Uuid,
    ty: Uuid,
    day: DateTime<Utc>,
}

impl Setup {
    /// Start hours (UTC) of the slots on `day`.
    async fn hours(&self) -> Vec<u32> {
        let next = self.day + Days::new(1);
        self.api
            .slots(self.resource, self.ty, self.day, next)
            .await
            .into_iter()
            .map(|(start, _)| start.hour())
            .collect()
    }

    async fn expect(&self, hours: &[u32], after: &str) {
        assert_eq!(self.hours().await, hours, "after {after}");
    }
}

async fn slots_follow_every_change(av: &Availability, cached: bool) {
    let api = Api::new(av);
    let resource = api.resource("Freshness", "UTC").await;
    let r = api
        .put(
            &format!("/v1/resources/{resource}/schedule"),
            hours_week("09:00", "17:00"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ty = api
        .appointment_type(
            resource,
            json!({"name": "hour", "duration_minutes": 60, "interval_minutes": 60,
                   "horizon_minutes": 60 * 24 * 30, "currency": "EUR"}),
        )
        .await;
    let s = Setup {
        api,
        resource,
        ty,
        day: day_at(3, 0, 0),
    };
    let all: Vec<u32> = (9..17).collect();
    let without =
        |gone: &[u32]| -> Vec<u32> { all.iter().copied().filter(|h| !gone.contains(h)).collect() };

    s.expect(&all, "creation").await;
    let before = hits();
    s.expect(&all, "nothing").await;
    if cached {
        assert!(
            hits() > before,
            "an unchanged resource is served from the cache"
        );
    }

    av.claim(scenarios::request(resource, ty, day_at(3, 9, 0), "a"))
        .await
        .unwrap();
    s.expect(&without(&[9]), "a claim").await;

    let mut hold = scenarios::request(resource, ty, day_at(3, 10, 0), "b");
    hold.hold_for = Some(Duration::from_millis(300));
    av.claim(hold).await.unwrap();
    s.expect(&without(&[9, 10]), "a hold").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.expect(&without(&[9]), "the hold lapsed").await;

    let uri = format!("/v1/resources/{resource}");
    let r = s.api.patch(&uri, json!({"time_zone": "Asia/Tokyo"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    s.expect(&(0..8).collect::<Vec<_>>(), "a new time zone")
        .await;
    s.api.patch(&uri, json!({"time_zone": "UTC"})).await;
    s.expect(&without(&[9]), "the zone back").await;

    let date = s.day.date_naive().to_string();
    let overrides = format!("/v1/resources/{resource}/overrides");
    let r = s
        .api
        .put(
            &overrides,
            json!({"date": date, "hours": {"kind": "closed"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    s.expect(&[], "a closed day").await;
    let r = s.api.delete(&format!("{overrides}/{date}")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    s.expect(&without(&[9]), "the override deleted").await;

    let schedule = format!("/v1/resources/{resource}/schedule");
    s.api.put(&schedule, hours_week("12:00", "17:00")).await;
    s.expect(&[12, 13, 14, 15, 16], "shorter hours").await;
    s.api.put(&schedule, hours_week("09:00", "17:00")).await;
    s.expect(&without(&[9]), "the hours back").await;

    let type_uri = format!("/v1/appointment-types/{ty}");
    let r = s.api.patch(&type_uri, json!({"horizon_minutes": 60})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    s.expect(&[], "a one-hour horizon").await;
    s.api
        .patch(&type_uri, json!({"horizon_minutes": 60 * 24 * 30}))
        .await;
    s.expect(&without(&[9]), "the horizon back").await;

    let ics = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:f\r\nDTSTART:{}T130000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        s.day.format("%Y%m%d")
    );
    let r = s
        .api
        .post(
            &format!("/v1/resources/{resource}/calendars"),
            json!({"ics": ics}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s.expect(&without(&[9, 13]), "a busy time").await;
    let calendar = r.body["id"].as_str().unwrap();
    let r = s.api.delete(&format!("/v1/calendars/{calendar}")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    s.expect(&without(&[9]), "the calendar deleted").await;

    let r = s.api.delete(&type_uri).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "live claims keep the type");
    s.expect(&without(&[9]), "a refused delete").await;
}

#[tokio::test]
async fn slots_follow_every_change_on_postgres() {
    let (av, _db) = common::pg(false).await;
    slots_follow_every_change(&av, true).await;
}

#[tokio::test]
async fn slots_follow_every_change_on_sqlite() {
    slots_follow_every_change(&common::sqlite().await, false).await;
}
