//! The routes, one file per area of the API.

pub(crate) mod console;
pub(crate) mod datastores;
pub(crate) mod host;
pub(crate) mod network;
pub(crate) mod tasks;
mod ui;
pub(crate) mod users;
pub(crate) mod vms;

use axum::routing::{get, post, put};
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

pub fn router() -> Router<AppState> {
    let api = Router::new()
        .route("/host", get(host::info))
        .route("/openapi.json", get(host::openapi))
        .route(
            "/session",
            post(users::login).get(users::whoami).delete(users::logout),
        )
        .route("/vms", get(vms::list).post(vms::create))
        .route("/vms/register", post(vms::register))
        .route(
            "/vms/{name}",
            get(vms::show).patch(vms::edit).delete(vms::delete),
        )
        .route("/vms/{name}/power/{op}", post(vms::power))
        .route("/vms/{name}/clone", post(vms::clone))
        .route("/vms/{name}/unregister", post(vms::unregister))
        .route("/vms/{name}/log", get(vms::log))
        .route("/vms/{name}/events", get(vms::events))
        .route("/vms/{name}/console", get(console::console))
        .route(
            "/vms/{name}/nics",
            get(network::nics).post(network::nic_add),
        )
        .route(
            "/vms/{name}/nics/{index}",
            axum::routing::patch(network::nic_edit).delete(network::nic_remove),
        )
        .route(
            "/network/switches",
            get(network::switches).post(network::switch_create),
        )
        .route(
            "/network/switches/{name}",
            get(network::switch_show)
                .patch(network::switch_edit)
                .delete(network::switch_delete),
        )
        .route(
            "/network/portgroups",
            get(network::portgroups).post(network::portgroup_create),
        )
        .route(
            "/network/portgroups/{name}",
            get(network::portgroup_show)
                .patch(network::portgroup_edit)
                .delete(network::portgroup_delete),
        )
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::show))
        .route("/events", get(tasks::events))
        .route("/datastores", get(datastores::list))
        .route("/datastores/{name}/browse", get(datastores::browse))
        .route("/datastores/{name}/mkdir", post(datastores::mkdir))
        .route(
            "/datastores/{name}/files/{*path}",
            get(datastores::download)
                .put(datastores::upload)
                .delete(datastores::remove),
        )
        .route("/roles", get(users::roles))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{name}", axum::routing::delete(users::delete))
        .route("/users/{name}/password", put(users::set_password))
        .route(
            "/permissions",
            get(users::permissions)
                .put(users::permission_set)
                .delete(users::permission_remove),
        )
        .fallback(|| async { ApiError::not_found("No such API endpoint") });
    Router::new()
        .nest(hostd_api::API_PREFIX, api)
        .route("/metrics", get(host::metrics))
        .merge(ui::router())
}
