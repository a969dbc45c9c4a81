//! REST API: CRUD happy paths, and bad input answered with 4xx
//! problem+json that writes nothing. Runs on PostgreSQL and on SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode, header};
use berth_availability::Availability;
use berth_ledger::Ledger;
use berth_runtime::{Runtime, RuntimeConfig};
use chrono::{Datelike, Days, NaiveDate, TimeZone, Utc, Weekday};
use common::{Api, OWNER, admin};
use serde_json::{Value, json};
use uuid::Uuid;

fn runtime() -> Runtime {
    Runtime::new("availability-test", RuntimeConfig::default()).unwrap()
}

/// The first Monday at least three days ahead.
fn next_monday() -> NaiveDate {
    let mut d = Utc::now()
        .date_naive()
        .checked_add_days(Days::new(3))
        .unwrap();
    while d.weekday() != Weekday::Mon {
        d = d.succ_opt().unwrap();
    }
    d
}

fn id_of(v: &Value) -> Uuid {
    v["id"].as_str().unwrap().parse().unwrap()
}

async fn crud(av: &Availability) {
    let rt = runtime();
    let api = Api::finished(av, &rt);

    let r = api
        .post(
            "/v1/resources",
            json!({"name": " Dr. Who ", "time_zone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = id_of(&r.body);
    assert_eq!(r.headers[header::LOCATION], format!("/v1/resources/{id}"));
    assert_eq!(r.body["name"], "Dr. Who");
    assert_eq!(r.body["time_zone"], "Europe/Berlin");

    let list = api.get("/v1/resources").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| id_of(r) == id)
    );
    assert_eq!(
        api.get(&format!("/v1/resources/{id}")).await.body["name"],
        "Dr. Who"
    );

    let patched = api
        .patch(&format!("/v1/resources/{id}"), json!({"name": "Dr. Smith"}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["name"], "Dr. Smith");
    assert_eq!(patched.body["time_zone"], "Europe/Berlin");

    let ty = api
        .post(
            &format!("/v1/resources/{id}/appointment-types"),
            json!({
                "name": "Consult", "duration_minutes": 45, "interval_minutes": 15,
                "buffer_before_minutes": 5, "buffer_after_minutes": 10, "min_notice_minutes": 60,
                "horizon_minutes": 60 * 24 * 30, "capacity": 2, "price_minor": 5000, "currency": "EUR"
            }),
        )
        .await;
    assert_eq!(ty.status, StatusCode::CREATED, "{}", ty.body);
    let ty_id = id_of(&ty.body);
    assert_eq!(
        ty.headers[header::LOCATION],
        format!("/v1/appointment-types/{ty_id}")
    );
    assert_eq!(ty.body["resource_id"], id.to_string());
    let types = api
        .get(&format!("/v1/resources/{id}/appointment-types"))
        .await;
    assert_eq!(types.body.as_array().unwrap().len(), 1);
    let t = api
        .patch(
            &format!("/v1/appointment-types/{ty_id}"),
            json!({"capacity": 4}),
        )
        .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    assert_eq!(
        (
            t.body["capacity"].as_u64(),
            t.body["duration_minutes"].as_u64()
        ),
        (Some(4), Some(45))
    );
    assert_eq!(
        api.get(&format!("/v1/appointment-types/{ty_id}"))
            .await
            .body["capacity"],
        4
    );

    let week =
        json!({"monday": [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "17:00"}]});
    let s = api.put(&format!("/v1/resources/{id}/schedule"), week).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    let s = api.get(&format!("/v1/resources/{id}/schedule")).await;
    assert_eq!(s.body["monday"][1]["start"], "13:00");
    assert_eq!(s.body["tuesday"], json!([]));

    // Slots on a Monday, rendered in New York, with UTC alongside.
    let monday = next_monday();
    let berlin = chrono_tz::Europe::Berlin;
    let nine = berlin
        .from_local_datetime(&monday.and_hms_opt(9, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let from = nine - chrono::TimeDelta::hours(1);
    let uri = format!(
        "/v1/resources/{id}/slots?type={ty_id}&from={}&to={}&tz=America/New_York",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        (from + chrono::TimeDelta::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let slots = api.get(&uri).await;
    assert_eq!(slots.status, StatusCode::OK, "{}", slots.body);
    assert_eq!(slots.body["time_zone"], "America/New_York");
    let list = slots.body["slots"].as_array().unwrap();
    // 09:00–12:00 on a 15-minute grid with 45 minutes: 09:00..=11:15 (10),
    // 13:00–17:00: 13:00..=16:15 (14).
    assert_eq!(list.len(), 24, "{list:#?}");
    let first = &list[0];
    assert_eq!(
        first["start_utc"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
        nine
    );
    let ny = nine.with_timezone(&chrono_tz::America::New_York);
    assert_eq!(
        first["start"],
        ny.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    );
    assert_eq!(first["remaining"], 4);

    // An override opens an evening; deleting it closes it again.
    let date = monday.to_string();
    let o = api
        .put(
            &format!("/v1/resources/{id}/overrides"),
            json!({"date": date, "hours": {"kind": "open", "intervals": [{"start": "18:00", "end": "20:00"}]}}),
        )
        .await;
    assert_eq!(o.status, StatusCode::OK, "{}", o.body);
    let with_override = api.get(&uri).await.body["slots"].as_array().unwrap().len();
    assert_eq!(with_override, 6, "18:00..=19:15 only");
    let listed = api.get(&format!("/v1/resources/{id}/overrides")).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(
        api.delete(&format!("/v1/resources/{id}/overrides/{date}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    api.delete(&format!("/v1/resources/{id}/overrides/{date}"))
        .await
        .assert_problem(404);

    // A resource with a live claim cannot be deleted.
    let claim = av
        .claim(common::scenarios::request(id, ty_id, nine, "booking-1"))
        .await
        .unwrap();
    api.delete(&format!("/v1/resources/{id}"))
        .await
        .assert_problem(409);
    api.delete(&format!("/v1/appointment-types/{ty_id}"))
        .await
        .assert_problem(409);
    av.release(claim.claim_id).await.unwrap();

    assert_eq!(
        api.delete(&format!("/v1/appointment-types/{ty_id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    api.get(&format!("/v1/appointment-types/{ty_id}"))
        .await
        .assert_problem(404);
    assert_eq!(
        api.delete(&format!("/v1/resources/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    api.get(&format!("/v1/resources/{id}"))
        .await
        .assert_problem(404);
    // The released claim and its slot went with them: no orphaned rows.
    let counts = av.table_counts().await.unwrap();
    assert_eq!((counts["claims"], counts["blocks"]), (0, 0), "{counts:?}");
    assert_eq!(av.find_overlaps().await.unwrap(), Vec::<String>::new());
}

async fn bad_input(av: &Availability) {
    let rt = runtime();
    let api = Api::finished(av, &rt);
    let id = api.resource("Room", "Europe/Paris").await;
    let ty = api
        .appointment_type(
            id,
            json!({"name": "x", "duration_minutes": 30, "currency": "EUR"}),
        )
        .await;
    let before = av.table_counts().await.unwrap();
    let missing = Uuid::new_v4();
    let res = format!("/v1/resources/{id}");
    let types = format!("/v1/resources/{id}/appointment-types");
    let schedule = format!("/v1/resources/{id}/schedule");

    // Resources.
    let p = api
        .post(
            "/v1/resources",
            json!({"name": "A", "time_zone": "Mars/Olympus"}),
        )
        .await;
    assert_eq!(p.assert_problem(422)["field"], "time_zone");
    assert_eq!(
        api.post("/v1/resources", json!({"name": "  ", "time_zone": "UTC"}))
            .await
            .assert_problem(422)["field"],
        "name"
    );
    api.post(
        "/v1/resources",
        json!({"name": "A", "time_zone": "UTC", "colour": "red"}),
    )
    .await
    .assert_problem(422);
    api.post(
        "/v1/resources",
        json!({"name": "a\u{0}b", "time_zone": "UTC"}),
    )
    .await
    .assert_problem(422);
    api.post("/v1/resources", json!({"name": "A"}))
        .await
        .assert_problem(422);
    api.raw(
        Method::POST,
        "/v1/resources",
        Some("application/json"),
        b"{\"name\": ".to_vec(),
    )
    .await
    .assert_problem(400);
    api.raw(
        Method::POST,
        "/v1/resources",
        Some("text/plain"),
        b"{}".to_vec(),
    )
    .await
    .assert_problem(415);
    let huge = json!({"name": "x".repeat(100 * 1024), "time_zone": "UTC"});
    api.post("/v1/resources", huge).await.assert_problem(413);
    api.patch(&res, json!({"time_zone": "Nowhere/Land"}))
        .await
        .assert_problem(422);
    api.patch(&format!("/v1/resources/{missing}"), json!({"name": "B"}))
        .await
        .assert_problem(404);
    api.get(&format!("/v1/resources/{missing}"))
        .await
        .assert_problem(404);
    api.delete(&format!("/v1/resources/{missing}"))
        .await
        .assert_problem(404);
    api.get("/v1/resources/not-a-uuid")
        .await
        .assert_problem(400);
    api.get("/v1/resources?limit=abc").await.assert_problem(400);

    // Appointment types.
    let type_body = |extra: Value| {
        let mut body = json!({"name": "t", "duration_minutes": 30, "currency": "EUR"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, field) in [
        (json!({"duration_minutes": 0}), "duration_minutes"),
        (json!({"duration_minutes": 2000}), "duration_minutes"),
        (json!({"capacity": 0}), "capacity"),
        (json!({"currency": "XXQ"}), "currency"),
        (json!({"price_minor": -1}), "price_minor"),
        (
            json!({"min_notice_minutes": 100, "horizon_minutes": 50}),
            "min_notice_minutes",
        ),
    ] {
        let p = api.post(&types, type_body(extra.clone())).await;
        assert_eq!(p.assert_problem(422)["field"], field, "{extra}");
    }
    api.post(&types, type_body(json!({"duration_minutes": -5})))
        .await
        .assert_problem(422);
    api.post(
        &format!("/v1/resources/{missing}/appointment-types"),
        type_body(json!({})),
    )
    .await
    .assert_problem(404);
    api.patch(
        &format!("/v1/appointment-types/{ty}"),
        json!({"interval_minutes": 0}),
    )
    .await
    .assert_problem(422);
    assert_eq!(
        api.get(&format!("/v1/appointment-types/{ty}")).await.body["interval_minutes"],
        30
    );
    api.get(&format!("/v1/appointment-types/{missing}"))
        .await
        .assert_problem(404);
    api.delete(&format!("/v1/appointment-types/{missing}"))
        .await
        .assert_problem(404);

    // Schedules and overrides.
    api.put(
        &schedule,
        json!({"monday": [{"start": "12:00", "end": "09:00"}]}),
    )
    .await
    .assert_problem(422);
    api.put(
        &schedule,
        json!({"monday": [{"start": "09:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]}),
    )
    .await
    .assert_problem(422);
    api.put(
        &schedule,
        json!({"monday": [{"start": "25:00", "end": "26:00"}]}),
    )
    .await
    .assert_problem(422);
    assert_eq!(
        api.put(&schedule, json!({"mondai": []}))
            .await
            .assert_problem(422)["field"],
        "mondai"
    );
    api.put(&format!("/v1/resources/{missing}/schedule"), json!({}))
        .await
        .assert_problem(404);
    let overrides = format!("/v1/resources/{id}/overrides");
    api.put(
        &overrides,
        json!({"date": "2026-02-30", "hours": {"kind": "closed"}}),
    )
    .await
    .assert_problem(422);
    api.put(&overrides, json!({"date": "2030-01-01", "hours": {"kind": "open", "intervals": [{"start": "10:00", "end": "09:00"}]}}))
        .await
        .assert_problem(422);
    api.delete(&format!("{overrides}/2030-01-01"))
        .await
        .assert_problem(404);
    api.delete(&format!("{overrides}/not-a-date"))
        .await
        .assert_problem(400);

    // Slots.
    let slots = |q: &str| format!("/v1/resources/{id}/slots?{q}");
    let from = "2030-01-01T00:00:00Z";
    let p = api
        .get(&slots(&format!(
            "type={ty}&from={from}&to=2030-03-10T00:00:00Z"
        )))
        .await;
    assert!(
        p.assert_problem(400)["detail"]
            .as_str()
            .unwrap()
            .contains("longer than")
    );
    api.get(&slots(&format!(
        "type={ty}&from={from}&to=2029-12-31T00:00:00Z"
    )))
    .await
    .assert_problem(400);
    api.get(&slots(&format!("type={ty}&from={from}&tz=Mars/Olympus")))
        .await
        .assert_problem(400);
    api.get(&slots(&format!("type={ty}&from=yesterday")))
        .await
        .assert_problem(400);
    api.get(&slots(&format!("from={from}")))
        .await
        .assert_problem(400);
    api.get(&slots(&format!("type={missing}&from={from}")))
        .await
        .assert_problem(404);
    api.get(&format!("/v1/resources/{missing}/slots?type={ty}"))
        .await
        .assert_problem(404);

    // Calendars.
    let calendars = format!("/v1/resources/{id}/calendars");
    api.post(&calendars, json!({})).await.assert_problem(422);
    api.post(
        &calendars,
        json!({"url": "http://127.0.0.1:9/x.ics", "ics": "BEGIN:VCALENDAR"}),
    )
    .await
    .assert_problem(422);
    api.post(&calendars, json!({"ics": "this is not a calendar"}))
        .await
        .assert_problem(422);
    api.post(
        &calendars,
        json!({"ics": "BEGIN:VCALENDAR\r\n\u{0}END:VCALENDAR\r\n"}),
    )
    .await
    .assert_problem(422);
    api.post(&calendars, json!({"url": "ftp://example.invalid/cal.ics"}))
        .await
        .assert_problem(422);
    let p = api
        .post(
            &calendars,
            json!({"url": "http://127.0.0.1:9/unreachable.ics"}),
        )
        .await;
    assert_eq!(
        p.assert_problem(400)["detail"],
        "calendar URL points to a private or local address"
    );
    api.post(
        &calendars,
        json!({"url": "http://unreachable.invalid/x.ics"}),
    )
    .await
    .assert_problem(422);
    api.post(
        &calendars,
        json!({"ics": "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "refresh_interval_secs": 1}),
    )
    .await
    .assert_problem(422);
    api.post(
        &format!("/v1/resources/{missing}/calendars"),
        json!({"ics": "x"}),
    )
    .await
    .assert_problem(404);
    api.delete(&format!("/v1/calendars/{missing}"))
        .await
        .assert_problem(404);

    // Routing, through the runtime's fallbacks.
    api.get("/v1/nope").await.assert_problem(404);
    api.call(Method::PUT, "/v1/resources", Some(json!({})))
        .await
        .assert_problem(405);

    assert_eq!(
        av.table_counts().await.unwrap(),
        before,
        "bad input must write nothing"
    );
    assert_eq!(api.get(&res).await.body["time_zone"], "Europe/Paris");
}

/// The cancellation policy of appointment types: set on create, kept by
/// other changes, replaced and removed by PATCH, refused out of range
/// without writing anything.
async fn cancellation_policy(av: &Availability) {
    let rt = runtime();
    let api = Api::finished(av, &rt);
    let id = api.resource("Room", "UTC").await;
    let types = format!("/v1/resources/{id}/appointment-types");
    let body = |policy: Value| {
        json!({"name": "t", "duration_minutes": 30, "currency": "EUR",
               "cancellation_policy": policy})
    };
    let policy = |hours: i64, percent: i64| json!({"full_refund_notice_hours": hours, "late_refund_percent": percent});

    let plain = api
        .post(
            &types,
            json!({"name": "p", "duration_minutes": 30, "currency": "EUR"}),
        )
        .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.body);
    assert_eq!(plain.body["cancellation_policy"], Value::Null);
    let null = api.post(&types, body(Value::Null)).await;
    assert_eq!(null.status, StatusCode::CREATED, "{}", null.body);
    assert_eq!(null.body["cancellation_policy"], Value::Null);

    let created = api.post(&types, body(policy(24, 50))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["cancellation_policy"], policy(24, 50));
    let ty = format!("/v1/appointment-types/{}", id_of(&created.body));
    assert_eq!(
        api.get(&ty).await.body["cancellation_policy"],
        policy(24, 50)
    );
    let listed = api.get(&types).await;
    assert!(
        listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["cancellation_policy"] == policy(24, 50)),
        "{}",
        listed.body
    );
    // The extremes are allowed.
    for (hours, percent) in [(0, 0), (8760, 100)] {
        let r = api.post(&types, body(policy(hours, percent))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }

    // PATCH: other fields leave it alone; a policy replaces it; null removes it.
    let r = api.patch(&ty, json!({"name": "renamed"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["cancellation_policy"], policy(24, 50));
    let r = api
        .patch(&ty, json!({"cancellation_policy": policy(48, 0)}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["cancellation_policy"], policy(48, 0));
    assert_eq!(
        api.get(&ty).await.body["cancellation_policy"],
        policy(48, 0)
    );
    let r = api.patch(&ty, json!({"cancellation_policy": null})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["cancellation_policy"], Value::Null);
    assert_eq!(api.get(&ty).await.body["cancellation_policy"], Value::Null);
    let r = api
        .patch(&ty, json!({"cancellation_policy": policy(12, 25)}))
        .await;
    assert_eq!(r.body["cancellation_policy"], policy(12, 25), "{}", r.body);

    // Out of range: 422 naming the field; nothing written.
    let before = av.table_counts().await.unwrap();
    let kept = api.get(&ty).await.body;
    let notice = "cancellation_policy.full_refund_notice_hours";
    let percent = "cancellation_policy.late_refund_percent";
    for (bad, field) in [
        (policy(8761, 50), notice),
        (policy(-1, 50), notice),
        (policy(24, 101), percent),
        (policy(24, -1), percent),
    ] {
        let p = api.post(&types, body(bad.clone())).await;
        assert_eq!(p.assert_problem(422)["field"], field, "{bad}");
        let p = api.patch(&ty, json!({"cancellation_policy": bad})).await;
        assert_eq!(p.assert_problem(422)["field"], field);
    }
    // Not the documented shape: refused by the JSON extractor.
    for bad in [
        json!({"full_refund_notice_hours": 24}),
        json!({"late_refund_percent": 50}),
        json!({"full_refund_notice_hours": 24, "late_refund_percent": 50, "fee": 1}),
        json!({"full_refund_notice_hours": 1.5, "late_refund_percent": 50}),
        json!("24h"),
    ] {
        api.post(&types, body(bad.clone()))
            .await
            .assert_problem(422);
        api.patch(&ty, json!({"cancellation_policy": bad}))
            .await
            .assert_problem(422);
    }
    assert_eq!(av.table_counts().await.unwrap(), before);
    assert_eq!(api.get(&ty).await.body, kept, "bad input changed nothing");
}

#[tokio::test]
async fn cancellation_policy_postgres() {
    let (av, _db) = common::pg(false).await;
    cancellation_policy(&av).await;
}

#[tokio::test]
async fn cancellation_policy_sqlite() {
    cancellation_policy(&common::sqlite().await).await;
}

/// The database refuses a policy out of range, or half a policy, however
/// it is written.
#[tokio::test]
async fn cancellation_policy_is_checked_by_postgres() {
    let (av, db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    av.claim(common::scenarios::request(
        fx.resource,
        fx.single,
        common::day_at(2, 10, 0),
        "a",
    ))
    .await
    .unwrap();
    let mut conn = db.conn().await;
    for table in ["appointment_types", "claims"] {
        for (notice, percent) in [
            (Some(8761), Some(0)),
            (Some(-1), Some(0)),
            (Some(0), Some(101)),
            (Some(0), Some(-1)),
            (Some(24), None),
            (None, Some(50)),
        ] {
            let sql = format!(
                "UPDATE availability.{table} SET full_refund_notice_hours = $1, \
                 late_refund_percent = $2"
            );
            let err = sqlx::query(&sql)
                .bind(notice)
                .bind(percent)
                .execute(&mut conn)
                .await
                .unwrap_err();
            assert_eq!(
                err.as_database_error().unwrap().code().as_deref(),
                Some("23514"),
                "{table}: {notice:?}, {percent:?}"
            );
        }
    }
}

#[tokio::test]
async fn crud_postgres() {
    let (av, _db) = common::pg(false).await;
    crud(&av).await;
}

#[tokio::test]
async fn bad_input_postgres() {
    let (av, _db) = common::pg(false).await;
    bad_input(&av).await;
}

#[tokio::test]
async fn crud_sqlite() {
    crud(&common::sqlite().await).await;
}

#[tokio::test]
async fn bad_input_sqlite() {
    bad_input(&common::sqlite().await).await;
}

/// Pages through every resource, then through each owner's, with and
/// without a cursor: each filter combination is a statement of its own.
async fn list_pages(av: &Availability) {
    let api = Api::new(av);
    for i in 0..5 {
        api.resource(&format!("r{i}"), "UTC").await;
    }
    let root = api.with_token(admin());
    for i in 0..4 {
        let body = json!({"name": format!("o{i}"), "time_zone": "UTC", "owner_id": "staff-other"});
        let created = root.post("/v1/resources", body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    }
    for (filter, owner, total) in [
        ("", None, 9),
        ("&owner_id=staff-a", Some(OWNER), 5),
        ("&owner_id=staff-other", Some("staff-other"), 4),
        ("&owner_id=nobody", Some("nobody"), 0),
    ] {
        let mut seen: Vec<String> = Vec::new();
        let mut cursor = String::new();
        for _ in 0..5 {
            let page = api
                .get(&format!("/v1/resources?limit=3{filter}{cursor}"))
                .await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            let items = page.body["items"].as_array().unwrap();
            assert!(items.len() <= 3, "{}", page.body);
            for item in items {
                if let Some(owner) = owner {
                    assert_eq!(item["owner_id"], owner, "{filter}: {}", page.body);
                }
                seen.push(item["id"].as_str().unwrap().to_owned());
            }
            match page.body.get("next_after").and_then(Value::as_str) {
                Some(after) => cursor = format!("&after={after}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), total, "{filter}: {seen:?}");
        let mut ordered = seen.clone();
        ordered.sort();
        ordered.dedup();
        assert_eq!(ordered, seen, "{filter}: pages in id order, none twice");
    }
}

#[tokio::test]
async fn list_pages_through_resources_sqlite() {
    list_pages(&common::sqlite().await).await;
}

#[tokio::test]
async fn list_pages_through_resources_postgres() {
    let (av, _db) = common::pg(false).await;
    list_pages(&av).await;
}

#[tokio::test]
async fn readiness_reports_the_database() {
    let av = common::sqlite().await;
    av.check_ready().await.unwrap();
    av.check_redis().await.unwrap();
}
