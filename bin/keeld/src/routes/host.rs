//! The host: information, metrics and the API's own description.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use hostd_api::HostInfo;

use crate::extract::Auth;
use crate::{blocking, ApiResult, AppState};
use axum::extract::State;

/// What the host is, and whether it can run VMs.
#[utoipa::path(get, path = "/api/v1/host", tag = "host",
    responses((status = 200, body = HostInfo), (status = 401, body = hostd_api::ErrorBody)))]
pub async fn info(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<HostInfo>> {
    let host = s.host.clone();
    Ok(Json(blocking(move || host.host_info(&caller)).await?))
}

/// Prometheus metrics (`keel_*`), for a scraper with Basic credentials.
#[utoipa::path(get, path = "/metrics", tag = "host",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(
    State(s): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<impl IntoResponse> {
    let host = s.host.clone();
    let text = blocking(move || host.metrics(&caller)).await?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    ))
}

/// This document. Needs no login.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "host",
    responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], crate::openapi::json())
}
