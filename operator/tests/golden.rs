#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Golden-YAML tests for the pure builders: representative specs in, the exact
//! objects the operator applies out. `UPDATE_GOLDEN=1 cargo test -p
//! berth-operator --test golden` rewrites the files; otherwise any difference
//! fails with a diff-friendly message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_operator::build::{self, JobState, Kind, Observed, Plan};
use berth_operator::crd::{BookingPlatform, Component, PaymentProvider, ServiceSpec};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Loads the first document of `kind` from an example file and gives it the
/// metadata the API server would (namespace, uid) so the output is stable.
fn load<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> T {
    let text = std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mut doc = docs
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {file}"));
    doc["metadata"]["namespace"] = "shop-ns".into();
    doc["metadata"]["uid"] = "00000000-0000-4000-8000-000000000001".into();
    serde_json::from_value(doc).unwrap()
}

fn check(name: &str, plan: &Plan) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.yaml"));
    let actual = plan.to_yaml();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the builder output at line {}:\n  golden: {:?}\n  actual: {:?}\n\
             Re-run with UPDATE_GOLDEN=1 if the change is intended, and review the diff.",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

fn no_specs() -> BTreeMap<Component, &'static ServiceSpec> {
    BTreeMap::new()
}

fn deployed(version: &str) -> BTreeMap<Component, String> {
    Component::ALL
        .iter()
        .map(|c| (*c, version.to_string()))
        .collect()
}

#[test]
fn minimal_first_install_waits_for_migration() {
    let p: BookingPlatform = load("minimal/bookingplatform.yaml", "BookingPlatform");
    let plan = build::plan(&p, &no_specs(), &Observed::default());
    // No Deployment before the first migration succeeded; the Job is there.
    assert!(plan.objects.iter().all(|c| c.kind != Kind::Deployment));
    assert!(plan.find(Kind::Job, "shop-migrate-1.0.0").is_some());
    assert_eq!(plan.migration_phase, build::MigrationPhase::Pending);
    check("minimal-first-install", &plan);
}

#[test]
fn minimal_with_autoscaled_booking_after_migration() {
    let p: BookingPlatform = load("minimal/bookingplatform.yaml", "BookingPlatform");
    let s: ServiceSpec = load("booking-autoscaling.yaml", "ServiceSpec");
    let specs = BTreeMap::from([(Component::Booking, &s)]);
    let observed = Observed {
        deployed: BTreeMap::new(),
        migration_job: Some(JobState::Succeeded),
    };
    let plan = build::plan(&p, &specs, &observed);
    let booking = plan.find(Kind::Deployment, "shop-booking").unwrap();
    // The autoscaler owns replicas: the field is absent, not 0 or 2.
    assert!(booking.object["spec"].get("replicas").is_none());
    assert!(
        plan.find(Kind::HorizontalPodAutoscaler, "shop-booking")
            .is_some()
    );
    let user = plan.find(Kind::Deployment, "shop-user").unwrap();
    assert_eq!(user.object["spec"]["replicas"], 1);
    check("minimal-autoscaled-booking", &plan);
}

#[test]
fn full_upgrade_keeps_old_version_until_migration_succeeds() {
    let p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    let observed = Observed {
        deployed: deployed("2.3.0"),
        migration_job: Some(JobState::Running),
    };
    let plan = build::plan(&p, &no_specs(), &observed);
    for c in Component::ALL {
        let d = plan.find(Kind::Deployment, &format!("clinic-{c}")).unwrap();
        let image = d.object["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap();
        assert_eq!(image, "registry.example.com/berth:2.3.0", "{c}");
    }
    assert_eq!(plan.migration_phase, build::MigrationPhase::Running);
    check("full-upgrade-migrating", &plan);

    // Once the Job succeeded, everything moves to the new version.
    let done = Observed {
        deployed: deployed("2.3.0"),
        migration_job: Some(JobState::Succeeded),
    };
    let plan = build::plan(&p, &no_specs(), &done);
    check("full-upgrade-migrated", &plan);
}

#[test]
fn failed_migration_keeps_previous_version() {
    let p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    let observed = Observed {
        deployed: deployed("2.3.0"),
        migration_job: Some(JobState::Failed("BackoffLimitExceeded".into())),
    };
    let plan = build::plan(&p, &no_specs(), &observed);
    assert_eq!(plan.migration_phase, build::MigrationPhase::Failed);
    let d = plan.find(Kind::Deployment, "clinic-booking").unwrap();
    assert_eq!(
        d.object["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"],
        "2.3.0"
    );
}

#[test]
fn migrated_version_without_job_creates_no_job() {
    // The Job of a version every Deployment already runs may be gone (deleted
    // by hand or by a TTL): it must not be recreated.
    let p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    let observed = Observed {
        deployed: deployed("2.3.1"),
        migration_job: Some(JobState::Absent),
    };
    let plan = build::plan(&p, &no_specs(), &observed);
    assert!(plan.objects.iter().all(|c| c.kind != Kind::Job));
    assert_eq!(plan.migration_phase, build::MigrationPhase::Succeeded);
}

#[test]
fn breaker_change_touches_only_the_config_map() {
    let p: BookingPlatform = load("minimal/bookingplatform.yaml", "BookingPlatform");
    let s: ServiceSpec = load("booking-autoscaling.yaml", "ServiceSpec");
    let mut changed = s.clone();
    changed
        .spec
        .dependencies
        .get_mut("availability")
        .unwrap()
        .circuit_breaker
        .as_mut()
        .unwrap()
        .failure_rate_threshold = Some(0.25);
    let observed = Observed {
        deployed: deployed("1.0.0"),
        migration_job: None,
    };
    let a = build::plan(&p, &BTreeMap::from([(Component::Booking, &s)]), &observed);
    let b = build::plan(
        &p,
        &BTreeMap::from([(Component::Booking, &changed)]),
        &observed,
    );
    let differing: Vec<(Kind, String)> = a
        .objects
        .iter()
        .zip(&b.objects)
        .filter(|(x, y)| x.hash != y.hash)
        .map(|(x, _)| (x.kind, x.name.clone()))
        .collect();
    assert_eq!(
        differing,
        vec![(Kind::ConfigMap, "shop-booking-config".to_string())]
    );
    let toml = b
        .find(Kind::ConfigMap, "shop-booking-config")
        .unwrap()
        .object["data"]["config.toml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(toml.contains("failure_rate_threshold = 0.25"), "{toml}");
}

fn env_value(plan: &Plan, deployment: &str, var: &str) -> Option<serde_json::Value> {
    let env = &plan.find(Kind::Deployment, deployment).unwrap().object["spec"]["template"]["spec"]
        ["containers"][0]["env"];
    env.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == var)
        .map(|e| e.get("value").or(e.get("valueFrom")).unwrap().clone())
}

/// The NetworkPolicy rules of `direction` (`ingress`/`egress`) of `policy`
/// that name pods of `role` as peers, by port.
fn peer_ports(plan: &Plan, policy: &str, direction: &str, role: &str) -> Vec<i64> {
    let peers = if direction == "ingress" { "from" } else { "to" };
    plan.find(Kind::NetworkPolicy, policy).unwrap().object["spec"][direction]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r[peers].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["podSelector"]["matchLabels"]["berth.dev/role"] == role)
            })
        })
        .flat_map(|r| r["ports"].as_array().unwrap().clone())
        .map(|p| p["port"].as_i64().unwrap())
        .collect()
}

#[test]
fn payment_settles_bookings_over_grpc_with_stripe() {
    let p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    let observed = Observed {
        deployed: deployed("2.3.1"),
        migration_job: None,
    };
    let plan = build::plan(&p, &no_specs(), &observed);
    assert_eq!(
        env_value(&plan, "clinic-payment", "BERTH_SERVICE__BOOKING_GRPC"),
        Some("http://clinic-booking.shop-ns.svc:9090".into())
    );
    assert_eq!(
        env_value(&plan, "clinic-payment", "BERTH_SERVICE__STRIPE__API_KEY"),
        Some(serde_json::json!({"secretKeyRef": {"name": "clinic-stripe", "key": "api-key"}}))
    );
    // Booking admits payment's gRPC calls; payment may make them.
    assert_eq!(
        peer_ports(&plan, "clinic-booking", "ingress", "payment"),
        [9090]
    );
    assert_eq!(
        peer_ports(&plan, "clinic-payment", "egress", "booking"),
        [9090]
    );
    // Nobody else gets the new peer.
    for c in ["user", "availability", "notification"] {
        let np = format!("clinic-{c}");
        assert!(
            peer_ports(&plan, &np, "ingress", "payment").is_empty(),
            "{c}"
        );
        assert!(
            peer_ports(&plan, &np, "egress", "booking").is_empty(),
            "{c}"
        );
    }
    assert!(env_value(&plan, "clinic-booking", "BERTH_SERVICE__BOOKING_GRPC").is_none());
}

#[test]
fn payments_off_open_no_path_to_booking_and_no_stripe_secret() {
    // `none` with the Stripe block still in place (as when switching off).
    let mut p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    p.spec.payments.as_mut().unwrap().provider = PaymentProvider::None;
    let minimal: BookingPlatform = load("minimal/bookingplatform.yaml", "BookingPlatform");
    for (p, name) in [(&p, "clinic"), (&minimal, "shop")] {
        let observed = Observed {
            deployed: deployed(&p.spec.image.version),
            migration_job: None,
        };
        let plan = build::plan(p, &no_specs(), &observed);
        let payment = format!("{name}-payment");
        let booking = format!("{name}-booking");
        assert_eq!(
            env_value(&plan, &payment, "BERTH_SERVICE__PAYMENTS__PROVIDER"),
            Some("none".into())
        );
        for var in [
            "BERTH_SERVICE__BOOKING_GRPC",
            "BERTH_SERVICE__STRIPE__API_KEY",
            "BERTH_SERVICE__STRIPE__WEBHOOK_SECRET",
        ] {
            assert!(env_value(&plan, &payment, var).is_none(), "{name}: {var}");
        }
        assert!(peer_ports(&plan, &booking, "ingress", "payment").is_empty());
        assert!(peer_ports(&plan, &payment, "egress", "booking").is_empty());
    }
}

#[test]
fn payment_dependencies_reach_its_config() {
    let p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    let s: ServiceSpec = load("payment-stripe.yaml", "ServiceSpec");
    let plan = build::plan(
        &p,
        &BTreeMap::from([(Component::Payment, &s)]),
        &Observed::default(),
    );
    let toml: toml::Table = plan
        .find(Kind::ConfigMap, "clinic-payment-config")
        .unwrap()
        .object["data"]["config.toml"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let deps = &toml["dependencies"];
    assert_eq!(deps["stripe"]["timeout"].as_str(), Some("10s"));
    assert_eq!(
        deps["stripe"]["retry"]["max_attempts"].as_integer(),
        Some(3)
    );
    assert_eq!(
        deps["stripe"]["breaker"]["open_duration"].as_str(),
        Some("15s")
    );
    assert_eq!(deps["booking"]["timeout"].as_str(), Some("2s"));
    // The platform defaults still apply next to them.
    assert_eq!(deps["availability"]["timeout"].as_str(), Some("2s"));
}

#[test]
fn every_child_is_owned_labelled_and_hashed() {
    let p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    let observed = Observed {
        deployed: deployed("2.3.1"),
        migration_job: Some(JobState::Succeeded),
    };
    let plan = build::plan(&p, &no_specs(), &observed);
    for c in &plan.objects {
        let meta = &c.object["metadata"];
        assert_eq!(
            meta["ownerReferences"][0]["kind"], "BookingPlatform",
            "{}",
            c.name
        );
        assert_eq!(meta["ownerReferences"][0]["controller"], true);
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"],
            "berth-operator"
        );
        assert_eq!(
            meta["annotations"]["berth.dev/applied-hash"],
            c.hash.as_str()
        );
    }
}

#[test]
fn deployments_follow_restricted_pod_security_and_drain_timing() {
    let p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    let observed = Observed {
        deployed: deployed("2.3.1"),
        migration_job: None,
    };
    let plan = build::plan(&p, &no_specs(), &observed);
    for c in Component::ALL {
        let d = &plan
            .find(Kind::Deployment, &format!("clinic-{c}"))
            .unwrap()
            .object;
        let pod = &d["spec"]["template"]["spec"];
        let ctr = &pod["containers"][0];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(ctr["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(ctr["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(ctr["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(ctr["livenessProbe"]["httpGet"]["path"], "/livez");
        // delay 5s + drain 25s + 5s margin
        assert_eq!(pod["terminationGracePeriodSeconds"], 35);
        assert_eq!(ctr["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    }
}

#[test]
fn ingress_routes_public_paths() {
    let p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    let plan = build::plan(&p, &no_specs(), &Observed::default());
    let ing = &plan.find(Kind::Ingress, "clinic").unwrap().object;
    let paths = ing["spec"]["rules"][0]["http"]["paths"].as_array().unwrap();
    let route = |path: &str| {
        paths.iter().find(|p| p["path"] == path).map(|p| {
            p["backend"]["service"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
    };
    assert_eq!(route("/v1/bookings").as_deref(), Some("clinic-booking"));
    assert_eq!(
        route("/v1/calendars").as_deref(),
        Some("clinic-availability")
    );
    assert_eq!(route("/.well-known").as_deref(), Some("clinic-user"));
    assert_eq!(
        route("/v1/webhooks/stripe").as_deref(),
        Some("clinic-payment")
    );
    assert_eq!(
        route("/v1/notifications").as_deref(),
        Some("clinic-notification")
    );
    assert_eq!(ing["spec"]["tls"][0]["secretName"], "clinic-tls");
}

#[test]
fn oldest_service_spec_wins_a_conflict() {
    let mut a: ServiceSpec = load("booking-autoscaling.yaml", "ServiceSpec");
    let mut b = a.clone();
    a.metadata.name = Some("a".into());
    b.metadata.name = Some("b".into());
    let (chosen, conflicts) = build::select_service_specs([&b, &a]);
    assert_eq!(
        chosen[&Component::Booking].metadata.name.as_deref(),
        Some("a")
    );
    assert_eq!(conflicts.len(), 1);
    assert!(
        conflicts[0]
            .1
            .contains("already configured by ServiceSpec a")
    );
}

#[test]
fn messaging_settings_reach_only_the_services_that_send() {
    let p: BookingPlatform = load("full/bookingplatform.yaml", "BookingPlatform");
    let observed = Observed {
        deployed: deployed("2.3.1"),
        migration_job: Some(JobState::Succeeded),
    };
    let plan = build::plan(&p, &no_specs(), &observed);
    for c in Component::ALL {
        let d = plan.find(Kind::Deployment, &format!("clinic-{c}")).unwrap();
        let env = d.object["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        let named = |name: &str| env.iter().find(|e| e["name"] == name);
        let sends = matches!(c, Component::User | Component::Notification);
        assert_eq!(
            named("BERTH_SERVICE__SMTP__HOST").map(|e| e["value"].clone()),
            sends.then(|| "smtp.example.com".into()),
            "{c}"
        );
        assert_eq!(named("BERTH_SERVICE__SMS__FROM").is_some(), sends, "{c}");
        let pod = &d.object["spec"]["template"]["spec"];
        let templates = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "templates");
        assert_eq!(
            templates.map(|v| v["configMap"]["name"].clone()),
            (c == Component::Notification).then(|| "clinic-templates".into()),
            "{c}"
        );
        assert_eq!(
            named("BERTH_SERVICE__TEMPLATES__DIR").map(|e| e["value"].clone()),
            (c == Component::Notification).then(|| "/etc/berth-templates".into()),
            "{c}"
        );
        if sends {
            // Credentials only by reference: the operator never reads them.
            for (name, secret, key) in [
                ("BERTH_SERVICE__SMTP__PASSWORD", "clinic-smtp", "password"),
                (
                    "BERTH_SERVICE__SMS__AUTH_TOKEN",
                    "clinic-twilio",
                    "auth-token",
                ),
            ] {
                let e = named(name).unwrap();
                assert!(e.get("value").is_none(), "{name}");
                let r = &e["valueFrom"]["secretKeyRef"];
                assert_eq!(
                    (r["name"].as_str(), r["key"].as_str()),
                    (Some(secret), Some(key))
                );
            }
        }
    }
}
