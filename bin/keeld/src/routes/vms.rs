//! Virtual machines: inventory, configuration and power.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostd_api::{
    ErrorBody, Event, Page, PowerOp, Task, VmClone, VmCreate, VmEdit, VmInfo, VmRegister,
};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{Auth, JsonBody, P, Q};
use crate::{blocking, ApiResult, AppState};

/// The VMs the caller may see.
#[utoipa::path(get, path = "/api/v1/vms", tag = "vms",
    responses((status = 200, body = [VmInfo]), (status = 401, body = ErrorBody)))]
pub async fn list(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Vec<VmInfo>>> {
    let host = s.host.clone();
    Ok(Json(blocking(move || host.vm_list(&caller)).await?))
}

/// Creates a VM (a task: disks and the kernel are copied in the background).
#[utoipa::path(post, path = "/api/v1/vms", tag = "vms", request_body = VmCreate,
    responses((status = 202, body = Task), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(spec): JsonBody<VmCreate>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let host = s.host.clone();
    let task = blocking(move || host.vm_create(&caller, spec)).await?;
    Ok((StatusCode::ACCEPTED, Json(task)))
}

#[utoipa::path(get, path = "/api/v1/vms/{name}", tag = "vms",
    params(("name" = String, Path)),
    responses((status = 200, body = VmInfo), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
) -> ApiResult<Json<VmInfo>> {
    let host = s.host.clone();
    Ok(Json(blocking(move || host.vm_get(&caller, &name)).await?))
}

/// Changes a VM's settings; vCPUs and memory only while it is off.
#[utoipa::path(patch, path = "/api/v1/vms/{name}", tag = "vms", request_body = VmEdit,
    params(("name" = String, Path)),
    responses((status = 200, body = VmInfo), (status = 409, body = ErrorBody)))]
pub async fn edit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    JsonBody(edit): JsonBody<VmEdit>,
) -> ApiResult<Json<VmInfo>> {
    let host = s.host.clone();
    Ok(Json(
        blocking(move || host.vm_edit(&caller, &name, edit)).await?,
    ))
}

/// Removes a powered-off VM from the inventory and deletes its folder.
#[utoipa::path(delete, path = "/api/v1/vms/{name}", tag = "vms",
    params(("name" = String, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.vm_delete(&caller, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds an existing VM folder of a datastore to the inventory.
#[utoipa::path(post, path = "/api/v1/vms/register", tag = "vms", request_body = VmRegister,
    responses((status = 201, body = VmInfo), (status = 409, body = ErrorBody)))]
pub async fn register(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(req): JsonBody<VmRegister>,
) -> ApiResult<(StatusCode, Json<VmInfo>)> {
    let host = s.host.clone();
    let vm = blocking(move || host.vm_register(&caller, req)).await?;
    Ok((StatusCode::CREATED, Json(vm)))
}

/// Removes a VM from the inventory; its folder stays.
#[utoipa::path(post, path = "/api/v1/vms/{name}/unregister", tag = "vms",
    params(("name" = String, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn unregister(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.vm_unregister(&caller, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A full copy of a powered-off VM (a task).
#[utoipa::path(post, path = "/api/v1/vms/{name}/clone", tag = "vms", request_body = VmClone,
    params(("name" = String, Path)),
    responses((status = 202, body = Task), (status = 409, body = ErrorBody)))]
pub async fn clone(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    JsonBody(req): JsonBody<VmClone>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let host = s.host.clone();
    let task = blocking(move || host.vm_clone(&caller, &name, req)).await?;
    Ok((StatusCode::ACCEPTED, Json(task)))
}

/// on, off, shutdown, reset, pause or resume (a task; wait on it for the
/// result).
#[utoipa::path(post, path = "/api/v1/vms/{name}/power/{op}", tag = "vms",
    params(("name" = String, Path), ("op" = PowerOp, Path)),
    responses((status = 202, body = Task), (status = 409, body = ErrorBody)))]
pub async fn power(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P((name, op)): P<(String, String)>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let op = PowerOp::parse(&op).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Unknown power operation '{op}': expected on, off, shutdown, reset, pause or resume"
        ))
    })?;
    let host = s.host.clone();
    let task = blocking(move || host.vm_power(&caller, &name, op)).await?;
    Ok((StatusCode::ACCEPTED, Json(task)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// At most this many bytes from the end (default 64 KiB, max 4 MiB).
    max_bytes: Option<u64>,
}

/// The tail of the VM's serial console log.
#[utoipa::path(get, path = "/api/v1/vms/{name}/log", tag = "vms",
    params(("name" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn log(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    Q(q): Q<LogQuery>,
) -> ApiResult<String> {
    let max = q.max_bytes.unwrap_or(64 * 1024).min(4 * 1024 * 1024);
    let host = s.host.clone();
    blocking(move || host.vm_log(&caller, &name, max)).await
}

/// The VM's events, newest first.
#[utoipa::path(get, path = "/api/v1/vms/{name}/events", tag = "vms",
    params(("name" = String, Path), crate::routes::tasks::PageQuery),
    responses((status = 200, body = Page<Event>)))]
pub async fn events(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    Q(q): Q<crate::routes::tasks::PageQuery>,
) -> ApiResult<Json<Page<Event>>> {
    let host = s.host.clone();
    let target = format!("vm:{name}");
    let (before, limit) = q.bounds()?;
    Ok(Json(
        blocking(move || host.event_list(&caller, before, limit, Some(&target))).await?,
    ))
}
