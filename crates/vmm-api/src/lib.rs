//! The control protocol of one `keel-vmm` process (`--api-socket PATH`),
//! shared by the VMM (server) and the host daemon (client).
//!
//! A Unix stream socket carrying one JSON object per line each way: the
//! client sends a request line, the VMM answers with exactly one response
//! line, in order. Every message carries the protocol version `v`; a request
//! may carry an `id` (an unsigned integer) that its response repeats.
//!
//! ```text
//! → {"v":1,"id":1,"cmd":"status"}
//! ← {"v":1,"id":1,"ok":{"status":{"state":"running","vcpus":2,"memory_bytes":1073741824,
//!        "uptime_ms":5321,"boots":1,"balloon":null}}}
//! → {"v":1,"id":2,"cmd":"balloon-set","target_bytes":268435456}
//! ← {"v":1,"id":2,"error":{"code":"no-device","message":"The VM has no balloon (start keel-vmm with --balloon)"}}
//! → {"v":1,"cmd":"pause"}
//! ← {"v":1,"ok":"done"}
//! → {"v":1,"cmd":"counters"}
//! ← {"v":1,"ok":{"counters":{"disks":[{"id":"disk0","serial":null,"read_ops":31,…}],"nics":[]}}}
//! → hello
//! ← {"v":1,"error":{"code":"bad-json","message":"Request is not JSON: expected value at line 1 column 1"}}
//! ```
//!
//! Rules, so that either side can evolve:
//! - A request whose `v` is not [`PROTOCOL_VERSION`] gets `unsupported-version`
//!   (and nothing is done). A later version that only adds commands or reply
//!   fields keeps `v`; one that changes a meaning bumps it.
//! - Unknown commands get `unknown-command`; unknown or missing fields,
//!   wrong types and non-object lines get `bad-request` / `bad-json`. The
//!   connection stays open after any error answer.
//! - A request line longer than [`MAX_REQUEST_LINE`] bytes gets
//!   `line-too-long`; the rest of that line is skipped.
//! - Clients ignore reply fields they do not know and map error codes they
//!   do not know to [`ErrorCode::Unknown`].
//!
//! See `docs/vmm-api.md` for the commands and their answers. The exit
//! report keel-vmm leaves behind (`--exit-file`) is in [`exit`].

#![forbid(unsafe_code)]

mod client;
pub mod exit;
mod framing;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use client::{Client, ClientError};
pub use exit::{ExitCause, ExitReport};
pub use framing::{LineRead, LineReader};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest request line a server reads (bytes, without the newline).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// The longest response line a client reads.
pub const MAX_RESPONSE_LINE: usize = 1024 * 1024;

/// A command to the VMM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The protocol and VMM versions.
    Version,
    /// The VM's state, size, uptime and balloon.
    Status,
    /// Stops the vCPUs and the device workers; the guest stops running.
    Pause,
    /// Undoes `pause`.
    Resume,
    /// Presses the ACPI power button (what SIGTERM does): the guest is asked
    /// to power off and is stopped hard after the VMM's shutdown timeout. A
    /// paused VM is resumed first, so that it can.
    PowerButton,
    /// Stops the VM at once (exit status 5). The answer is sent before the
    /// VMM exits.
    Stop,
    /// Restarts the guest at once, as a guest reboot does (the reset
    /// button): the VM is rebuilt and the kernel boots again. With
    /// `--no-reboot` the VMM exits (status 0) instead. The answer is sent
    /// before the reset.
    Reset,
    /// Sets the balloon's target: the guest is asked to give this much of
    /// its memory back (rounded down to 4 KiB pages). 0 deflates it fully.
    BalloonSet { target_bytes: u64 },
    /// The guest's memory statistics from the balloon's stats queue (the
    /// last ones the guest sent; asking also asks the guest for fresh ones).
    BalloonStats,
    /// Each disk's and NIC's I/O counters since the VMM started (they go
    /// on across guest reboots).
    Counters,
    /// Connects (`up: true`) or disconnects a NIC's link, as pulling its
    /// cable would: the guest's driver sees the carrier change (a
    /// configuration interrupt); while down, frames are dropped both ways.
    /// The state lasts across guest reboots. `nic` is the NIC's id
    /// (`net0`, … as `counters` shows them; the envelope's `id` is the
    /// request's).
    NicLink { nic: String, up: bool },
}

impl Request {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Version => "version",
            Request::Status => "status",
            Request::Pause => "pause",
            Request::Resume => "resume",
            Request::PowerButton => "power-button",
            Request::Stop => "stop",
            Request::Reset => "reset",
            Request::BalloonSet { .. } => "balloon-set",
            Request::BalloonStats => "balloon-stats",
            Request::Counters => "counters",
            Request::NicLink { .. } => "nic-link",
        }
    }
}

/// Every command name, for `unknown-command` answers.
pub const COMMANDS: &[&str] = &[
    "version",
    "status",
    "pause",
    "resume",
    "power-button",
    "stop",
    "reset",
    "balloon-set",
    "balloon-stats",
    "counters",
    "nic-link",
];

/// What a successful request returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// The command was carried out (pause, resume, power-button, stop,
    /// reset, balloon-set, nic-link).
    Done,
    Version(VersionInfo),
    Status(VmStatus),
    BalloonStats(BalloonStats),
    Counters(VmCounters),
}

/// The answer to `version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// [`PROTOCOL_VERSION`] of the server.
    pub protocol: u32,
    /// The VMM's name and version, like `keel-vmm 0.1.0`.
    pub vmm: String,
    /// The commands this server knows.
    pub commands: Vec<String>,
}

/// The VM's lifecycle state, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// The guest runs.
    Running,
    /// vCPUs and device workers are stopped.
    Paused,
    /// The power button was pressed; the VM ends when the guest powers off
    /// or the shutdown timeout passes.
    ShuttingDown,
    /// A state this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

/// The answer to `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    pub state: VmState,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Since the VMM process started (across guest reboots).
    pub uptime_ms: u64,
    /// How many times the guest has been booted (1 + reboots).
    pub boots: u32,
    /// `null` when the VM has no balloon.
    pub balloon: Option<BalloonStatus>,
}

/// The balloon device, as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonStatus {
    /// What the VMM asks the guest to give back.
    pub target_bytes: u64,
    /// What the guest says it has given back (its driver's `actual`).
    pub actual_bytes: u64,
    /// The guest's driver has started the device.
    pub driver_ready: bool,
    /// Features the driver accepted.
    pub stats: bool,
    pub deflate_on_oom: bool,
    pub free_page_reporting: bool,
    /// Pages (4 KiB) inflated and deflated since the driver started, and
    /// bytes of free memory the guest reported.
    pub inflated_pages: u64,
    pub deflated_pages: u64,
    pub reported_bytes: u64,
    /// Page numbers the guest sent that are not in its RAM (ignored).
    pub rejected_pages: u64,
}

/// The guest's memory statistics (virtio-balloon stats queue). A field is
/// absent when the guest did not send it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonStats {
    /// How old these numbers are; absent when the guest never sent any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_in_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_out_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_caches_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
}

/// The answer to `counters`: every counter counts from 0 when the VMM
/// starts and only grows (guest reboots do not reset it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCounters {
    /// One per disk, in `--disk` order.
    #[serde(default)]
    pub disks: Vec<DiskCounters>,
    /// One per NIC, in `--net` order.
    #[serde(default)]
    pub nics: Vec<NicCounters>,
}

/// One disk's virtio-blk requests. A request is counted when it completes:
/// successes by kind (with their bytes), failures in `errors` only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCounters {
    /// `disk0`, `disk1`, … in `--disk` order.
    pub id: String,
    /// What the guest reads as the disk's serial (`serial=`), if set.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub read_ops: u64,
    #[serde(default)]
    pub read_bytes: u64,
    #[serde(default)]
    pub write_ops: u64,
    #[serde(default)]
    pub write_bytes: u64,
    #[serde(default)]
    pub flush_ops: u64,
    #[serde(default)]
    pub discard_ops: u64,
    #[serde(default)]
    pub write_zeroes_ops: u64,
    /// Requests that failed: host I/O errors, and requests the device
    /// refused (malformed, out of range, unsupported, a write to a
    /// read-only disk).
    #[serde(default)]
    pub errors: u64,
}

/// One NIC's frames. Bytes are Ethernet frames, without the virtio-net
/// header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicCounters {
    /// `net0`, `net1`, … in `--net` order.
    pub id: String,
    /// The guest's MAC address.
    pub mac: String,
    /// The host's TAP interface.
    #[serde(default)]
    pub tap: String,
    /// Frames delivered to the guest.
    #[serde(default)]
    pub rx_packets: u64,
    #[serde(default)]
    pub rx_bytes: u64,
    /// Frames the guest sent out.
    #[serde(default)]
    pub tx_packets: u64,
    #[serde(default)]
    pub tx_bytes: u64,
    /// Frames for the guest that were lost: the guest did not take them
    /// in time (the TAP's queue overflowed) or they did not fit its
    /// buffers.
    #[serde(default)]
    pub rx_dropped: u64,
    /// Frames from the guest that were dropped: malformed, refused by the
    /// host, or sent while the link was down.
    #[serde(default)]
    pub tx_errors: u64,
    /// Frames from the guest dropped because their source MAC is not the
    /// NIC's (`forged-transmits=reject`).
    #[serde(default)]
    pub tx_forged: u64,
    /// Frames for the guest dropped because their destination MAC is
    /// another NIC's unicast address (`promiscuous=reject`). Absent from
    /// an older server: 0.
    #[serde(default)]
    pub rx_filtered: u64,
    /// The link is up (`nic-link`, `--net ...,link=down`). Absent from an
    /// older server: up.
    #[serde(default = "link_up_default")]
    pub link_up: bool,
}

fn link_up_default() -> bool {
    true
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The line is not JSON (or not UTF-8).
    BadJson,
    /// JSON, but not a valid request: not an object, a missing, unknown or
    /// mistyped field.
    BadRequest,
    /// `cmd` names no command this server knows.
    UnknownCommand,
    /// `v` is not the server's protocol version.
    UnsupportedVersion,
    /// The request line is longer than [`MAX_REQUEST_LINE`].
    LineTooLong,
    /// The command does not apply in the VM's current state (e.g. `resume`
    /// while running).
    InvalidState,
    /// The command needs a device the VM does not have (or names one it
    /// does not have, like a NIC id).
    NoDevice,
    /// A value is out of range (e.g. a balloon target above guest memory).
    InvalidArgument,
    /// The server is at its client limit or shutting down.
    Busy,
    /// The VMM failed to carry the command out.
    Internal,
    /// A code this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

/// An error answer: `{"code": "...", "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// One response line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    /// The answer to request `id` with `result`.
    pub fn new(id: Option<u64>, result: Result<Reply, ApiError>) -> Self {
        let (ok, error) = match result {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        Response {
            v: PROTOCOL_VERSION,
            id,
            ok,
            error,
        }
    }

    /// The line to send, newline included.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys,
        // no custom serializers.
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"v":1,"error":{"code":"internal","message":"Cannot encode the answer"}}"#.into()
        });
        s.push('\n');
        s
    }

    /// The reply or the error; a response with neither (or both) is a
    /// protocol error.
    pub fn into_result(self) -> Result<Reply, ApiError> {
        match (self.ok, self.error) {
            (Some(ok), None) => Ok(ok),
            (None, Some(e)) => Err(e),
            _ => Err(ApiError::new(
                ErrorCode::Internal,
                "Response has neither or both of ok and error",
            )),
        }
    }
}

/// A parsed request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub id: Option<u64>,
    pub request: Request,
}

impl Envelope {
    /// The line to send, newline included.
    pub fn encode(&self) -> String {
        let mut map = match serde_json::to_value(&self.request) {
            Ok(Value::Object(m)) => m,
            // Every Request serializes to an object with `cmd`.
            _ => Map::new(),
        };
        let mut out = Map::new();
        out.insert("v".into(), Value::from(PROTOCOL_VERSION));
        if let Some(id) = self.id {
            out.insert("id".into(), Value::from(id));
        }
        out.append(&mut map);
        let mut s = Value::Object(out).to_string();
        s.push('\n');
        s
    }
}

/// A request line that cannot be served, with the id to answer to (when
/// the line had a readable one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub id: Option<u64>,
    pub error: ApiError,
}

impl Rejection {
    /// The error response for it.
    pub fn response(self) -> Response {
        Response::new(self.id, Err(self.error))
    }
}

/// Parses one request line (without its newline). A pure function of the
/// bytes, for the server and for the fuzz target.
pub fn parse_request(line: &[u8]) -> Result<Envelope, Rejection> {
    let reject = |id, code, message: String| Rejection {
        id,
        error: ApiError::new(code, message),
    };
    if line.len() > MAX_REQUEST_LINE {
        return Err(reject(
            None,
            ErrorCode::LineTooLong,
            format!("Request line is longer than {MAX_REQUEST_LINE} bytes"),
        ));
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        reject(
            None,
            ErrorCode::BadJson,
            format!("Request is not JSON: {e}"),
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err(reject(
            None,
            ErrorCode::BadRequest,
            "Request must be a JSON object like {\"v\":1,\"cmd\":\"status\"}".into(),
        ));
    };
    let id = match map.remove("id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            reject(
                None,
                ErrorCode::BadRequest,
                "Field id must be an unsigned integer".into(),
            )
        })?),
    };
    match map.remove("v") {
        None => {
            return Err(reject(
                id,
                ErrorCode::BadRequest,
                format!("Missing field v (the protocol version, {PROTOCOL_VERSION})"),
            ))
        }
        Some(v) if v.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
        Some(v) => {
            return Err(reject(
                id,
                ErrorCode::UnsupportedVersion,
                format!(
                    "Protocol version {v} is not supported; this VMM speaks {PROTOCOL_VERSION}"
                ),
            ))
        }
    }
    let cmd = match map.get("cmd") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(reject(
                id,
                ErrorCode::BadRequest,
                "Field cmd must be a string".into(),
            ))
        }
        None => {
            return Err(reject(
                id,
                ErrorCode::BadRequest,
                format!("Missing field cmd (one of {})", COMMANDS.join(", ")),
            ))
        }
    };
    if !COMMANDS.contains(&cmd.as_str()) {
        return Err(reject(
            id,
            ErrorCode::UnknownCommand,
            format!(
                "Unknown command '{cmd}': expected one of {}",
                COMMANDS.join(", ")
            ),
        ));
    }
    let keys: Vec<String> = map.keys().cloned().collect();
    let request: Request = serde_json::from_value(Value::Object(map)).map_err(|e| {
        reject(
            id,
            ErrorCode::BadRequest,
            format!("Bad arguments for {cmd}: {e}"),
        )
    })?;
    // serde ignores extra fields of unit variants: refuse them here too.
    let known = match serde_json::to_value(&request) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Some(extra) = keys.iter().find(|k| !known.contains_key(k.as_str())) {
        return Err(reject(
            id,
            ErrorCode::BadRequest,
            format!("Unknown field '{extra}' for {cmd}"),
        ));
    }
    Ok(Envelope { id, request })
}

#[cfg(test)]
mod tests;
