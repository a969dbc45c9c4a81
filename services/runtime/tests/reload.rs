//! A config-file change takes effect without a restart; a bad file is ignored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::resilience::clock::SystemClock;
use berth_runtime::resilience::{BreakerState, Dependencies, watch_dependency_settings};
use tokio_util::sync::CancellationToken;

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Replaces the file the way a ConfigMap update does: write aside, rename.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn breaker_settings_reload_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    replace(
        &path,
        "[dependencies.availability.breaker]\nminimum_calls = 100\nopen_duration = \"30s\"\n",
    );
    let deps = Arc::new(Dependencies::unobserved(
        berth_runtime::resilience::parse_dependency_settings(
            &std::fs::read_to_string(&path).unwrap(),
        )
        .unwrap(),
        Arc::new(SystemClock),
    ));
    let dep = deps.get("availability");
    assert_eq!(dep.breaker.settings().minimum_calls, 100);
    let stop = CancellationToken::new();
    // Long poll interval: only the file-system event can make this fast.
    let _handle = watch_dependency_settings(
        path.clone(),
        deps.clone(),
        Duration::from_secs(60),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    replace(
        &path,
        "[dependencies.availability]\ntimeout = \"250ms\"\n[dependencies.availability.breaker]\nminimum_calls = 2\nopen_duration = \"30s\"\n",
    );
    assert!(
        eventually(|| dep.breaker.settings().minimum_calls == 2).await,
        "new settings not applied"
    );
    assert_eq!(dep.settings().timeout, Duration::from_millis(250));

    // The reloaded threshold governs the live breaker.
    for _ in 0..2 {
        dep.breaker.try_acquire().unwrap().record(false);
    }
    assert_eq!(dep.breaker.state(), BreakerState::Open);

    // An invalid file is ignored; the last good settings stay.
    replace(
        &path,
        "[dependencies.availability.breaker]\nfailure_rate_threshold = 7\n",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(dep.breaker.settings().minimum_calls, 2);

    // A later valid file applies again.
    replace(
        &path,
        "[dependencies.availability.breaker]\nminimum_calls = 9\n",
    );
    assert!(eventually(|| dep.breaker.settings().minimum_calls == 9).await);
    stop.cancel();
}

#[tokio::test]
async fn polling_catches_changes_without_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "").unwrap();
    let deps = Arc::new(Dependencies::unobserved(
        BTreeMap::new(),
        Arc::new(SystemClock),
    ));
    let dep = deps.get("payment");
    let stop = CancellationToken::new();
    let _handle = watch_dependency_settings(
        path.clone(),
        deps.clone(),
        Duration::from_millis(100),
        stop.clone(),
    );
    std::fs::write(&path, "[dependencies.payment.retry]\nmax_attempts = 1\n").unwrap();
    assert!(eventually(|| dep.settings().retry.max_attempts == 1).await);
    stop.cancel();
}
