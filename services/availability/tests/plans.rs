//! How PostgreSQL plans availability's statements. Availability's
//! connections use generic plans (one plan for every parameter), so a
//! statement with optional filters must not hide them behind
//! `$n IS NULL OR …`: a generic plan cannot tell whether the filter
//! applies and reads past every row it does not need. Needs PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use berth_availability::resource_page_sql;
use sqlx::Row;

#[tokio::test]
async fn an_owners_page_of_resources_is_read_through_the_owner_index() {
    let (_av, db) = common::pg(false).await;
    let mut conn = db.conn().await;
    // Three resources of ours among 5,000 of 500 other owners.
    for sql in [
        "INSERT INTO availability.resources (id, name, time_zone, owner_id, created_at, updated_at) \
         SELECT gen_random_uuid(), 'r', 'UTC', \
                CASE WHEN i <= 3 THEN 'staff-x' ELSE 'other-' || (i % 500) END, now(), now() \
         FROM generate_series(1, 5000) AS i",
        "ANALYZE availability.resources",
        "SET search_path = availability",
        "SET plan_cache_mode = force_generic_plan",
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    for (name, after, args) in [
        ("first_page", false, "('staff-x', 100)"),
        (
            "later_page",
            true,
            "('00000000-0000-0000-0000-000000000000', 'staff-x', 100)",
        ),
    ] {
        let prepare = format!("PREPARE {name} AS {}", resource_page_sql(after, true));
        sqlx::raw_sql(&prepare).execute(&mut conn).await.unwrap();
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name} {args}"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("resources_owner"),
            "{name}: the owner's page should come from resources_owner:\n{plan}"
        );
        let rows = sqlx::raw_sql(&format!("EXECUTE {name} {args}"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let owners: Vec<String> = rows.iter().map(|r| r.get("owner_id")).collect();
        assert_eq!(owners, ["staff-x"; 3], "{name}");
    }
}
