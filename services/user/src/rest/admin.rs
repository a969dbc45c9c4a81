//! Administration: role assignment.

use axum::extract::State;
use berth_runtime::auth::Principal;
use berth_runtime::{Json, Path, Problem};
use http::StatusCode;
use serde::Deserialize;

use crate::error::ApiResult;
use crate::{ROLES, Users};

#[derive(Deserialize)]
pub(super) struct RolesRequest {
    roles: Vec<String>,
}

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
