//! Virtual switches, port groups and VM network adapters.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostd_api::{
    ErrorBody, NicCreate, NicEdit, NicInfo, PortGroup, PortGroupCreate, PortGroupEdit, Switch,
    SwitchCreate, SwitchEdit,
};

use crate::extract::{Auth, JsonBody, P};
use crate::{blocking, ApiResult, AppState};

#[utoipa::path(get, path = "/api/v1/network/switches", tag = "network",
    responses((status = 200, body = [Switch]), (status = 401, body = ErrorBody)))]
pub async fn switches(
    State(s): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<Vec<Switch>>> {
    let host = s.host.clone();
    Ok(Json(blocking(move || host.switch_list(&caller)).await?))
}

/// Creates a standard switch (a Linux bridge keeld owns), optionally with
/// uplinks and a NAT network with DHCP.
#[utoipa::path(post, path = "/api/v1/network/switches", tag = "network",
    request_body = SwitchCreate,
    responses((status = 201, body = Switch), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn switch_create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(req): JsonBody<SwitchCreate>,
) -> ApiResult<(StatusCode, Json<Switch>)> {
    let host = s.host.clone();
    let sw = blocking(move || host.switch_create(&caller, req)).await?;
    Ok((StatusCode::CREATED, Json(sw)))
}

#[utoipa::path(get, path = "/api/v1/network/switches/{name}", tag = "network",
    params(("name" = String, Path)),
    responses((status = 200, body = Switch), (status = 404, body = ErrorBody)))]
pub async fn switch_show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
) -> ApiResult<Json<Switch>> {
    let host = s.host.clone();
    Ok(Json(
        blocking(move || host.switch_get(&caller, &name)).await?,
    ))
}

/// Changes a switch's MTU or uplinks, at once.
#[utoipa::path(patch, path = "/api/v1/network/switches/{name}", tag = "network",
    params(("name" = String, Path)), request_body = SwitchEdit,
    responses((status = 200, body = Switch), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn switch_edit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    JsonBody(edit): JsonBody<SwitchEdit>,
) -> ApiResult<Json<Switch>> {
    let host = s.host.clone();
    Ok(Json(
        blocking(move || host.switch_edit(&caller, &name, edit)).await?,
    ))
}

/// Deletes a switch that has no port groups.
#[utoipa::path(delete, path = "/api/v1/network/switches/{name}", tag = "network",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn switch_delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.switch_delete(&caller, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/network/portgroups", tag = "network",
    responses((status = 200, body = [PortGroup]), (status = 401, body = ErrorBody)))]
pub async fn portgroups(
    State(s): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<Vec<PortGroup>>> {
    let host = s.host.clone();
    Ok(Json(blocking(move || host.portgroup_list(&caller)).await?))
}

#[utoipa::path(post, path = "/api/v1/network/portgroups", tag = "network",
    request_body = PortGroupCreate,
    responses((status = 201, body = PortGroup), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn portgroup_create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(req): JsonBody<PortGroupCreate>,
) -> ApiResult<(StatusCode, Json<PortGroup>)> {
    let host = s.host.clone();
    let pg = blocking(move || host.portgroup_create(&caller, req)).await?;
    Ok((StatusCode::CREATED, Json(pg)))
}

#[utoipa::path(get, path = "/api/v1/network/portgroups/{name}", tag = "network",
    params(("name" = String, Path)),
    responses((status = 200, body = PortGroup), (status = 404, body = ErrorBody)))]
pub async fn portgroup_show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
) -> ApiResult<Json<PortGroup>> {
    let host = s.host.clone();
    Ok(Json(
        blocking(move || host.portgroup_get(&caller, &name)).await?,
    ))
}

/// Changes a port group: the VLAN at once (also for running VMs), the
/// policy at each VM's next power-on.
#[utoipa::path(patch, path = "/api/v1/network/portgroups/{name}", tag = "network",
    params(("name" = String, Path)), request_body = PortGroupEdit,
    responses((status = 200, body = PortGroup), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn portgroup_edit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    JsonBody(edit): JsonBody<PortGroupEdit>,
) -> ApiResult<Json<PortGroup>> {
    let host = s.host.clone();
    Ok(Json(
        blocking(move || host.portgroup_edit(&caller, &name, edit)).await?,
    ))
}

/// Deletes a port group no VM uses (409 names the VMs that do).
#[utoipa::path(delete, path = "/api/v1/network/portgroups/{name}", tag = "network",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn portgroup_delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.portgroup_delete(&caller, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/vms/{name}/nics", tag = "network",
    params(("name" = String, Path)),
    responses((status = 200, body = [NicInfo]), (status = 404, body = ErrorBody)))]
pub async fn nics(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
) -> ApiResult<Json<Vec<NicInfo>>> {
    let host = s.host.clone();
    Ok(Json(blocking(move || host.vm_nics(&caller, &name)).await?))
}

/// Adds a network adapter to a powered-off VM.
#[utoipa::path(post, path = "/api/v1/vms/{name}/nics", tag = "network",
    params(("name" = String, Path)), request_body = NicCreate,
    responses((status = 201, body = NicInfo), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn nic_add(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    JsonBody(req): JsonBody<NicCreate>,
) -> ApiResult<(StatusCode, Json<NicInfo>)> {
    let host = s.host.clone();
    let nic = blocking(move || host.vm_nic_add(&caller, &name, req)).await?;
    Ok((StatusCode::CREATED, Json(nic)))
}

/// Connects or disconnects a network adapter, moves it to another port
/// group (both also while the VM runs) or changes its MAC (VM off).
#[utoipa::path(patch, path = "/api/v1/vms/{name}/nics/{index}", tag = "network",
    params(("name" = String, Path), ("index" = u32, Path)), request_body = NicEdit,
    responses((status = 200, body = NicInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn nic_edit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P((name, index)): P<(String, u32)>,
    JsonBody(edit): JsonBody<NicEdit>,
) -> ApiResult<Json<NicInfo>> {
    let host = s.host.clone();
    Ok(Json(
        blocking(move || host.vm_nic_edit(&caller, &name, index, edit)).await?,
    ))
}

/// Removes a network adapter of a powered-off VM.
#[utoipa::path(delete, path = "/api/v1/vms/{name}/nics/{index}", tag = "network",
    params(("name" = String, Path), ("index" = u32, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn nic_remove(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P((name, index)): P<(String, u32)>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.vm_nic_remove(&caller, &name, index)).await?;
    Ok(StatusCode::NO_CONTENT)
}
