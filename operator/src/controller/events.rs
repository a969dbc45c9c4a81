//! Kubernetes Events for what a reconcile did and for condition changes.

use kube::Resource;
use kube::runtime::events::{Event as KEvent, EventType};

use super::{Context, Outcome};
use crate::build::Plan;
use crate::crd::{BookingPlatform, BookingPlatformStatus};
use crate::status;

pub(super) async fn publish_events(
    ctx: &Context,
    p: &BookingPlatform,
    previous: Option<&BookingPlatformStatus>,
    new: &BookingPlatformStatus,
    plan: &Plan,
    outcome: &Outcome,
) {
    let mut events: Vec<(EventType, &str, &str, String)> = Vec::new();
    let prev = |t: &str| {
        previous
            .and_then(|s| status::find(&s.conditions, t))
            .cloned()
    };
    let cur = |t: &str| status::find(&new.conditions, t).cloned();
    if outcome.job_created {
        events.push((
            EventType::Normal,
            "MigrationStarted",
            "Migrate",
            format!(
                "created migration job {} for version {}; services stay on their current version until it succeeds",
                plan.migration_job, plan.target_version
            ),
        ));
    }
    if outcome.moved_version {
        events.push((
            EventType::Normal,
            "RolloutStarted",
            "Rollout",
            format!(
                "migration to {} succeeded; rolling the services to it",
                plan.target_version
            ),
        ));
    }
    if !outcome.applied.is_empty() {
        let mut list = outcome.applied.clone();
        list.sort();
        let shown: Vec<String> = list.iter().take(12).cloned().collect();
        let more = list.len().saturating_sub(shown.len());
        let suffix = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        events.push((
            EventType::Normal,
            "Applied",
            "Apply",
            format!(
                "applied {} object(s): {}{suffix}",
                list.len(),
                shown.join(", ")
            ),
        ));
    }
    if !outcome.pruned.is_empty() {
        events.push((
            EventType::Normal,
            "Pruned",
            "Delete",
            format!(
                "deleted objects no longer desired: {}",
                outcome.pruned.join(", ")
            ),
        ));
    }
    if let (Some(d), old) = (cur(status::DEGRADED), prev(status::DEGRADED))
        && d.status == "True"
        && old.as_ref().map(|o| (&o.status, &o.message)) != Some((&d.status, &d.message))
    {
        events.push((
            EventType::Warning,
            leak(&d.reason),
            "Validate",
            d.message.clone(),
        ));
    }
    if let (Some(r), old) = (cur(status::READY), prev(status::READY))
        && r.status == "True"
        && old.as_ref().map(|o| o.status.as_str()) != Some("True")
    {
        events.push((EventType::Normal, "Ready", "Observe", r.message.clone()));
    }
    if let (Some(pr), old) = (cur(status::PROGRESSING), prev(status::PROGRESSING))
        && pr.reason == "Paused"
        && old.as_ref().map(|o| o.reason.as_str()) != Some("Paused")
    {
        events.push((EventType::Normal, "Paused", "Pause", pr.message.clone()));
    }
    let reference = p.object_ref(&());
    for (type_, reason, action, note) in events {
        let ev = KEvent {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(&note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, "publishing event failed");
        }
    }
}

/// Event reasons are short static words; Degraded reasons come from a fixed
/// set, mapped here without allocation games.
pub(super) fn leak(reason: &str) -> &'static str {
    match reason {
        "SecretNotFound" => "SecretNotFound",
        "SecretKeyNotFound" => "SecretKeyNotFound",
        "ServiceSpecConflict" => "ServiceSpecConflict",
        "MigrationFailed" => "MigrationFailed",
        _ => "Degraded",
    }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
