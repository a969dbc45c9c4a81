//! What every service's OpenAPI document shares: the bearer-token scheme,
//! the problem+json error body, the errors the runtime's extractors and
//! token verifier answer, and the document's title and version.
//!
//! Each service builds its routes with `utoipa_axum::router::OpenApiRouter`,
//! so the document is collected from the handlers that are actually routed;
//! a handler lists only the answers its own code gives.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, InfoBuilder, OpenApi, Ref, RefOr};

/// Name of the security scheme handlers refer to: `security(("bearer" = []))`.
pub const BEARER: &str = "bearer";

/// `api` with its title, the service's version, the shared components and
/// the shared errors (see [`document_shared_errors`]).
pub fn finish(mut api: OpenApi, title: &str) -> OpenApi {
    api.info = InfoBuilder::new()
        .title(title)
        .version(env!("CARGO_PKG_VERSION"))
        .build();
    let components = api.components.get_or_insert_with(Components::new);
    // Operations refer to it by name; the router collects only schemas.
    let (name, problem) = problem_response();
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
    document_shared_errors(&mut api);
    api
}

/// Adds, where a handler did not document them itself, the answers that
/// come from shared mechanisms rather than from the handler: the runtime's
/// `Path`/`Query` extractors (400), its `Json` extractor (400 malformed,
/// 413 too large, 415 not JSON, 422 wrong shape) and the token verifier
/// on operations that take a token (401).
fn document_shared_errors(api: &mut OpenApi) {
    let (name, _) = problem_response();
    for item in api.paths.paths.values_mut() {
        for op in operations_mut(item) {
            let mut statuses = Vec::new();
            if op.request_body.is_some() {
                statuses.extend(["400", "413", "415", "422"]);
            }
            let from_url = op.parameters.iter().flatten().any(|p| {
                matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query))
            });
            if from_url {
                statuses.push("400");
            }
            if op.security.is_some() {
                statuses.push("401");
            }
            for status in statuses {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
        &mut item.query,
    ]
    .into_iter()
    .flatten()
    .chain(item.additional_operations.values_mut())
}

/// Merges service documents into one (as `berth dev` serves them).
pub fn merged(title: &str, parts: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut all = OpenApi::default();
    for part in parts {
        all.merge(part);
    }
    finish(all, title)
}

/// The shared error answer's component name and definition.
fn problem_response() -> (&'static str, RefOr<utoipa::openapi::Response>) {
    let (name, response) = <ProblemResponse as utoipa::ToResponse>::response();
    (name, response)
}

/// An error answer: RFC 9457 problem details.
#[derive(utoipa::ToResponse)]
#[response(
    description = "RFC 9457 problem details: `type`, `title`, `status`, `detail`",
    content_type = "application/problem+json"
)]
pub struct ProblemResponse(#[to_schema] pub crate::problem::Problem);

/// What is wrong with a service's document, for its tests: its operations
/// (`METHOD /path`) are exactly `routes`, every `$ref` resolves, every
/// `{param}` in a path is declared, every operation has a unique
/// operationId and a success answer, every answer a description, and every
/// error answer is problem+json.
pub fn defects(api: &OpenApi, routes: &[&str]) -> Vec<String> {
    let doc = match serde_json::to_value(api) {
        Ok(doc) => doc,
        Err(e) => return vec![format!("document does not serialise: {e}")],
    };
    let mut found = Vec::new();
    let documented = operations(api);
    for route in routes {
        if !documented.iter().any(|op| op == route) {
            found.push(format!("{route} is not documented"));
        }
    }
    for op in &documented {
        if !routes.contains(&op.as_str()) {
            found.push(format!("{op} is documented but not expected"));
        }
    }
    let (problem_name, _) = problem_response();
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
        for (method, op) in methods(item) {
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
                let problem = answer["$ref"] == format!("#/components/responses/{problem_name}")
                    || answer["content"]
                        .get(crate::problem::PROBLEM_JSON)
                        .is_some();
                if (status.starts_with('4') || status.starts_with('5')) && !problem {
                    found.push(format!("{at}: {status} is not problem+json"));
                }
            }
        }
    }
    found
}

/// Every operation as `METHOD /path`, sorted.
pub fn operations(api: &OpenApi) -> Vec<String> {
    let doc = serde_json::to_value(api).unwrap_or_default();
    let mut found: Vec<String> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            methods(item).map(move |(method, _)| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    found.sort();
    found
}

/// The operations of a path item as JSON (its other keys, such as
/// `parameters` or `summary`, are not operations).
fn methods(item: &serde_json::Value) -> impl Iterator<Item = (&String, &serde_json::Value)> {
    const METHODS: [&str; 9] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace", "query",
    ];
    item.as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| METHODS.contains(&key.as_str()))
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

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    use super::*;

    #[derive(serde::Deserialize, utoipa::ToSchema)]
    #[allow(dead_code)] // only its schema is used
    struct Body {
        name: String,
    }

    #[utoipa::path(put, path = "/things/{id}", operation_id = "putThing",
        request_body = Body,
        params(("id" = String, Path, description = "Thing id")),
        security(("bearer" = [])),
        responses(
            (status = 200, description = "Stored"),
            (status = 404, response = ProblemResponse)
        )
    )]
    #[allow(dead_code)] // documents an operation; never called
    async fn put_thing() {}

    #[utoipa::path(get, path = "/things", operation_id = "listThings",
        responses((status = 200, description = "All things"))
    )]
    #[allow(dead_code)] // documents an operation; never called
    async fn list_things() {}

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(put_thing, list_things))]
    struct Things;

    fn statuses(doc: &OpenApi, path: &str, method: &str) -> Vec<String> {
        let json = serde_json::to_value(doc).unwrap();
        json["paths"][path][method]["responses"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn finish_documents_the_errors_of_shared_extractors_and_the_verifier() {
        let doc = finish(Things::openapi(), "things");
        // Body (400, 413, 415, 422), path parameter (400), token (401), and
        // the handler's own 404 kept.
        assert_eq!(
            statuses(&doc, "/things/{id}", "put"),
            ["200", "400", "401", "404", "413", "415", "422"]
        );
        // No body, no parameters, no token: nothing added.
        assert_eq!(statuses(&doc, "/things", "get"), ["200"]);
        assert!(
            defects(&doc, &["GET /things", "PUT /things/{id}"]).is_empty(),
            "{:#?}",
            defects(&doc, &["GET /things", "PUT /things/{id}"])
        );
    }

    #[test]
    fn defects_names_what_is_wrong() {
        let doc = finish(Things::openapi(), "things");
        let found = defects(&doc, &["GET /things", "DELETE /things/{id}"]);
        assert!(found.contains(&"DELETE /things/{id} is not documented".to_owned()));
        assert!(found.contains(&"PUT /things/{id} is documented but not expected".to_owned()));
        let mut broken = serde_json::to_value(&doc).unwrap();
        broken["paths"]["/things/{id}"]["put"]["parameters"] = serde_json::json!([]);
        let broken: OpenApi = serde_json::from_value(broken).unwrap();
        assert_eq!(
            defects(&broken, &["GET /things", "PUT /things/{id}"]),
            ["PUT /things/{id}: path parameter {id} not declared"]
        );
    }
}
