//! keeld's HTTP layer: the REST API under `/api/v1`, the console
//! WebSockets, `/metrics`, and the web Host Client's assets, over HTTPS.
//!
//! Everything here is translation: requests become calls on
//! [`hostd_core::Host`] (which checks permissions itself and knows nothing
//! of HTTP), and its answers and errors become JSON. The core is
//! synchronous, so every call runs on tokio's blocking pool.

#![forbid(unsafe_code)]

mod error;
mod extract;
pub mod openapi;
mod routes;
#[cfg(test)]
mod tests;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use hostd_core::{CoreError, Host};

pub use error::{ApiError, ApiResult};

/// The largest JSON body keeld reads (uploads stream and are bounded by
/// the datastore's free space instead).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub host: Host,
    /// The web Host Client's built assets, when any.
    pub ui_dir: Option<PathBuf>,
}

/// The whole HTTP surface of keeld.
pub fn router(state: AppState) -> Router {
    routes::router()
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(state)
}

/// Runs a core call on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, CoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!(
            "The request's worker failed: {e}"
        ))),
    }
}

/// How long open requests (a long download, a slow upload) may take to
/// finish once keeld is asked to stop.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves `router` on `listener`, over TLS when `tls` is given, until
/// `shutdown` resolves and the open requests finished, or
/// [`SHUTDOWN_GRACE`] after that at the latest, so that a client cannot
/// hold a stopping keeld up. (Upgraded connections — console WebSockets —
/// are not waited for at all.)
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tls::TlsSetup>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    use futures_util::FutureExt;
    let shutdown = shutdown.shared();
    let deadline = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = async move {
        match tls {
            Some(tls) => {
                let listener = tls::TlsListener::new(listener, tls.acceptor()).tap_io(|_| {});
                axum::serve(listener, make)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                axum::serve(listener, make)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    };
    tokio::select! {
        r = served => r,
        () = deadline => Ok(()),
    }
}
