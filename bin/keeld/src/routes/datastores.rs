//! Datastores: capacity, browsing, upload and download.
//!
//! Uploads stream the request body into a temporary file that the core
//! renames into place only when the whole body arrived, so an interrupted
//! upload leaves nothing behind.

use std::io::{Read, Write};

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use futures_util::StreamExt;
use hostd_api::{Datastore, ErrorBody, FileEntry};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{Auth, P, Q};
use crate::{blocking, ApiResult, AppState};

#[utoipa::path(get, path = "/api/v1/datastores", tag = "datastores",
    responses((status = 200, body = [Datastore])))]
pub async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<Vec<Datastore>>> {
    let host = s.host.clone();
    Ok(Json(blocking(move || host.datastore_list(&caller)).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// A folder relative to the datastore's root; empty for the root.
    #[serde(default)]
    path: String,
}

/// The entries of a folder of a datastore.
#[utoipa::path(get, path = "/api/v1/datastores/{name}/browse", tag = "datastores",
    params(("name" = String, Path), PathQuery),
    responses((status = 200, body = [FileEntry]), (status = 400, body = ErrorBody)))]
pub async fn browse(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    Q(q): Q<PathQuery>,
) -> ApiResult<Json<Vec<FileEntry>>> {
    let host = s.host.clone();
    Ok(Json(
        blocking(move || host.datastore_browse(&caller, &name, &q.path)).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/datastores/{name}/mkdir", tag = "datastores",
    params(("name" = String, Path), PathQuery),
    responses((status = 201), (status = 409, body = ErrorBody)))]
pub async fn mkdir(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    Q(q): Q<PathQuery>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.datastore_mkdir(&caller, &name, &q.path)).await?;
    Ok(StatusCode::CREATED)
}

/// Downloads a file.
#[utoipa::path(get, path = "/api/v1/datastores/{name}/files/{path}", tag = "datastores",
    params(("name" = String, Path), ("path" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = ErrorBody)))]
pub async fn download(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P((name, path)): P<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let host = s.host.clone();
    let file_name = path.rsplit('/').next().unwrap_or("download").to_string();
    let (file, size) = blocking(move || host.datastore_open(&caller, &name, &path)).await?;
    // Read on the blocking pool in chunks, handing them to the body.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file_name.replace(['"', '\\', '\r', '\n'], "_")
    );
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, size.to_string()),
            (CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    ))
}

/// Uploads a file (the raw request body). An existing file is not
/// replaced (409); a body larger than the free space is refused (507).
#[utoipa::path(put, path = "/api/v1/datastores/{name}/files/{path}", tag = "datastores",
    params(("name" = String, Path), ("path" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201), (status = 409, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn upload(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P((name, path)): P<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let size = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let host = s.host.clone();
    let upload = match blocking(move || host.datastore_upload(&caller, &name, &path, size)).await {
        Ok(u) => u,
        Err(e) => {
            // Refused before the body was read: read (a bounded amount of)
            // it anyway, so that a client still sending gets this answer
            // instead of a broken pipe when the connection closes.
            discard(body, MAX_DISCARD).await;
            return Err(e);
        }
    };
    // The body is read here and written on the blocking pool, in order;
    // the writer commits only on `End`, so a body that breaks off (or an
    // answer sent early) drops the upload and its temporary file.
    enum Chunk {
        Data(axum::body::Bytes),
        End,
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(8);
    let writer = tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let mut upload = upload;
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(bytes) => upload.write_all(&bytes).map_err(|e| {
                    if e.raw_os_error() == Some(ENOSPC) {
                        ApiError::new(
                            StatusCode::INSUFFICIENT_STORAGE,
                            "insufficient-space",
                            "The datastore ran out of space",
                        )
                    } else {
                        ApiError::internal(format!("Cannot write the upload: {e}"))
                    }
                })?,
                Chunk::End => return upload.commit().map_err(ApiError::from),
            }
        }
        Err(ApiError::bad_request("The upload ended early"))
    });
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                received += bytes.len() as u64;
                if tx.send(Chunk::Data(bytes)).await.is_err() {
                    break; // the writer failed; its error is the answer
                }
            }
            Err(e) => {
                failure = Some(format!("The upload broke off after {received} bytes: {e}"));
                break;
            }
        }
    }
    if let Some(expected) = size {
        if failure.is_none() && expected != received {
            failure = Some(format!(
                "The upload has {received} bytes, Content-Length said {expected}"
            ));
        }
    }
    if failure.is_none() {
        let _ = tx.send(Chunk::End).await;
    }
    drop(tx);
    let written = match writer.await {
        Ok(r) => r,
        Err(e) => Err(ApiError::internal(format!(
            "The upload's writer failed: {e}"
        ))),
    };
    if let Some(message) = failure {
        return Err(ApiError::bad_request(message));
    }
    written?;
    Ok(StatusCode::CREATED)
}

/// How much of a refused upload's body keeld reads before answering.
const MAX_DISCARD: u64 = 16 << 20;

/// Reads and drops up to `max` bytes of `body`.
async fn discard(body: Body, max: u64) {
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while seen < max {
        match stream.next().await {
            Some(Ok(bytes)) => seen += bytes.len() as u64,
            _ => return,
        }
    }
}

/// ENOSPC on Linux.
const ENOSPC: i32 = 28;

/// Deletes a file or an empty folder (not the files of a registered VM).
#[utoipa::path(delete, path = "/api/v1/datastores/{name}/files/{path}", tag = "datastores",
    params(("name" = String, Path), ("path" = String, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn remove(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P((name, path)): P<(String, String)>,
) -> ApiResult<StatusCode> {
    let host = s.host.clone();
    blocking(move || host.datastore_remove(&caller, &name, &path)).await?;
    Ok(StatusCode::NO_CONTENT)
}
