//! Validation before anything is applied: every referenced Secret key must
//! exist.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::{BookingPlatform, Component, ServiceSpec};
use crate::status::Problem;

/// Every secret key the platform (and its accepted ServiceSpecs) hands to
/// pods, with the field that references it.
pub(super) fn secret_refs(
    p: &BookingPlatform,
    specs: &BTreeMap<Component, &ServiceSpec>,
) -> Vec<(String, String, String)> {
    let s = &p.spec;
    let mut refs = vec![(
        s.database.secret_ref.name.clone(),
        s.database.secret_ref.key_or("url").to_string(),
        "spec.database.secretRef".to_string(),
    )];
    if let Some(ext) = &s.redis.external {
        refs.push((
            ext.secret_ref.name.clone(),
            ext.secret_ref.key_or("url").to_string(),
            "spec.redis.external.secretRef".into(),
        ));
    }
    refs.push((
        s.auth.jwt_signing_key_secret_ref.name.clone(),
        s.auth
            .jwt_signing_key_secret_ref
            .key_or("signing-key")
            .to_string(),
        "spec.auth.jwtSigningKeySecretRef".into(),
    ));
    for (i, o) in s.auth.oidc_providers.iter().enumerate() {
        for key in ["client-id", "client-secret"] {
            refs.push((
                o.secret_name.clone(),
                key.to_string(),
                format!("spec.auth.oidcProviders[{i}].secretName"),
            ));
        }
    }
    let messaging = s.messaging.as_ref();
    if let Some(name) = messaging
        .and_then(|m| m.smtp.as_ref())
        .and_then(|smtp| smtp.credentials_secret_name.as_ref())
    {
        for key in ["username", "password"] {
            refs.push((
                name.clone(),
                key.to_string(),
                "spec.messaging.smtp.credentialsSecretName".into(),
            ));
        }
    }
    if let Some(sms) = messaging.and_then(|m| m.sms.as_ref()) {
        for key in ["account-sid", "auth-token"] {
            refs.push((
                sms.credentials_secret_name.clone(),
                key.to_string(),
                "spec.messaging.sms.credentialsSecretName".into(),
            ));
        }
    }
    if let Some(stripe) = s.payments.as_ref().and_then(|p| p.stripe.as_ref())
        && s.payments.as_ref().map(|p| p.provider) == Some(crate::crd::PaymentProvider::Stripe)
    {
        refs.push((
            stripe.api_key_secret_ref.name.clone(),
            stripe.api_key_secret_ref.key_or("api-key").to_string(),
            "spec.payments.stripe.apiKeySecretRef".into(),
        ));
        refs.push((
            stripe.webhook_secret_ref.name.clone(),
            stripe
                .webhook_secret_ref
                .key_or("webhook-secret")
                .to_string(),
            "spec.payments.stripe.webhookSecretRef".into(),
        ));
    }
    for (c, spec) in specs {
        for (i, e) in spec.spec.env.iter().enumerate() {
            if let Some(r) = &e.secret_key_ref {
                refs.push((
                    r.name.clone(),
                    r.key_or(&e.name).to_string(),
                    format!(
                        "ServiceSpec {} ({c}) spec.env[{i}].secretKeyRef",
                        spec.name_any()
                    ),
                ));
            }
        }
    }
    refs
}

/// Names of every Secret a platform depends on (for the Secret → platform mapper).
pub fn referenced_secrets(p: &BookingPlatform, specs: &[Arc<ServiceSpec>]) -> Vec<String> {
    let chosen: BTreeMap<Component, &ServiceSpec> = specs
        .iter()
        .map(|s| (s.spec.component, s.as_ref()))
        .collect();
    secret_refs(p, &chosen)
        .into_iter()
        .map(|(n, _, _)| n)
        .collect()
}

pub(super) fn validate(
    p: &BookingPlatform,
    specs: &BTreeMap<Component, &ServiceSpec>,
    secrets: &Store<Secret>,
) -> Vec<Problem> {
    let ns = p.namespace().unwrap_or_default();
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, key, field) in secret_refs(p, specs) {
        if !seen.insert((name.clone(), key.clone())) {
            continue;
        }
        match secrets.get(&ObjectRef::new(&name).within(&ns)) {
            None => problems.push(Problem {
                reason: "SecretNotFound".into(),
                message: format!("secret {name} ({field}) not found in namespace {ns}"),
            }),
            Some(s) => {
                let has = s.data.as_ref().is_some_and(|d| d.contains_key(&key))
                    || s.string_data.as_ref().is_some_and(|d| d.contains_key(&key));
                if !has {
                    problems.push(Problem {
                        reason: "SecretKeyNotFound".into(),
                        message: format!("secret {name} ({field}) has no key \"{key}\""),
                    });
                }
            }
        }
    }
    problems
}
