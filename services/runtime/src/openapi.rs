//! What every service's OpenAPI document shares: the bearer-token scheme,
//! the problem+json error body, and the document's title and version.
//!
//! Each service builds its routes with `utoipa_axum::router::OpenApiRouter`,
//! so the document is collected from the handlers that are actually routed.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, InfoBuilder, OpenApi};

/// Name of the security scheme handlers refer to: `security(("bearer" = []))`.
pub const BEARER: &str = "bearer";

/// `api` with its title, the service's version and the shared components.
pub fn finish(mut api: OpenApi, title: &str) -> OpenApi {
    api.info = InfoBuilder::new()
        .title(title)
        .version(env!("CARGO_PKG_VERSION"))
        .build();
    let components = api.components.get_or_insert_with(Components::new);
    // Operations refer to it by name; the router collects only schemas.
    let (name, problem) = <ProblemResponse as utoipa::ToResponse>::response();
    components.responses.insert(name.to_owned(), problem);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "Access token from POST /v1/auth/login (or signup, refresh, phone or OIDC login)",
                ))
                .build(),
        ),
    );
    api
}

/// Merges service documents into one (as `berth dev` serves them).
pub fn merged(title: &str, parts: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut all = OpenApi::default();
    for part in parts {
        all.merge(part);
    }
    finish(all, title)
}

/// An error answer: RFC 9457 problem details.
#[derive(utoipa::ToResponse)]
#[response(
    description = "RFC 9457 problem details: `type`, `title`, `status`, `detail`",
    content_type = "application/problem+json"
)]
pub struct ProblemResponse(#[to_schema] pub crate::problem::Problem);

/// What is wrong with a service's document, for its tests: every `$ref`
/// resolves, every `{param}` in a path is declared, every operation has a
/// unique operationId and a success answer, every answer a description,
/// every error answer is problem+json, and an operation that needs a token
/// documents its 401.
pub fn defects(api: &OpenApi) -> Vec<String> {
    let doc = match serde_json::to_value(api) {
        Ok(doc) => doc,
        Err(e) => return vec![format!("document does not serialise: {e}")],
    };
    let mut found = Vec::new();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in refs {
        let resolves = r.strip_prefix("#/").is_some_and(|pointer| {
            // JSON pointer: `/`-separated keys from the document's root.
            doc.pointer(&format!("/{pointer}")).is_some()
        });
        if !resolves {
            found.push(format!("unresolved $ref {r}"));
        }
    }
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    if paths.is_empty() {
        found.push("no paths".to_owned());
    }
    let mut operation_ids = std::collections::HashSet::new();
    for (path, item) in &paths {
        let wanted: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().into_iter().flatten() {
            let at = format!("{} {path}", method.to_uppercase());
            // Client generators name methods after these.
            match op["operationId"].as_str() {
                Some(id) if !operation_ids.insert(id.to_owned()) => {
                    found.push(format!("{at}: operationId {id} is not unique"));
                }
                Some(_) => {}
                None => found.push(format!("{at}: no operationId")),
            }
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            for name in &wanted {
                if !declared.contains(name) {
                    found.push(format!("{at}: path parameter {{{name}}} not declared"));
                }
            }
            let responses = op["responses"].as_object().cloned().unwrap_or_default();
            if !responses
                .keys()
                .any(|s| s.starts_with('2') || s.starts_with('3'))
            {
                found.push(format!("{at}: no success answer"));
            }
            for (status, answer) in &responses {
                if answer.get("$ref").is_none() && answer.get("description").is_none() {
                    // Required by OpenAPI: generators and validators reject it.
                    found.push(format!("{at}: {status} has no description"));
                }
                let problem = answer["$ref"] == "#/components/responses/ProblemResponse"
                    || answer["content"]
                        .get(crate::problem::PROBLEM_JSON)
                        .is_some();
                if (status.starts_with('4') || status.starts_with('5')) && !problem {
                    found.push(format!("{at}: {status} is not problem+json"));
                }
            }
            if op.get("security").is_some() && !responses.contains_key("401") {
                found.push(format!("{at}: needs a token but documents no 401"));
            }
        }
    }
    found
}

/// Every operation as `METHOD /path`, sorted: what a test compares with the
/// routes it expects.
pub fn operations(api: &OpenApi) -> Vec<String> {
    let doc = serde_json::to_value(api).unwrap_or_default();
    let mut found: Vec<String> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(method, _)| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    found.sort();
    found
}

fn collect_refs(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                into.push(r.clone());
            }
            map.values().for_each(|v| collect_refs(v, into));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}
