//! Sessions, users, roles and permissions.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hostd_api::{
    ErrorBody, Login, PasswordChange, Permission, Privilege, RoleInfo, Session, User, UserCreate,
};
use serde::{Deserialize, Serialize};

use crate::extract::{Auth, JsonBody, PeerIp, P, Q};
use crate::{blocking, ApiResult, AppState};

/// Logs in: the answer's token goes into `Authorization: Bearer TOKEN`.
/// Repeated failures are rate limited (429).
#[utoipa::path(post, path = "/api/v1/session", tag = "users", request_body = Login,
    responses((status = 201, body = Session), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn login(
    State(s): State<AppState>,
    PeerIp(ip): PeerIp,
    JsonBody(req): JsonBody<Login>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    let host = s.host.clone();
    let session = blocking(move || host.login(&req.user, &req.password, ip)).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// Who the caller is and what it may do on the host.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub user: String,
    pub host_privileges: Vec<Privilege>,
}

#[utoipa::path(get, path = "/api/v1/session", tag = "users",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<WhoAmI>> {
    let host = s.host.clone();
    let user = caller.user.clone();
    let host_privileges = blocking(move || host.session_info(&caller)).await?;
    Ok(Json(WhoAmI {
        user,
        host_privileges,
    }))
}

/// Ends the session of the bearer token.
#[utoipa::path(delete, path = "/api/v1/session", tag = "users", responses((status = 204)))]
pub async fn logout(
    State(s): State<AppState>,
    Auth(_caller): Auth,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    if let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        let host = s.host.clone();
        let token = token.trim().to_string();
        blocking(move || {
            host.logout(&token);
            Ok(())
        })
        .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The roles and their privileges.
#[utoipa::path(get, path = "/api/v1/roles", tag = "users",
    responses((status = 200, body = [RoleInfo])))]
pub async fn roles(State(s): State<AppState>, Auth(_caller): Auth) -> Json<Vec<RoleInfo>> {
    Json(s.host.roles())
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = [User]), (status = 403, body = ErrorBody)))]
pub async fn list(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Vec<User>>> {
    let host = s.host.clone();
    Ok(Json(blocking(move || host.user_list(&caller)).await?))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = UserCreate,
    responses((status = 201, body = User), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(req): JsonBody<UserCreate>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let host = s.host.clone();
    let user = blocking(move || host.user_create(&caller, req)).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users",
    params(("name" = String, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.user_delete(&caller, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a password: one's own, or anyone's for an administrator.
#[utoipa::path(put, path = "/api/v1/users/{name}/password", tag = "users",
    params(("name" = String, Path)), request_body = PasswordChange,
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn set_password(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    JsonBody(req): JsonBody<PasswordChange>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.user_set_password(&caller, &name, &req.password)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/permissions", tag = "users",
    responses((status = 200, body = [Permission])))]
pub async fn permissions(
    State(s): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<Vec<Permission>>> {
    let host = s.host.clone();
    Ok(Json(blocking(move || host.permission_list(&caller)).await?))
}

/// Gives a user a role on the host or on one VM (replacing the one it had
/// there).
#[utoipa::path(put, path = "/api/v1/permissions", tag = "users", request_body = Permission,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn permission_set(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(p): JsonBody<Permission>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.permission_set(&caller, p)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PermissionQuery {
    user: String,
    /// `host` or `vm:NAME`.
    entity: String,
}

#[utoipa::path(delete, path = "/api/v1/permissions", tag = "users", params(PermissionQuery),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn permission_remove(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Q(q): Q<PermissionQuery>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.permission_remove(&caller, &q.user, &q.entity)).await?;
    Ok(StatusCode::NO_CONTENT)
}
