//! The exit report (`keel-vmm --exit-file PATH`): a small JSON document
//! keel-vmm writes atomically as it exits, so that a supervisor which is
//! not its parent (the host daemon after a restart) learns why it ended.
//!
//! ```text
//! {"status":3,"reason":"triple-fault","message":"guest crashed on vCPU 0: triple fault"}
//! ```
//!
//! keel-vmm removes PATH when it starts, so a report always describes the
//! run that wrote it; no report after the process is gone means it was
//! killed (or panicked).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The largest report a reader accepts.
pub const MAX_EXIT_REPORT: u64 = 64 * 1024;

/// Why keel-vmm exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitCause {
    /// The guest powered off (status 0).
    PoweredOff,
    /// The guest reset and keel-vmm does not reboot it (`--no-reboot`, or
    /// a reset while the power button was pressed); status 0.
    Reset,
    /// The guest crashed: triple fault (status 3).
    TripleFault,
    /// `stop` on the control socket (status 5).
    Stopped,
    /// The guest did not power off after the power button within
    /// `--shutdown-timeout`, or a second signal came (status 5).
    ShutdownTimeout,
    /// keel-vmm failed: bad input (status 2) or anything else (status 1).
    VmmError,
    /// KVM failed to run a vCPU (status 4), or could not be set up.
    KvmError,
    /// A cause this reader does not know (a newer keel-vmm).
    #[serde(other)]
    Unknown,
}

impl ExitCause {
    /// The name in the report (`powered-off`, `triple-fault`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ExitCause::PoweredOff => "powered-off",
            ExitCause::Reset => "reset",
            ExitCause::TripleFault => "triple-fault",
            ExitCause::Stopped => "stopped",
            ExitCause::ShutdownTimeout => "shutdown-timeout",
            ExitCause::VmmError => "vmm-error",
            ExitCause::KvmError => "kvm-error",
            ExitCause::Unknown => "unknown",
        }
    }
}

/// The exit report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// The process's exit status.
    pub status: i32,
    pub reason: ExitCause,
    /// One line for a person, as keel-vmm printed it.
    pub message: String,
}

impl ExitReport {
    /// The document, newline included.
    pub fn encode(&self) -> String {
        // Plain fields: serializing cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                "{{\"status\":{},\"reason\":\"{}\",\"message\":\"\"}}",
                self.status,
                self.reason.as_str()
            )
        });
        s.push('\n');
        s
    }

    /// Parses a report.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Writes the report to `path` atomically: a temporary file beside it,
    /// fsync, rename, fsync of the directory. A reader sees the whole
    /// report or none.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(self.encode().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Best effort: the rename is already visible to readers.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Reads the report at `path`: `Ok(None)` when there is none, an
    /// `InvalidData` error when it is not a report (or too large).
    pub fn read(path: &Path) -> io::Result<Option<Self>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() as u64 > MAX_EXIT_REPORT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "exit report too large",
            ));
        }
        Self::parse(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_look_as_documented_and_round_trip() {
        let r = ExitReport {
            status: 3,
            reason: ExitCause::TripleFault,
            message: "guest crashed on vCPU 0: triple fault".into(),
        };
        assert_eq!(
            r.encode(),
            "{\"status\":3,\"reason\":\"triple-fault\",\"message\":\"guest crashed on vCPU 0: triple fault\"}\n"
        );
        assert_eq!(ExitReport::parse(r.encode().as_bytes()).unwrap(), r);
        for cause in [
            ExitCause::PoweredOff,
            ExitCause::Reset,
            ExitCause::TripleFault,
            ExitCause::Stopped,
            ExitCause::ShutdownTimeout,
            ExitCause::VmmError,
            ExitCause::KvmError,
        ] {
            let json = serde_json::to_string(&cause).unwrap();
            assert_eq!(json, format!("\"{}\"", cause.as_str()));
        }
        // A newer cause and extra fields are tolerated.
        let r =
            ExitReport::parse(br#"{"status":9,"reason":"melted","message":"m","x":1}"#).unwrap();
        assert_eq!(r.reason, ExitCause::Unknown);
        assert!(ExitReport::parse(b"{\"status\":0}").is_err());
        assert!(ExitReport::parse(b"garbage").is_err());
    }

    #[test]
    fn write_is_atomic_and_read_tells_absent_from_broken() {
        let dir = std::env::temp_dir().join(format!("keel-exit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("exit.json");
        assert!(ExitReport::read(&path).unwrap().is_none());
        let r = ExitReport {
            status: 0,
            reason: ExitCause::PoweredOff,
            message: "guest powered off".into(),
        };
        fs::write(&path, b"stale and broken").unwrap();
        assert_eq!(
            ExitReport::read(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        r.write(&path).unwrap();
        assert_eq!(ExitReport::read(&path).unwrap(), Some(r.clone()));
        // Only the report is left: no temporary file.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);
        // A directory that does not exist is an error, not a panic.
        assert!(r.write(&dir.join("nope").join("exit.json")).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
