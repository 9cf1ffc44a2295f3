//! A typed client of keeld's REST API (`/api/v1`), used by the `keel` CLI
//! and by tests. Blocking (ureq over rustls); the host's self-signed
//! certificate is pinned ([`Trust`]).

#![forbid(unsafe_code)]

mod console;
mod tls;

use std::time::Duration;

use hostd_api::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use console::Console;
pub use tls::{fetch_certificate, fingerprint, Trust};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host answered with an error.
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Transport(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("The host's answer is not what this client understands: {0}")]
    Decode(String),
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How to log in.
#[derive(Clone, Debug)]
pub enum Credentials {
    Token(String),
    Password { user: String, password: String },
}

/// A connection to one host.
#[derive(Clone)]
pub struct Client {
    base: String,
    host: String,
    port: u16,
    https: bool,
    trust: Trust,
    agent: ureq::Agent,
    auth: Option<String>,
}

impl Client {
    /// `url` like `https://127.0.0.1:8443` (or `http://` for a keeld with
    /// `--insecure-http`).
    pub fn new(url: &str, trust: Trust) -> Result<Self, ClientError> {
        let url = url.trim_end_matches('/');
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(ClientError::Usage(format!(
                "'{url}' is not a host URL: expected https://HOST:PORT"
            )));
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| {
                    ClientError::Usage(format!("'{p}' in {url} is not a port number"))
                })?;
                (
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    port,
                )
            }
            _ => (rest.to_string(), if https { 443 } else { 80 }),
        };
        if host.is_empty() || host.contains('/') {
            return Err(ClientError::Usage(format!("'{url}' has no host name")));
        }
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        tls = match &trust {
            Trust::Insecure => tls.disable_verification(true),
            Trust::Pinned(der) => {
                tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                    ureq::tls::Certificate::from_der(der).to_owned(),
                ])))
            }
        };
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(300)))
                .tls_config(tls.build())
                .build(),
        );
        Ok(Self {
            base: url.to_string(),
            host,
            port,
            https,
            trust,
            agent,
            auth: None,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The host name or address of the URL.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Uses these credentials from now on (a password is sent as HTTP
    /// Basic on each request; [`Client::login`] trades it for a token).
    pub fn with_credentials(mut self, c: Credentials) -> Self {
        self.auth = Some(match c {
            Credentials::Token(t) => format!("Bearer {t}"),
            Credentials::Password { user, password } => {
                use base64::Engine;
                let raw = format!("{user}:{password}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
            }
        });
        self
    }

    /// Logs in and uses the session's token from now on.
    pub fn login(&mut self, user: &str, password: &str) -> Result<Session, ClientError> {
        let s: Session = self.call(
            "POST",
            "/session",
            Some(&Login {
                user: user.into(),
                password: password.into(),
            }),
        )?;
        self.auth = Some(format!("Bearer {}", s.token));
        Ok(s)
    }

    fn request(&self, method: &str, path: &str) -> ureq::http::request::Builder {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{}{}", self.base, API_PREFIX, path));
        if let Some(a) = &self.auth {
            b = b.header("Authorization", a);
        }
        b
    }

    /// One API call: `path` is under `/api/v1`.
    pub fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let text = self.call_text(method, path, body)?;
        let text = if text.is_empty() {
            "null".to_string()
        } else {
            text
        };
        serde_json::from_str(&text).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// One API call whose answer is text (or empty).
    pub fn call_text<B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<String, ClientError> {
        let b = self.request(method, path);
        let req = match body {
            Some(body) => {
                let json =
                    serde_json::to_vec(body).map_err(|e| ClientError::Usage(e.to_string()))?;
                b.header("Content-Type", "application/json")
                    .body(json)
                    .map_err(|e| ClientError::Usage(e.to_string()))?
            }
            None => b
                .body(Vec::new())
                .map_err(|e| ClientError::Usage(e.to_string()))?,
        };
        let resp = self.agent.run(req).map_err(|e| self.transport(e))?;
        read_answer(resp)
    }

    fn transport(&self, e: ureq::Error) -> ClientError {
        match e {
            ureq::Error::Tls(m) => ClientError::Tls(m.to_string()),
            ureq::Error::Rustls(e) => ClientError::Tls(e.to_string()),
            other => ClientError::Transport(format!("Cannot reach {}: {other}", self.base)),
        }
    }

    /// Uploads `data` to a datastore path; `progress` gets bytes sent.
    pub fn upload(
        &self,
        datastore: &str,
        path: &str,
        data: impl std::io::Read + Send + 'static,
        size: u64,
    ) -> Result<(), ClientError> {
        let req = self
            .request(
                "PUT",
                &format!("/datastores/{}/files/{}", enc(datastore), enc_path(path)),
            )
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", size.to_string())
            .body(ureq::SendBody::from_owned_reader(data))
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let resp = self.agent.run(req).map_err(|e| self.transport(e))?;
        read_answer(resp).map(|_| ())
    }

    /// Downloads a datastore file into `out`; returns the bytes written.
    pub fn download(
        &self,
        datastore: &str,
        path: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, ClientError> {
        let req = self
            .request(
                "GET",
                &format!("/datastores/{}/files/{}", enc(datastore), enc_path(path)),
            )
            .body(Vec::new())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let resp = self.agent.run(req).map_err(|e| self.transport(e))?;
        if !resp.status().is_success() {
            return read_answer(resp).map(|_| 0);
        }
        let mut body = resp.into_body();
        std::io::copy(&mut body.as_reader(), out)
            .map_err(|e| ClientError::Transport(format!("The download broke off: {e}")))
    }

    /// Attaches to a VM's serial console (a WebSocket).
    pub fn console(&self, vm: &str) -> Result<Console, ClientError> {
        let token = self
            .auth
            .clone()
            .ok_or_else(|| ClientError::Usage("Log in before opening a console".to_string()))?;
        Console::connect(
            &self.host,
            self.port,
            self.https,
            &self.trust,
            &format!("{API_PREFIX}/vms/{}/console", enc(vm)),
            &token,
        )
    }

    // ---- typed calls ---------------------------------------------------

    pub fn host_info(&self) -> Result<HostInfo, ClientError> {
        self.get("/host")
    }

    pub fn vm_list(&self) -> Result<Vec<VmInfo>, ClientError> {
        self.get("/vms")
    }

    pub fn vm_get(&self, name: &str) -> Result<VmInfo, ClientError> {
        self.get(&format!("/vms/{}", enc(name)))
    }

    pub fn vm_create(&self, spec: &VmCreate) -> Result<Task, ClientError> {
        self.call("POST", "/vms", Some(spec))
    }

    pub fn vm_edit(&self, name: &str, edit: &VmEdit) -> Result<VmInfo, ClientError> {
        self.call("PATCH", &format!("/vms/{}", enc(name)), Some(edit))
    }

    pub fn vm_delete(&self, name: &str) -> Result<(), ClientError> {
        self.call_text::<()>("DELETE", &format!("/vms/{}", enc(name)), None)
            .map(|_| ())
    }

    pub fn vm_power(&self, name: &str, op: PowerOp) -> Result<Task, ClientError> {
        self.call::<Task, ()>(
            "POST",
            &format!("/vms/{}/power/{}", enc(name), op.as_str()),
            None,
        )
    }

    pub fn vm_clone(&self, name: &str, req: &VmClone) -> Result<Task, ClientError> {
        self.call("POST", &format!("/vms/{}/clone", enc(name)), Some(req))
    }

    pub fn vm_register(&self, req: &VmRegister) -> Result<VmInfo, ClientError> {
        self.call("POST", "/vms/register", Some(req))
    }

    pub fn vm_unregister(&self, name: &str) -> Result<(), ClientError> {
        self.call_text::<()>("POST", &format!("/vms/{}/unregister", enc(name)), None)
            .map(|_| ())
    }

    pub fn vm_nics(&self, name: &str) -> Result<Vec<NicInfo>, ClientError> {
        self.get(&format!("/vms/{}/nics", enc(name)))
    }

    pub fn vm_nic_add(&self, name: &str, req: &NicCreate) -> Result<NicInfo, ClientError> {
        self.call("POST", &format!("/vms/{}/nics", enc(name)), Some(req))
    }

    pub fn vm_nic_edit(
        &self,
        name: &str,
        index: u32,
        edit: &NicEdit,
    ) -> Result<NicInfo, ClientError> {
        self.call(
            "PATCH",
            &format!("/vms/{}/nics/{index}", enc(name)),
            Some(edit),
        )
    }

    pub fn vm_nic_remove(&self, name: &str, index: u32) -> Result<(), ClientError> {
        self.call_text::<()>("DELETE", &format!("/vms/{}/nics/{index}", enc(name)), None)
            .map(|_| ())
    }

    pub fn switch_list(&self) -> Result<Vec<Switch>, ClientError> {
        self.get("/network/switches")
    }

    pub fn switch_get(&self, name: &str) -> Result<Switch, ClientError> {
        self.get(&format!("/network/switches/{}", enc(name)))
    }

    pub fn switch_create(&self, req: &SwitchCreate) -> Result<Switch, ClientError> {
        self.call("POST", "/network/switches", Some(req))
    }

    pub fn switch_edit(&self, name: &str, edit: &SwitchEdit) -> Result<Switch, ClientError> {
        self.call(
            "PATCH",
            &format!("/network/switches/{}", enc(name)),
            Some(edit),
        )
    }

    pub fn switch_delete(&self, name: &str) -> Result<(), ClientError> {
        self.call_text::<()>("DELETE", &format!("/network/switches/{}", enc(name)), None)
            .map(|_| ())
    }

    pub fn portgroup_list(&self) -> Result<Vec<PortGroup>, ClientError> {
        self.get("/network/portgroups")
    }

    pub fn portgroup_get(&self, name: &str) -> Result<PortGroup, ClientError> {
        self.get(&format!("/network/portgroups/{}", enc(name)))
    }

    pub fn portgroup_create(&self, req: &PortGroupCreate) -> Result<PortGroup, ClientError> {
        self.call("POST", "/network/portgroups", Some(req))
    }

    pub fn portgroup_edit(
        &self,
        name: &str,
        edit: &PortGroupEdit,
    ) -> Result<PortGroup, ClientError> {
        self.call(
            "PATCH",
            &format!("/network/portgroups/{}", enc(name)),
            Some(edit),
        )
    }

    pub fn portgroup_delete(&self, name: &str) -> Result<(), ClientError> {
        self.call_text::<()>(
            "DELETE",
            &format!("/network/portgroups/{}", enc(name)),
            None,
        )
        .map(|_| ())
    }

    pub fn vm_log(&self, name: &str, max_bytes: u64) -> Result<String, ClientError> {
        self.call_text::<()>(
            "GET",
            &format!("/vms/{}/log?max_bytes={max_bytes}", enc(name)),
            None,
        )
    }

    pub fn task_get(&self, id: u64) -> Result<Task, ClientError> {
        self.get(&format!("/tasks/{id}"))
    }

    /// Waits until the task finished (polling in steps the server bounds).
    pub fn task_wait(&self, id: u64, timeout: Duration) -> Result<Task, ClientError> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let step = left.min(Duration::from_secs(30)).as_millis();
            let t: Task = self.get(&format!("/tasks/{id}?wait_ms={step}"))?;
            if matches!(t.state, TaskState::Success | TaskState::Error) || left.is_zero() {
                return Ok(t);
            }
        }
    }

    pub fn task_list(&self, before: Option<u64>, limit: u32) -> Result<Page<Task>, ClientError> {
        self.get(&format!("/tasks?limit={limit}{}", before_q(before)))
    }

    pub fn event_list(
        &self,
        before: Option<u64>,
        limit: u32,
        target: Option<&str>,
    ) -> Result<Page<Event>, ClientError> {
        let t = target
            .map(|t| format!("&target={}", enc(t)))
            .unwrap_or_default();
        self.get(&format!("/events?limit={limit}{}{t}", before_q(before)))
    }

    pub fn datastore_list(&self) -> Result<Vec<Datastore>, ClientError> {
        self.get("/datastores")
    }

    pub fn datastore_browse(&self, ds: &str, path: &str) -> Result<Vec<FileEntry>, ClientError> {
        self.get(&format!(
            "/datastores/{}/browse?path={}",
            enc(ds),
            enc(path)
        ))
    }

    pub fn user_list(&self) -> Result<Vec<User>, ClientError> {
        self.get("/users")
    }

    pub fn user_create(&self, req: &UserCreate) -> Result<User, ClientError> {
        self.call("POST", "/users", Some(req))
    }

    pub fn user_delete(&self, name: &str) -> Result<(), ClientError> {
        self.call_text::<()>("DELETE", &format!("/users/{}", enc(name)), None)
            .map(|_| ())
    }

    pub fn user_set_password(&self, name: &str, password: &str) -> Result<(), ClientError> {
        self.call_text(
            "PUT",
            &format!("/users/{}/password", enc(name)),
            Some(&PasswordChange {
                password: password.into(),
            }),
        )
        .map(|_| ())
    }

    pub fn permission_list(&self) -> Result<Vec<Permission>, ClientError> {
        self.get("/permissions")
    }

    pub fn permission_set(&self, p: &Permission) -> Result<(), ClientError> {
        self.call_text("PUT", "/permissions", Some(p)).map(|_| ())
    }

    pub fn permission_remove(&self, user: &str, entity: &str) -> Result<(), ClientError> {
        self.call_text::<()>(
            "DELETE",
            &format!("/permissions?user={}&entity={}", enc(user), enc(entity)),
            None,
        )
        .map(|_| ())
    }

    pub fn roles(&self) -> Result<Vec<RoleInfo>, ClientError> {
        self.get("/roles")
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<T, ()>("GET", path, None)
    }
}

fn before_q(before: Option<u64>) -> String {
    before.map(|b| format!("&before={b}")).unwrap_or_default()
}

fn read_answer(resp: ureq::http::Response<ureq::Body>) -> Result<String, ClientError> {
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let text = body
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| ClientError::Transport(format!("Cannot read the answer: {e}")))?;
    if (200..300).contains(&status) {
        return Ok(text);
    }
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => Err(ClientError::Api {
            status,
            code: e.error.code,
            message: e.error.message,
        }),
        Err(_) => Err(ClientError::Api {
            status,
            code: "http".into(),
            message: text.lines().next().unwrap_or("").to_string(),
        }),
    }
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes a path, keeping its `/` separators.
fn enc_path(p: &str) -> String {
    p.split('/').map(enc).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_checked() {
        let c = Client::new("https://127.0.0.1:8443/", Trust::Insecure).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.https),
            ("127.0.0.1", 8443, true)
        );
        let c = Client::new("http://[::1]:80", Trust::Insecure).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 80));
        for bad in ["ftp://x", "127.0.0.1:8443", "https://h:99999", "https://"] {
            assert!(Client::new(bad, Trust::Insecure).is_err(), "{bad}");
        }
    }

    #[test]
    fn encoding_keeps_names_safe() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        assert_eq!(enc_path("dir/a b"), "dir/a%20b");
    }
}
