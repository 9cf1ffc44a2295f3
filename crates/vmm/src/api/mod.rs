//! The control socket (`--api-socket PATH`): the server side of the
//! `vmm-api` protocol.
//!
//! ```text
//!   client ──line──▶ api-conn thread ── parse_request ──▶ Event::Api(ApiCall) ──▶ control loop
//!          ◀─line───        │  ◀──────────── Result<Reply, ApiError> ◀──────────── handler::serve
//!   api thread: accept() → one api-conn thread per client (at most MAX_CLIENTS)
//! ```
//!
//! Parsing, framing, `version`, `counters` (atomics the device workers
//! update, see [`IoCounters`]) and `nic-link` (the NICs' link handles,
//! which live as long as the process) happen on the connection thread; every
//! other command goes to the control loop through the same channel as
//! vCPU, device and signal events, so the VM's state has one owner. The
//! socket is created with mode 0600 and removed when the server is dropped;
//! a stale socket file left by a dead VMM is replaced, a live one is not.

pub mod handler;

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_api::{
    parse_request, ApiError, ErrorCode, LineRead, LineReader, Reply, Request, Response,
    VersionInfo, COMMANDS, MAX_REQUEST_LINE, PROTOCOL_VERSION,
};

use crate::device_manager::IoCounters;
use crate::Event;

/// The most clients connected at once; more get a `busy` answer.
pub const MAX_CLIENTS: usize = 16;
/// How long a connection waits for the control loop's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long dropping the server waits for answers still being written
/// (the answer to `stop` is written while the VMM is exiting).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A request for the control loop, with where to send the answer.
#[derive(Debug)]
pub struct ApiCall {
    pub request: Request,
    pub reply: Sender<Result<Reply, ApiError>>,
}

impl ApiCall {
    /// Sends the answer (the client may be gone: that is fine).
    pub fn answer(self, result: Result<Reply, ApiError>) {
        let _ = self.reply.send(result);
    }
}

/// Errors of setting up the control socket: all about the path the user
/// gave, except a thread that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("The control socket {0} is in use by a running process")]
    InUse(String),
    #[error("The control socket path {0} exists and is not a socket")]
    NotASocket(String),
    #[error("Cannot create the control socket {path}")]
    Bind {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("Cannot start the control socket thread")]
    Thread(#[source] io::Error),
}

impl ApiServerError {
    /// True when the problem is the path the user gave (exit status 2).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, ApiServerError::Thread(_))
    }
}

/// State shared by the accept thread and the connection threads.
struct Shared {
    events: Mutex<Sender<Event>>,
    closing: AtomicBool,
    /// Answers being produced or written; dropping the server waits for 0.
    in_flight: AtomicUsize,
    /// Live client streams (clones), to shut them down on drop.
    clients: Mutex<HashMap<u64, UnixStream>>,
    next_client: AtomicU64,
    /// The devices' I/O counters (`counters`).
    counters: IoCounters,
}

/// The running control socket. Dropping it closes every connection and
/// removes the socket file.
pub struct ApiServer {
    path: PathBuf,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Listens on `path` and forwards requests to the control loop as
    /// [`Event::Api`]; answers `counters` from `counters`.
    pub fn start(
        path: &Path,
        events: Sender<Event>,
        counters: IoCounters,
    ) -> Result<ApiServer, ApiServerError> {
        let listener = bind(path)?;
        let shared = Arc::new(Shared {
            events: Mutex::new(events),
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(0),
            counters,
        });
        let accept = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("api".into())
                .spawn(move || accept_loop(listener, shared))
                .map_err(ApiServerError::Thread)?
        };
        Ok(ApiServer {
            path: path.to_path_buf(),
            shared,
            accept: Some(accept),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // New requests get `busy`; answers in progress (the one to `stop`)
        // still reach their clients.
        self.shared.closing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        // Wake the accept thread with a connection of our own.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, c) in lock(&self.shared.clients).drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds `path`, replacing a stale socket file (one nobody listens on).
fn bind(path: &Path) -> Result<UnixListener, ApiServerError> {
    let shown = || path.display().to_string();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ApiServerError::NotASocket(shown()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ApiServerError::InUse(shown()));
        }
        std::fs::remove_file(path).map_err(|source| ApiServerError::Bind {
            path: shown(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ApiServerError::Bind {
        path: shown(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        let _ = std::fs::remove_file(path);
        ApiServerError::Bind {
            path: shown(),
            source,
        }
    })?;
    Ok(listener)
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else {
            // EMFILE and the like: back off instead of spinning.
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        let id = shared.next_client.fetch_add(1, Ordering::SeqCst);
        {
            let mut clients = lock(&shared.clients);
            if clients.len() >= MAX_CLIENTS {
                let busy = ApiError::new(
                    ErrorCode::Busy,
                    format!("Too many control connections (at most {MAX_CLIENTS})"),
                );
                let _ = stream.write_all(Response::new(None, Err(busy)).encode().as_bytes());
                continue;
            }
            match stream.try_clone() {
                Ok(c) => clients.insert(id, c),
                Err(_) => continue,
            };
        }
        let conn_shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || {
                serve_connection(stream, &conn_shared);
                lock(&conn_shared.clients).remove(&id);
            });
        if spawned.is_err() {
            lock(&shared.clients).remove(&id);
        }
    }
}

/// Answers one client's request lines, in order, until it hangs up.
fn serve_connection(stream: UnixStream, shared: &Shared) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = LineReader::new(BufReader::new(stream), MAX_REQUEST_LINE);
    loop {
        let mut dispatched = false;
        let response = match reader.read_line() {
            Ok(None) | Err(_) => return,
            Ok(Some(LineRead::TooLong)) => Response::new(
                None,
                Err(ApiError::new(
                    ErrorCode::LineTooLong,
                    format!("Request line is longer than {MAX_REQUEST_LINE} bytes"),
                )),
            ),
            // Blank lines (a person typing) are not requests.
            Ok(Some(LineRead::Line(l))) if l.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Some(LineRead::Line(l))) => match parse_request(&l) {
                Err(rejection) => rejection.response(),
                Ok(env) => {
                    shared.in_flight.fetch_add(1, Ordering::SeqCst);
                    dispatched = true;
                    Response::new(env.id, dispatch(env.request, shared))
                }
            },
        };
        let written = writer.write_all(response.encode().as_bytes());
        if dispatched {
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if written.is_err() {
            return;
        }
    }
}

/// Answers `version`, `counters` and `nic-link` here; sends the rest to
/// the control loop.
fn dispatch(request: Request, shared: &Shared) -> Result<Reply, ApiError> {
    match request {
        Request::Version => {
            return Ok(Reply::Version(VersionInfo {
                protocol: PROTOCOL_VERSION,
                vmm: format!("keel-vmm {}", env!("CARGO_PKG_VERSION")),
                commands: COMMANDS.iter().map(|c| c.to_string()).collect(),
            }))
        }
        Request::Counters => return Ok(Reply::Counters(shared.counters.snapshot())),
        Request::NicLink { nic, up } => return nic_link(&shared.counters, &nic, up),
        _ => {}
    }
    let busy = || ApiError::new(ErrorCode::Busy, "The VMM is shutting down");
    if shared.closing.load(Ordering::SeqCst) {
        return Err(busy());
    }
    let (reply, answer) = mpsc::channel();
    let call = ApiCall { request, reply };
    if lock(&shared.events).send(Event::Api(call)).is_err() {
        return Err(busy());
    }
    match answer.recv_timeout(ANSWER_TIMEOUT) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => Err(ApiError::new(
            ErrorCode::Internal,
            "The VMM did not answer in time",
        )),
        Err(RecvTimeoutError::Disconnected) => Err(busy()),
    }
}

/// Sets a NIC's link up or down (the guest's driver is told at once).
fn nic_link(counters: &IoCounters, id: &str, up: bool) -> Result<Reply, ApiError> {
    let Some(nic) = counters.nics.iter().find(|n| n.id == id) else {
        let ids: Vec<&str> = counters.nics.iter().map(|n| n.id.as_str()).collect();
        let known = if ids.is_empty() {
            "it has none".to_string()
        } else {
            format!("it has {}", ids.join(", "))
        };
        return Err(ApiError::new(
            ErrorCode::NoDevice,
            format!("The VM has no NIC '{id}' ({known})"),
        ));
    };
    if nic.link.set_up(up) {
        let state = if up { "up" } else { "down" };
        eprintln!("keel-vmm: {id}: link {state} (control socket)");
    }
    Ok(Reply::Done)
}

#[cfg(test)]
mod tests;
