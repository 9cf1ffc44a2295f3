//! The REST layer without sockets: requests through `Router::oneshot`
//! against a real `Host` on a temporary state directory (no VM runs).

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine;
use hostd_core::{Host, HostOptions};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{router, AppState};

const PW: &str = "oneshot-admin-pw";

struct TestHost {
    app: Router,
    dir: std::path::PathBuf,
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn host(name: &str) -> TestHost {
    let dir = std::env::temp_dir().join(format!("keeld-oneshot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opened = Host::open(HostOptions {
        state_dir: dir.clone(),
        keel_vmm: "/bin/false".into(),
        admin_password: Some(PW.into()),
        vm_network_subnet: None,
        host_network: false,
    })
    .expect("open the host");
    let app = router(AppState {
        host: opened.host,
        ui_dir: None,
    });
    TestHost { app, dir }
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

async fn call(
    t: &TestHost,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<String>,
) -> (StatusCode, Value, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = t.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, text)
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(!msg.is_empty() && !msg.contains('\n'), "one line: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_sessions_and_missing_credentials() {
    let t = host("login");
    let (s, v, _) = call(&t, "GET", "/api/v1/vms", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let body = json!({"user": "admin", "password": "nope"}).to_string();
    let (s, v, _) = call(&t, "POST", "/api/v1/session", None, Some(body)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let body = json!({"user": "admin", "password": PW}).to_string();
    let (s, v, _) = call(&t, "POST", "/api/v1/session", None, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = format!("Bearer {}", v["token"].as_str().unwrap());
    let (s, v, _) = call(&t, "GET", "/api/v1/session", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["user"], "admin");
    let (s, v, _) = call(&t, "GET", "/api/v1/vms", Some(&token), None).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    // Logging out ends the token.
    let (s, _, _) = call(&t, "DELETE", "/api/v1/session", Some(&token), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(&t, "GET", "/api/v1/vms", Some(&token), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Garbage credentials.
    for auth in [
        "Bearer nonsense",
        "Basic !!!",
        "Digest x",
        &basic("admin", "bad"),
    ] {
        let (s, v, _) = call(&t, "GET", "/api/v1/vms", Some(auth), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth}");
        assert_error(&v, "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_the_error_shape() {
    let t = host("malformed");
    let admin = basic("admin", PW);
    let cases = [
        ("{", StatusCode::BAD_REQUEST, "bad-request"),
        ("[1,2]", StatusCode::UNPROCESSABLE_ENTITY, "bad-request"),
        (
            r#"{"name":"x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-request",
        ),
        (
            r#"{"name":"x","boot":{"kernel":"/k"},"extra":1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-request",
        ),
        (
            r#"{"name":"x","vcpus":"two","boot":{"kernel":"/k"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-request",
        ),
    ];
    for (body, status, code) in cases {
        let (s, v, _) = call(&t, "POST", "/api/v1/vms", Some(&admin), Some(body.into())).await;
        assert_eq!(s, status, "{body}: {v}");
        assert_error(&v, code);
    }
    // Without a JSON content type.
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/vms")
        .header(header::AUTHORIZATION, &admin)
        .body(Body::from("{}"))
        .unwrap();
    let resp = t.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Too big.
    let big = json!({"name": "x".repeat(crate::MAX_JSON_BODY), "boot": {"kernel": "/k"}});
    let (s, v, _) = call(
        &t,
        "POST",
        "/api/v1/vms",
        Some(&admin),
        Some(big.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&v, "too-large");
    // Names the core refuses.
    let bad = json!({"name": "../etc", "boot": {"kernel": "/bin/true"}});
    let (s, v, _) = call(
        &t,
        "POST",
        "/api/v1/vms",
        Some(&admin),
        Some(bad.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad-request");
    // Unknown paths, operations and query parameters.
    let (s, v, _) = call(&t, "GET", "/api/v1/nope", Some(&admin), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not-found");
    let (s, v, _) = call(&t, "POST", "/api/v1/vms/x/power/fly", Some(&admin), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad-request");
    let (s, v, _) = call(&t, "GET", "/api/v1/tasks?limit=0", Some(&admin), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad-request");
    let (s, v, _) = call(&t, "GET", "/api/v1/tasks?colour=red", Some(&admin), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad-request");
    let (s, v, _) = call(&t, "GET", "/api/v1/tasks/notanumber", Some(&admin), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad-request");
    let (s, v, _) = call(&t, "GET", "/api/v1/vms/ghost", Some(&admin), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not-found");
}

#[tokio::test(flavor = "multi_thread")]
async fn forbidden_actions_name_the_privilege() {
    let t = host("forbidden");
    let admin = basic("admin", PW);
    let user = json!({"name": "viewer", "password": "viewer-pw-1"}).to_string();
    let (s, _, _) = call(&t, "POST", "/api/v1/users", Some(&admin), Some(user)).await;
    assert_eq!(s, StatusCode::CREATED);
    let perm = json!({"user": "viewer", "role": "ReadOnly", "entity": "host"}).to_string();
    let (s, _, _) = call(&t, "PUT", "/api/v1/permissions", Some(&admin), Some(perm)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let viewer = basic("viewer", "viewer-pw-1");
    let (s, _, _) = call(&t, "GET", "/api/v1/vms", Some(&viewer), None).await;
    assert_eq!(s, StatusCode::OK);
    let body = json!({"name": "x", "boot": {"kernel": "/bin/true"}}).to_string();
    let (s, v, _) = call(&t, "POST", "/api/v1/vms", Some(&viewer), Some(body)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, "forbidden");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("VirtualMachine.Config"),
        "{v}"
    );
    let (s, v, _) = call(&t, "GET", "/api/v1/users", Some(&viewer), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Authorization.ModifyPermissions"));
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_pages_and_metrics() {
    let t = host("docs");
    let (s, v, _) = call(&t, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["paths"]["/api/v1/vms/{name}/power/{op}"]["post"].is_object(),
        "{v}"
    );
    let (s, _, text) = call(&t, "GET", "/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("not installed"), "{text}");
    let (s, _, _) = call(&t, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, text) = call(&t, "GET", "/metrics", Some(&basic("admin", PW)), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("# TYPE keel_"), "{text}");
    assert!(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .all(|l| l.starts_with("keel_")));
}

#[tokio::test(flavor = "multi_thread")]
async fn network_routes_and_their_refusals() {
    let t = host("network");
    let admin = basic("admin", PW);
    let a = Some(admin.as_str());
    let (s, v, _) = call(&t, "GET", "/api/v1/network/switches", a, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v[0]["name"], "vSwitch0");
    assert_eq!(v[0]["port_groups"], json!(["VM Network"]));
    let (s, v, _) = call(
        &t,
        "GET",
        "/api/v1/network/portgroups/VM%20Network",
        a,
        None,
    )
    .await;
    assert_eq!((s, v["vlan"].clone()), (StatusCode::OK, json!(0)), "{v}");
    let cases = [
        (
            "/api/v1/network/switches",
            json!({"name": "vSwitch0"}),
            StatusCode::CONFLICT,
        ),
        (
            "/api/v1/network/switches",
            json!({"name": "s1", "mtu": 65536}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/network/switches",
            json!({"name": "s1", "nat": {"subnet": "10.0.0.0/33"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/network/portgroups",
            json!({"name": "p", "switch": "vSwitch0", "vlan": 4095}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/network/portgroups",
            json!({"name": "p", "switch": "nope"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/network/portgroups",
            json!({"name": "VM Network", "switch": "vSwitch0"}),
            StatusCode::CONFLICT,
        ),
    ];
    for (uri, body, want) in cases {
        let (s, v, _) = call(&t, "POST", uri, a, Some(body.to_string())).await;
        assert_eq!(s, want, "{uri} {body}: {v}");
        assert!(v["error"]["message"].as_str().is_some(), "{v}");
    }
    let body = json!({"name": "p10", "switch": "vSwitch0", "vlan": 10}).to_string();
    let (s, v, _) = call(&t, "POST", "/api/v1/network/portgroups", a, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v, _) = call(&t, "DELETE", "/api/v1/network/switches/vSwitch0", a, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _, _) = call(&t, "DELETE", "/api/v1/network/portgroups/p10", a, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v, _) = call(&t, "GET", "/api/v1/vms/none/nics", a, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v, _) = call(&t, "PATCH", "/api/v1/vms/none/nics/x", a, Some("{}".into())).await;
    assert!(s.is_client_error(), "{s} {v}");
}
