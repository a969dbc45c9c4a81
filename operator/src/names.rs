//! Names, labels and annotations shared by the builders, the reconciler and
//! the tests.

use crate::crd::Component;

/// Field manager of every server-side apply; also the `managed-by` label.
pub const MANAGER: &str = "berth-operator";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_VERSION: &str = "app.kubernetes.io/version";
/// Selector labels (immutable once a Deployment exists).
pub const LABEL_PLATFORM: &str = "berth.dev/platform";
pub const LABEL_ROLE: &str = "berth.dev/role";

/// Hash of the applied configuration, written on each child. The reconciler
/// compares it with the desired object's hash and skips unchanged objects.
pub const ANNOTATION_HASH: &str = "berth.dev/applied-hash";

/// Label selector of everything the operator manages (used by its watches).
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER}")
}

/// Role label values for non-component workloads.
pub const ROLE_MIGRATE: &str = "migrate";
pub const ROLE_REDIS: &str = "redis";

pub fn component_name(platform: &str, c: Component) -> String {
    format!("{platform}-{}", c.as_str())
}

/// The headless Service of the availability replicas' ledger gRPC API: it
/// resolves to every ready pod, and booking routes each claim to one by
/// resource. No longer than the component's own name, so it fits wherever
/// that does.
pub fn ledger_service_name(platform: &str) -> String {
    format!("{platform}-ledger")
}

pub fn config_map_name(platform: &str, c: Component) -> String {
    format!("{platform}-{}-config", c.as_str())
}

pub fn redis_name(platform: &str) -> String {
    format!("{platform}-redis")
}

pub fn migrate_account_name(platform: &str) -> String {
    format!("{platform}-migrate")
}

/// Migration Job name: `<platform>-migrate-<version>`, the version made
/// DNS-safe (lowercase alphanumerics, `-` and `.`); when that exceeds 63 characters (the Job controller puts the
/// name in a label) the version part becomes a short stable hash.
pub fn migration_job_name(platform: &str, version: &str) -> String {
    let sanitized: String = version
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let sanitized = sanitized
        .trim_matches(|c: char| c == '-' || c == '.')
        .to_string();
    let name = format!("{platform}-migrate-{sanitized}");
    // Sanitising can merge distinct versions (1.0_a / 1.0-a); a hash suffix
    // keeps them apart whenever sanitising changed anything.
    if name.len() <= 63 && sanitized == version {
        name
    } else {
        let hash = crate::hash::fnv1a64(version.as_bytes());
        let short = format!("{:010x}", hash & 0xff_ffff_ffff);
        // Room left for a readable version prefix next to the hash.
        let room = 63usize.saturating_sub(platform.len() + "-migrate-".len() + 11);
        let prefix: String = sanitized.chars().take(room).collect();
        let prefix = prefix.trim_matches(|c: char| c == '-' || c == '.');
        if prefix.is_empty() {
            format!("{platform}-migrate-{short}")
        } else {
            format!("{platform}-migrate-{prefix}-{short}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_valid_labels_and_distinct() {
        assert_eq!(migration_job_name("shop", "1.4.2"), "shop-migrate-1.4.2");
        assert_eq!(migration_job_name("shop", "v2"), "shop-migrate-v2");
        let a = migration_job_name("shop", "1.0_a");
        let b = migration_job_name("shop", "1.0-a");
        assert_ne!(a, b);
        let long = migration_job_name("abcdefghijklmnopqrstuvwxyz1234", &"9".repeat(64));
        assert!(long.len() <= 63, "{long}");
    }
}
