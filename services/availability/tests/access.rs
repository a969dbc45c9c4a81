//! Authorisation: reads are public, writes need `admin` or the owning
//! `staff` member, calendars are hidden from everyone else, and a refused
//! call writes nothing. Runs on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode, header};
use berth_availability::Availability;
use berth_runtime::auth::testing::TestIssuer;
use common::{Api, OWNER, Reply, admin, customer, staff};
use serde_json::{Value, json};
use uuid::Uuid;

const NOT_YOURS: &str = "you do not manage this resource";

/// A resource of [`OWNER`] with a type, a schedule, an override and an
/// uploaded calendar.
struct Owned {
    api: Api,
    resource: Uuid,
    ty: Uuid,
    calendar: Uuid,
}

const ICS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n";

async fn owned(av: &Availability) -> Owned {
    let api = Api::new(av);
    let resource = api.resource("Room A", "UTC").await;
    api.open_all_week(resource).await;
    let ty = api
        .appointment_type(
            resource,
            json!({"name": "t", "duration_minutes": 30, "currency": "EUR"}),
        )
        .await;
    let o = api
        .put(
            &format!("/v1/resources/{resource}/overrides"),
            json!({"date": "2030-01-01", "hours": {"kind": "closed"}}),
        )
        .await;
    assert_eq!(o.status, StatusCode::OK, "{}", o.body);
    let c = api
        .post(
            &format!("/v1/resources/{resource}/calendars"),
            json!({"ics": ICS}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    Owned {
        api,
        resource,
        ty,
        calendar: c.body["id"].as_str().unwrap().parse().unwrap(),
    }
}

/// Every mutation of the resource and what hangs off it, as (method, uri, body).
fn mutations(o: &Owned) -> Vec<(Method, String, Option<Value>)> {
    let (r, t, c) = (o.resource, o.ty, o.calendar);
    let ty = json!({"name": "x", "duration_minutes": 30, "currency": "EUR"});
    vec![
        (
            Method::PATCH,
            format!("/v1/resources/{r}"),
            Some(json!({"name": "Mine"})),
        ),
        (Method::DELETE, format!("/v1/resources/{r}"), None),
        (
            Method::POST,
            format!("/v1/resources/{r}/appointment-types"),
            Some(ty),
        ),
        (
            Method::PATCH,
            format!("/v1/appointment-types/{t}"),
            Some(json!({"capacity": 9})),
        ),
        (Method::DELETE, format!("/v1/appointment-types/{t}"), None),
        (
            Method::PUT,
            format!("/v1/resources/{r}/schedule"),
            Some(json!({})),
        ),
        (
            Method::PUT,
            format!("/v1/resources/{r}/overrides"),
            Some(json!({"date": "2030-01-02", "hours": {"kind": "closed"}})),
        ),
        (
            Method::DELETE,
            format!("/v1/resources/{r}/overrides/2030-01-01"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/resources/{r}/calendars"),
            Some(json!({"ics": ICS})),
        ),
        (Method::DELETE, format!("/v1/calendars/{c}"), None),
    ]
}

/// Everything readable about the resource, to prove refusals changed nothing.
async fn snapshot(av: &Availability, o: &Owned) -> Vec<Value> {
    let mut seen = vec![serde_json::to_value(av.table_counts().await.unwrap()).unwrap()];
    for uri in [
        format!("/v1/resources/{}", o.resource),
        format!("/v1/appointment-types/{}", o.ty),
        format!("/v1/resources/{}/schedule", o.resource),
        format!("/v1/resources/{}/overrides", o.resource),
        format!("/v1/calendars/{}", o.calendar),
    ] {
        seen.push(o.api.get(&uri).await.body);
    }
    seen
}

#[track_caller]
fn assert_unauthorized(r: &Reply) {
    r.assert_problem(401);
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
}

async fn strangers_change_nothing(av: &Availability) {
    let o = owned(av).await;
    let before = snapshot(av, &o).await;
    let others = [
        ("staff B", staff("staff-b")),
        ("customer", customer()),
        (
            "owner's subject without staff",
            Some(common::token(OWNER, &["customer"])),
        ),
    ];
    for (who, token) in others {
        let api = o.api.with_token(token);
        for (method, uri, body) in mutations(&o) {
            let r = api.call(method.clone(), &uri, body).await;
            if uri.starts_with("/v1/calendars/") {
                // Calendars are private: refused as if they did not exist.
                r.assert_problem(404);
                continue;
            }
            assert_eq!(
                r.assert_problem(403)["detail"],
                NOT_YOURS,
                "{who}: {method} {uri}"
            );
        }
    }
    let anonymous = o.api.with_token(None);
    let forged = o
        .api
        .with_token(Some(TestIssuer::new().token(OWNER, &["admin"])));
    let garbage = o.api.with_token(Some("not-a-jwt".to_owned()));
    for (method, uri, body) in mutations(&o) {
        for api in [&anonymous, &forged, &garbage] {
            assert_unauthorized(&api.call(method.clone(), &uri, body.clone()).await);
        }
    }
    // Authentication comes before reading the body.
    let r = anonymous
        .raw(
            Method::POST,
            "/v1/resources",
            Some("application/json"),
            b"{".to_vec(),
        )
        .await;
    assert_unauthorized(&r);
    assert_eq!(
        snapshot(av, &o).await,
        before,
        "refused calls write nothing"
    );
}

async fn creating_resources(av: &Availability) {
    let api = Api::new(av);
    let before = av.table_counts().await.unwrap();
    let body = json!({"name": "R", "time_zone": "UTC"});
    api.with_token(customer())
        .post("/v1/resources", body.clone())
        .await
        .assert_problem(403);
    assert_unauthorized(
        &api.with_token(None)
            .post("/v1/resources", body.clone())
            .await,
    );
    let on_behalf = json!({"name": "R", "time_zone": "UTC", "owner_id": "staff-b"});
    api.post("/v1/resources", on_behalf.clone())
        .await
        .assert_problem(403);
    assert_eq!(av.table_counts().await.unwrap(), before);

    let mine = api.post("/v1/resources", body).await;
    assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.body);
    assert_eq!(mine.body["owner_id"], OWNER);
    let explicit = json!({"name": "R", "time_zone": "UTC", "owner_id": OWNER});
    assert_eq!(
        api.post("/v1/resources", explicit).await.status,
        StatusCode::CREATED
    );
    let theirs = api
        .with_token(admin())
        .post("/v1/resources", on_behalf)
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{}", theirs.body);
    assert_eq!(theirs.body["owner_id"], "staff-b");
    let own = api
        .with_token(admin())
        .post("/v1/resources", json!({"name": "A", "time_zone": "UTC"}))
        .await;
    assert_eq!(own.body["owner_id"], "admin-1");

    // The owner filter, public.
    let listed = api
        .with_token(None)
        .get("/v1/resources?owner_id=staff-b")
        .await;
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", listed.body);
    assert_eq!(items[0]["id"], theirs.body["id"]);
}

async fn admins_do_everything(av: &Availability) {
    let o = owned(av).await;
    let root = o.api.with_token(admin());
    let r = o.resource;
    for (method, uri, body) in mutations(&o) {
        if method != Method::DELETE {
            let reply = root.call(method.clone(), &uri, body).await;
            assert!(reply.status.is_success(), "{method} {uri}: {}", reply.body);
        }
    }
    assert_eq!(
        root.get(&format!("/v1/resources/{r}/calendars"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        root.get(&format!("/v1/calendars/{}", o.calendar))
            .await
            .status,
        StatusCode::OK
    );

    // Only an admin hands a resource over.
    let staff_b = o.api.with_token(staff("staff-b"));
    let res = format!("/v1/resources/{r}");
    o.api
        .patch(&res, json!({"owner_id": "staff-b"}))
        .await
        .assert_problem(403);
    let same = o
        .api
        .patch(&res, json!({"owner_id": OWNER, "name": "Same"}))
        .await;
    assert_eq!(
        same.status,
        StatusCode::OK,
        "naming yourself is fine: {}",
        same.body
    );
    let moved = root.patch(&res, json!({"owner_id": "staff-b"})).await;
    assert_eq!(moved.body["owner_id"], "staff-b", "{}", moved.body);
    o.api
        .put(&format!("{res}/schedule"), json!({}))
        .await
        .assert_problem(403);
    let s = staff_b.put(&format!("{res}/schedule"), json!({})).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    staff_b
        .patch(&res, json!({"owner_id": "staff-c"}))
        .await
        .assert_problem(403);

    // Deletes last.
    for (method, uri, _) in mutations(&o).into_iter().rev() {
        if method == Method::DELETE {
            let reply = root.call(method.clone(), &uri, None).await;
            assert_eq!(
                reply.status,
                StatusCode::NO_CONTENT,
                "{uri}: {}",
                reply.body
            );
        }
    }
}

async fn calendars_are_hidden(av: &Availability) {
    let o = owned(av).await;
    let (r, c) = (o.resource, o.calendar);
    let unknown_resource = o
        .api
        .get(&format!("/v1/resources/{}/calendars", Uuid::new_v4()))
        .await;
    let unknown_calendar = o
        .api
        .get(&format!("/v1/calendars/{}", Uuid::new_v4()))
        .await;
    for token in [staff("staff-b"), customer(), None] {
        let api = o.api.with_token(token);
        let list = api.get(&format!("/v1/resources/{r}/calendars")).await;
        list.assert_problem(404);
        assert_eq!(list.body["type"], unknown_resource.body["type"]);
        assert_eq!(list.body["detail"], format!("resource {r} not found"));
        let one = api.get(&format!("/v1/calendars/{c}")).await;
        one.assert_problem(404);
        assert_eq!(one.body["type"], unknown_calendar.body["type"]);
        assert_eq!(one.body["detail"], format!("calendar {c} not found"));
    }
    let mine = o.api.get(&format!("/v1/resources/{r}/calendars")).await;
    assert_eq!(mine.body.as_array().unwrap().len(), 1, "{}", mine.body);
}

async fn reads_are_public(av: &Availability) {
    let o = owned(av).await;
    let (r, t) = (o.resource, o.ty);
    let api = o.api.with_token(None);
    for uri in [
        "/v1/resources".to_owned(),
        format!("/v1/resources/{r}"),
        format!("/v1/resources/{r}/appointment-types"),
        format!("/v1/appointment-types/{t}"),
        format!("/v1/resources/{r}/schedule"),
        format!("/v1/resources/{r}/overrides"),
    ] {
        let reply = api.get(&uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
    }
    assert_eq!(
        api.get(&format!("/v1/resources/{r}")).await.body["owner_id"],
        OWNER
    );
    let from = common::day_at(1, 0, 0);
    let slots = api
        .slots(r, t, from, from + chrono::TimeDelta::hours(2))
        .await;
    assert_eq!(slots.len(), 4, "anonymous customers see slots");
}

#[tokio::test]
async fn strangers_change_nothing_sqlite() {
    strangers_change_nothing(&common::sqlite().await).await;
}

#[tokio::test]
async fn strangers_change_nothing_postgres() {
    let (av, _db) = common::pg(false).await;
    strangers_change_nothing(&av).await;
}

#[tokio::test]
async fn only_staff_and_admins_create_resources() {
    creating_resources(&common::sqlite().await).await;
}

#[tokio::test]
async fn only_staff_and_admins_create_resources_postgres() {
    let (av, _db) = common::pg(false).await;
    creating_resources(&av).await;
}

#[tokio::test]
async fn admins_manage_every_resource_and_hand_them_over() {
    admins_do_everything(&common::sqlite().await).await;
}

#[tokio::test]
async fn calendars_are_hidden_from_everyone_but_the_owner() {
    calendars_are_hidden(&common::sqlite().await).await;
}

#[tokio::test]
async fn reads_need_no_token() {
    reads_are_public(&common::sqlite().await).await;
}
