//! Administration: role assignment.

use axum::extract::State;
use berth_runtime::auth::Principal;
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Path, Problem};
use http::StatusCode;
use serde::Deserialize;

use crate::error::ApiResult;
use crate::{ROLES, Users};

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct RolesRequest {
    /// The complete new set: any of `customer`, `staff`, `admin`.
    roles: Vec<String>,
}

/// Replaces an account's roles. Needs the `admin` role.
#[utoipa::path(
    put,
    operation_id = "putRoles",
    path = "/v1/users/{id}/roles",
    tag = "users",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    request_body = RolesRequest,
    responses(
        (status = 204, description = "Roles replaced"),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
    )
)]
pub(super) async fn put_roles(
    State(users): State<Users>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<RolesRequest>,
) -> ApiResult<StatusCode> {
    principal.require_role("admin")?;
    let mut roles: Vec<String> = Vec::new();
    for role in body.roles {
        if !ROLES.contains(&role.as_str()) {
            return Err(Problem::validation(format!("unknown role `{role}`")).into());
        }
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if !users.inner.store.set_roles(&id, &roles).await? {
        return Err(Problem::not_found("no such account").into());
    }
    tracing::info!(account = %id, by = %principal.subject, ?roles, "roles changed");
    Ok(StatusCode::NO_CONTENT)
}
