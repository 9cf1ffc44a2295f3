//! The OpenAPI document of `/api/v1`, generated from the handlers'
//! annotations and the `hostd-api` types. `docs/openapi.json` holds a copy
//! that a test keeps equal to this (CI fails when it drifts).

use utoipa::OpenApi;

use crate::routes::{datastores, host, network, tasks, users, vms};

#[derive(OpenApi)]
#[openapi(
    info(title = "Keel host API", description = "keeld's REST API: VMs, datastores, networking, tasks, events, users and permissions."),
    paths(
        host::info, host::metrics, host::openapi,
        users::login, users::whoami, users::logout, users::roles, users::list, users::create,
        users::delete, users::set_password, users::permissions, users::permission_set,
        users::permission_remove,
        vms::list, vms::create, vms::show, vms::edit, vms::delete, vms::register,
        vms::unregister, vms::clone, vms::power, vms::log, vms::events,
        crate::routes::console::console,
        tasks::list, tasks::show, tasks::events,
        datastores::list, datastores::browse, datastores::mkdir, datastores::download,
        datastores::upload, datastores::remove,
        network::switches, network::switch_create, network::switch_show, network::switch_edit,
        network::switch_delete, network::portgroups, network::portgroup_create,
        network::portgroup_show, network::portgroup_edit, network::portgroup_delete,
        network::nics, network::nic_add, network::nic_edit, network::nic_remove,
    ),
    components(schemas(hostd_api::ErrorBody, hostd_api::ErrorInfo)),
    modifiers(&Security),
    security(("bearer" = []), ("basic" = [])),
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The document as pretty JSON (stable: what `docs/openapi.json` holds).
pub fn json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let want = super::json() + "\n";
        if std::env::var_os("KEEL_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/openapi.json is out of date: run KEEL_UPDATE_OPENAPI=1 cargo test -p keeld openapi"
        );
    }
}
