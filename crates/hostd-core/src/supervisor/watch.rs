//! The watcher thread of one VMM, and how an exit is classified.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use vmm_api::{ExitCause, ExitReport};

use super::{lock, procfs, ExitReason, Shared, Slot, VmExit, Vmm, LOG_TAIL_LINES};

/// Waits for the VMM's process to end, reaps it (when it is our child),
/// reports its exit once and forgets it.
pub(super) fn run(shared: &Shared, vmm: &Arc<Vmm>, child: Option<Child>) {
    wait_gone(vmm);
    let (status, signal) = match child {
        Some(mut c) => match c.wait() {
            Ok(s) => (s.code(), s.signal()),
            Err(_) => (None, None),
        },
        None => (None, None),
    };
    vmm.update(|l| l.gone = true);
    // The console's connection ends with the process; drop the hub now.
    lock(&vmm.console).take();
    let stop_requested = lock(&vmm.life).stop_requested;
    let report = ExitReport::read(&vmm.paths.exit).transpose();
    let exit = VmExit {
        id: vmm.id,
        reason: classify(report, status, signal, stop_requested),
        log_tail: log_tail(&vmm.vmm_log(), vmm.log_from, LOG_TAIL_LINES),
    };
    // A panicking callback must not leave the VM `running` forever.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (shared.on_exit)(exit)));
    {
        let mut slots = lock(&shared.slots);
        if matches!(slots.get(&vmm.id), Some(Slot::Running(v)) if Arc::ptr_eq(v, vmm)) {
            slots.remove(&vmm.id);
        }
    }
    vmm.update(|l| l.reported = true);
}

/// Blocks until the process has exited: its pidfd becomes readable (at
/// once, whoever its parent is). Should poll fail, /proc is polled instead.
fn wait_gone(vmm: &Vmm) {
    loop {
        match vmm.pidfd.wait(None) {
            Ok(true) => return,
            Ok(false) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                match procfs::stat(vmm.info.pid) {
                    Ok(st) if st.state != 'Z' && st.state != 'X' => {}
                    _ => return,
                }
            }
        }
    }
}

/// What an exit means for the VM. `report` is keel-vmm's exit report
/// (absent: it was killed or panicked; an error: unreadable).
pub(super) fn classify(
    report: Option<io::Result<ExitReport>>,
    status: Option<i32>,
    signal: Option<i32>,
    stop_requested: bool,
) -> ExitReason {
    if stop_requested {
        return ExitReason::Stopped;
    }
    let crashed = |message: String| ExitReason::Crashed {
        status,
        signal,
        message,
    };
    match report {
        Some(Ok(r)) => match r.reason {
            ExitCause::PoweredOff | ExitCause::Reset if r.status == 0 => ExitReason::PoweredOff,
            ExitCause::Stopped | ExitCause::ShutdownTimeout => ExitReason::Stopped,
            _ => ExitReason::Crashed {
                status: status.or(Some(r.status)),
                signal,
                message: r.message,
            },
        },
        Some(Err(e)) => crashed(format!("keel-vmm left an unreadable exit report: {e}")),
        None => crashed(match (status, signal) {
            (_, Some(sig)) => format!(
                "keel-vmm was killed by signal {sig}{}",
                signal_name(sig)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
            (Some(code), None) => {
                format!("keel-vmm exited with status {code} without an exit report")
            }
            (None, None) => "keel-vmm ended without an exit report (killed?)".into(),
        }),
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => return None,
    })
}

/// "keel-vmm exited with status N" / "keel-vmm was killed by signal N".
pub(super) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("keel-vmm exited with status {code}"),
        (None, Some(sig)) => format!("keel-vmm was killed by signal {sig}"),
        _ => "keel-vmm exited".into(),
    }
}

/// How much of the log's end is read for its last lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// The last `lines` non-empty lines of `log` (from `from` on, when given).
pub(super) fn log_tail(log: &Path, from: Option<u64>, lines: usize) -> Vec<String> {
    let Ok(mut f) = File::open(log) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len
        .saturating_sub(TAIL_BYTES)
        .max(from.unwrap_or(0).min(len));
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut all: Vec<&str> = text.lines().collect();
    // A read that began mid-file may begin mid-line.
    if start > from.unwrap_or(0) && !all.is_empty() {
        all.remove(0);
    }
    let kept: Vec<String> = all
        .into_iter()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    kept[kept.len().saturating_sub(lines)..].to_vec()
}

/// keel-vmm's last own message (`keel-vmm: …`) since `from`, without the
/// prefix: the reason it gave for failing.
pub(super) fn last_vmm_message(log: &Path, from: u64) -> Option<String> {
    log_tail(log, Some(from), LOG_TAIL_LINES)
        .into_iter()
        .rev()
        .find_map(|l| l.strip_prefix("keel-vmm: ").map(String::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: i32, reason: ExitCause, message: &str) -> Option<io::Result<ExitReport>> {
        Some(Ok(ExitReport {
            status,
            reason,
            message: message.into(),
        }))
    }

    #[test]
    fn exits_are_classified_from_the_report() {
        assert_eq!(
            classify(
                report(0, ExitCause::PoweredOff, "guest powered off"),
                Some(0),
                None,
                false
            ),
            ExitReason::PoweredOff
        );
        assert_eq!(
            classify(report(0, ExitCause::Reset, "reset"), None, None, false),
            ExitReason::PoweredOff
        );
        for cause in [ExitCause::Stopped, ExitCause::ShutdownTimeout] {
            assert_eq!(
                classify(report(5, cause, "m"), Some(5), None, false),
                ExitReason::Stopped
            );
        }
        assert_eq!(
            classify(
                report(3, ExitCause::TripleFault, "guest crashed"),
                None,
                None,
                false
            ),
            ExitReason::Crashed {
                status: Some(3),
                signal: None,
                message: "guest crashed".into()
            }
        );
        assert_eq!(
            classify(
                report(1, ExitCause::VmmError, "disk gone"),
                Some(1),
                None,
                false
            ),
            ExitReason::Crashed {
                status: Some(1),
                signal: None,
                message: "disk gone".into()
            }
        );
        // A status 0 that does not say powered off is not trusted.
        assert!(matches!(
            classify(report(0, ExitCause::Unknown, "?"), Some(0), None, false),
            ExitReason::Crashed { .. }
        ));
    }

    #[test]
    fn no_report_is_a_crash_unless_keeld_asked_for_the_stop() {
        assert_eq!(
            classify(None, None, Some(9), false),
            ExitReason::Crashed {
                status: None,
                signal: Some(9),
                message: "keel-vmm was killed by signal 9 (SIGKILL)".into()
            }
        );
        assert_eq!(classify(None, None, Some(9), true), ExitReason::Stopped);
        match classify(None, None, None, false) {
            ExitReason::Crashed { message, .. } => {
                assert!(message.contains("without an exit report"))
            }
            other => panic!("{other:?}"),
        }
        match classify(
            Some(Err(io::Error::new(io::ErrorKind::InvalidData, "bad"))),
            Some(0),
            None,
            false,
        ) {
            ExitReason::Crashed {
                status, message, ..
            } => {
                assert_eq!(status, Some(0));
                assert!(message.contains("unreadable"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_log_tail_is_this_runs_last_lines() {
        let dir = std::env::temp_dir().join(format!("keel-tail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("vmm.log");
        assert!(log_tail(&log, None, 5).is_empty());
        let earlier = "keel-vmm: an earlier run\n";
        let this = "keeld: starting\n\nkeel-vmm: Cannot open the kernel\n";
        std::fs::write(&log, format!("{earlier}{this}")).unwrap();
        let from = earlier.len() as u64;
        assert_eq!(
            log_tail(&log, Some(from), 20),
            ["keeld: starting", "keel-vmm: Cannot open the kernel"]
        );
        assert_eq!(
            log_tail(&log, None, 1),
            ["keel-vmm: Cannot open the kernel"]
        );
        assert_eq!(
            last_vmm_message(&log, from).as_deref(),
            Some("Cannot open the kernel")
        );
        assert_eq!(
            last_vmm_message(&log, (earlier.len() + this.len()) as u64),
            None
        );
        // A long log: only whole lines from its end.
        let long: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, &long).unwrap();
        assert_eq!(log_tail(&log, None, 2), ["line 4998", "line 4999"]);
        let all = log_tail(&log, None, 100_000);
        assert!(all[0].starts_with("line ") && all.len() < 5000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
