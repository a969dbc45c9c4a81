//! Keyset pagination over (start, id) with filters.

use std::collections::HashSet;

use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(pages_cover_everything_once);

async fn walk(api: &Api, query: &str, limit: u32) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/bookings?limit={limit}{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = api.get(&path).await;
        assert_eq!(page.status, 200, "{:?}", page.json);
        let batch = page.json["items"].as_array().unwrap().clone();
        assert!(batch.len() <= limit as usize);
        items.extend(batch);
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("pagination did not end");
}

fn ids(items: &[serde_json::Value]) -> Vec<String> {
    items
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn pages_cover_everything_once(backend: Backend) {
    let env = setup(backend).await;
    let kind = Uuid::now_v7();
    let resources = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let mut created = Vec::new();
    // 3 resources x 8 slots: every start is shared by three bookings, so the
    // id tie-break matters.
    for n in 0..8 {
        for resource in resources {
            let resp = env.api.create(resource, kind, slot(n)).await;
            assert_eq!(resp.status, 201);
            created.push(resp.json);
        }
    }
    for booking in created.iter().take(5) {
        let id: Uuid = booking["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(env.api.act(id, "confirm").await.status, 200);
    }

    let all = walk(&env.api, "", 5).await;
    assert_eq!(all.len(), 24);
    let unique: HashSet<_> = ids(&all).into_iter().collect();
    assert_eq!(unique.len(), 24, "no duplicates");
    let keys: Vec<(String, String)> = all
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap().to_owned(),
                b["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "ordered by (start, id)");

    let exact = walk(&env.api, "", 24).await;
    assert_eq!(ids(&exact), ids(&all), "a full page has no next cursor");

    let one = walk(&env.api, &format!("&resource_id={}", resources[1]), 3).await;
    assert_eq!(one.len(), 8);
    assert!(
        one.iter()
            .all(|b| b["resource_id"] == resources[1].to_string())
    );

    let window = walk(
        &env.api,
        &format!("&from={}&to={}", rfc3339(slot(2)), rfc3339(slot(5))),
        4,
    )
    .await;
    assert_eq!(window.len(), 9, "slots 2, 3 and 4 of three resources");

    let confirmed = walk(&env.api, "&status=confirmed", 2).await;
    assert_eq!(confirmed.len(), 5);
    let held = walk(&env.api, "&status=held", 50).await;
    assert_eq!(held.len(), 19);
}
