//! The web Host Client: its built assets from `--ui-dir`, or a page that
//! says how to reach the API when the UI is not there.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/{*path}", get(asset))
}

async fn index(State(s): State<AppState>) -> Response {
    serve(&s, "index.html").await
}

async fn asset(
    State(s): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    // An unknown API path is an API error, not the UI's page.
    if path == "api" || path.starts_with("api/") {
        return crate::ApiError::not_found("No such API endpoint").into_response();
    }
    serve(&s, &path).await
}

async fn serve(s: &AppState, path: &str) -> Response {
    let Some(dir) = &s.ui_dir else {
        return not_built();
    };
    // Only plain relative names: no `..`, no hidden files, no absolute paths.
    let clean = path
        .split('/')
        .all(|c| !c.is_empty() && !c.starts_with('.') && !c.contains('\\'));
    if !clean {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    }
    let file = dir.join(path);
    let file = if file.is_file() {
        file
    } else {
        dir.join("index.html")
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => ([(CONTENT_TYPE, content_type(&file))], bytes).into_response(),
        Err(_) => not_built(),
    }
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn not_built() -> Response {
    Html(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Keel host</title></head>\
         <body><h1>Keel host</h1><p>The web Host Client is not installed on this host \
         (start keeld with <code>--ui-dir DIR</code>).</p><p>The REST API is at \
         <a href=\"/api/v1/openapi.json\"><code>/api/v1</code></a>; the <code>keel</code> CLI \
         manages this host too.</p></body></html>",
    )
    .into_response()
}
