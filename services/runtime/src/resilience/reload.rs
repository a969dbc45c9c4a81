//! Hot reload of `[dependencies]` from the config file.
//!
//! Kubernetes updates a mounted ConfigMap by swapping a symlink in the
//! directory, so we watch the directory (not the file) with `notify`, and
//! also re-check on an interval in case an event is missed. A file that no
//! longer parses or validates is logged and ignored: the last good settings
//! stay in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Dependencies, DependencySettings};

#[derive(Deserialize)]
struct DependenciesOnly {
    #[serde(default)]
    dependencies: BTreeMap<String, DependencySettings>,
}

/// Parses and validates the dependency section of a config file.
pub fn parse_dependency_settings(
    text: &str,
) -> Result<BTreeMap<String, DependencySettings>, String> {
    let parsed: DependenciesOnly = toml::from_str(text).map_err(|e| e.to_string())?;
    for (name, settings) in &parsed.dependencies {
        settings
            .validate()
            .map_err(|e| format!("dependencies.{name}.{}: {}", e.0, e.1))?;
    }
    Ok(parsed.dependencies)
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct ReloadHandle {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloadHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn watch_dependency_settings(
    path: PathBuf,
    dependencies: Arc<Dependencies>,
    poll_every: Duration,
    stop: CancellationToken,
) -> ReloadHandle {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = directory_watcher(&path, tx);
    // Read before spawning so a change made right after this call is seen
    // as a change.
    let mut last = std::fs::read_to_string(&path).ok();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = rx.recv() => {}
            }
            let current = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "config file unreadable; keeping current dependency settings");
                    continue;
                }
            };
            if last.as_deref() == Some(current.as_str()) {
                continue;
            }
            match parse_dependency_settings(&current) {
                Ok(settings) => {
                    tracing::info!(path = %path.display(), dependencies = settings.len(), "dependency settings reloaded");
                    dependencies.apply(settings);
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "invalid dependency settings ignored; keeping the last good ones");
                }
            }
            last = Some(current);
        }
    });
    ReloadHandle {
        _watcher: watcher,
        task,
    }
}

fn directory_watcher(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // Full channel means a reload is already pending.
            let _ = tx.try_send(());
        }
    });
    match watcher {
        Ok(mut w) => match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch config directory; relying on polling");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "file watching unavailable; relying on polling");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let ok = parse_dependency_settings(
            "http_addr = \"0.0.0.0:1\"\n[dependencies.availability]\ntimeout = \"300ms\"\n[dependencies.availability.breaker]\nminimum_calls = 7",
        )
        .unwrap();
        assert_eq!(ok["availability"].timeout, Duration::from_millis(300));
        assert_eq!(ok["availability"].breaker.minimum_calls, 7);

        let err = parse_dependency_settings("[dependencies.x.breaker]\nhalf_open_probes = 0")
            .unwrap_err();
        assert!(
            err.contains("dependencies.x.breaker.half_open_probes"),
            "{err}"
        );
        assert!(parse_dependency_settings("[dependencies.x]\ntimeout = \"soon\"").is_err());
    }
}
