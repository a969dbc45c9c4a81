#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `crds/` and the chart's CRD templates must equal what the Rust types
//! generate. Regenerate with `cargo run -p berth-operator -- crd --write`.

use std::path::Path;

use berth_operator::crd;

#[test]
fn crds_folder_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for (file, yaml) in crd::crd_files().unwrap() {
        let path = root.join("crds").join(&file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "{} is stale; run `cargo run -p berth-operator -- crd --write`",
            path.display()
        );
    }
}

#[test]
fn chart_crd_templates_match_crds_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for (file, yaml) in crd::crd_files().unwrap() {
        let path = root
            .join("charts/berth-operator/templates/crds")
            .join(&file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == crd::chart_crd_template(&yaml),
            "{} is stale; run `cargo run -p berth-operator -- crd --write`",
            path.display()
        );
    }
}

#[test]
fn crds_carry_names_columns_and_validation() {
    let all = crd::crds_yaml().unwrap();
    for needle in [
        "shortNames:\n    - bp",
        "shortNames:\n    - bsvc",
        "categories:\n    - berth",
        "name: Ready",
        "name: Version",
        "name: Services",
        "self.minReplicas <= self.maxReplicas",
        "duration(self) > duration('0s')",
        "self > 0.0 && self <= 1.0",
        "- availability",
    ] {
        assert!(all.contains(needle), "CRDs lack {needle:?}");
    }
}
