//! The demo host in the rig's L1 (see [`super`]): the script L1 runs, the
//! `KEEL-RUN-*` lines it reports with, and the loop that follows L1's
//! console until Ctrl-C.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{
    banner, catch_interrupts, check_port_free, interrupted, parse_listening, run_dir, stripped,
    ui_dir, Banner, Binaries, Password, RunOptions, DEMO_CMDLINE, DEMO_NOTES, DEMO_VM, L1_PORT,
};
use crate::host;
use crate::rig::{self, RigOptions};

/// L1's state disk in the state directory, and its size (sparse).
pub const STATE_IMAGE: &str = "l1-state.img";
pub(super) const STATE_IMAGE_BYTES: u64 = 8 << 30;
/// L1's memory: keeld, the demo VM and room for a few more.
const L1_MEMORY_MIB: u32 = 2048;

/// What the L1 script needs to know.
#[derive(Clone, Debug)]
pub struct L1Script {
    pub cpus: u32,
    pub memory: String,
    /// Passed to keeld as KEEL_ADMIN_PASSWORD (used on the first start).
    pub admin_password: Option<String>,
    /// `--ui-dir` in L1.
    pub ui_dir: Option<String>,
}

/// The shell script L1 runs (after the rig's prelude has loaded the virtio
/// drivers and configured the network): mount (first format) the state
/// disk, start keeld, log in with the CLI, make sure the demo VM runs, then
/// wait for keeld. It reports to the host with `KEEL-RUN-*` lines.
pub fn l1_script(s: &L1Script) -> String {
    let q = rig::shell_quote;
    let password = match &s.admin_password {
        Some(p) => format!("export KEEL_ADMIN_PASSWORD={}\n", q(p)),
        None => "unset KEEL_ADMIN_PASSWORD\n".to_string(),
    };
    let ui = match &s.ui_dir {
        Some(dir) => format!(" --ui-dir {}", q(dir)),
        None => String::new(),
    };
    let create = format!(
        "keel vm create {DEMO_VM} --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
         --cmdline {} --cpus {} --memory {} --notes {} --nic {} --start",
        q(DEMO_CMDLINE),
        s.cpus,
        q(&s.memory),
        q(DEMO_NOTES),
        q(super::DEMO_NIC)
    );
    format!(
        r#"set -u
echo KEEL-RUN-BOOTED
hostname keel-host
state=/var/lib/keel
mkdir -p "$state"
if ! dumpe2fs -h /dev/vda >/dev/null 2>&1; then
    echo 'keel-run: formatting the state disk (first run)'
    mkfs.ext4 -q -L keel-state -E lazy_itable_init=1,lazy_journal_init=1 /dev/vda ||
        {{ echo 'KEEL-RUN-ERROR=cannot format the state disk /dev/vda'; exit 1; }}
fi
mount -t ext4 -o noinit_itable /dev/vda "$state" ||
    {{ echo 'KEEL-RUN-ERROR=cannot mount the state disk /dev/vda'; exit 1; }}
{password}keeld --state-dir "$state" --listen 0.0.0.0:{L1_PORT} --keel-vmm /usr/bin/keel-vmm{ui} >/tmp/keeld.log 2>&1 &
keeld_pid=$!
tail -n +1 -f /tmp/keeld.log &
until grep -q 'keeld: listening on' /tmp/keeld.log; do
    if ! kill -0 "$keeld_pid" 2>/dev/null; then
        wait "$keeld_pid"
        echo "KEEL-RUN-ERROR=keeld stopped (status $?) before it listened"
        exit 1
    fi
    sleep 0.5
done
fp=$(sed -n 's/.*SHA-256 \([0-9A-Fa-f:]*\)).*/\1/p' /tmp/keeld.log | head -n 1)
echo "KEEL-RUN-FINGERPRINT=$fp"
if [ -f "$state/admin-password" ]; then
    pw=$(cat "$state/admin-password")
    echo "KEEL-RUN-PASSWORD=$pw"
elif [ -n "${{KEEL_ADMIN_PASSWORD:-}}" ]; then
    pw=$KEEL_ADMIN_PASSWORD
else
    pw=
    echo KEEL-RUN-PASSWORD-UNKNOWN
fi
export KEEL_PASSWORD="$pw" KEEL_HOST=https://127.0.0.1:{L1_PORT}
echo 'keel-run: logging in and making sure the demo VM runs'
if ! keel --trust-fingerprint "$fp" login >/tmp/keel.out 2>&1; then
    cat /tmp/keel.out
    echo 'KEEL-RUN-DEMO=error: keel login failed (see the console log)'
elif keel vm show {DEMO_VM} >/tmp/keel.out 2>&1; then
    if grep -q '^State: *poweredOn' /tmp/keel.out; then
        echo KEEL-RUN-DEMO=running
    elif keel vm start {DEMO_VM} >/tmp/keel.out 2>&1; then
        echo KEEL-RUN-DEMO=started
    else
        cat /tmp/keel.out
        echo 'KEEL-RUN-DEMO=error: keel vm start {DEMO_VM} failed (see the console log)'
    fi
elif {create} >/tmp/keel.out 2>&1; then
    echo KEEL-RUN-DEMO=created
else
    cat /tmp/keel.out
    echo 'KEEL-RUN-DEMO=error: keel vm create {DEMO_VM} failed (see the console log)'
fi
echo KEEL-RUN-READY
wait "$keeld_pid"
echo "KEEL-RUN-ERROR=keeld stopped (status $?)"
"#
    )
}

/// A line of L1's console that means something to the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L1Event {
    /// The script started: L1 booted and has KVM.
    Booted,
    /// keeld's listening line (echoed from its log, maybe late).
    Listening,
    /// The certificate's SHA-256 fingerprint, as the script read it.
    Fingerprint(String),
    Password(String),
    PasswordUnknown,
    /// `created`, `started`, `running` or `error: …`.
    Demo(String),
    Ready,
    /// The script gave up, or the rig's /init reported a problem.
    Error(String),
}

pub fn parse_l1_line(line: &str) -> Option<L1Event> {
    let line = line.trim();
    if parse_listening(line).is_some() {
        return Some(L1Event::Listening);
    }
    if line == "KEEL-RUN-BOOTED" {
        return Some(L1Event::Booted);
    }
    if line == "KEEL-RUN-READY" {
        return Some(L1Event::Ready);
    }
    if line == "KEEL-RUN-PASSWORD-UNKNOWN" {
        return Some(L1Event::PasswordUnknown);
    }
    if let Some(fp) = line.strip_prefix("KEEL-RUN-FINGERPRINT=") {
        return (!fp.is_empty()).then(|| L1Event::Fingerprint(fp.to_string()));
    }
    if let Some(p) = line.strip_prefix("KEEL-RUN-PASSWORD=") {
        return Some(L1Event::Password(p.to_string()));
    }
    if let Some(d) = line.strip_prefix("KEEL-RUN-DEMO=") {
        return Some(L1Event::Demo(d.to_string()));
    }
    if let Some(e) = line.strip_prefix("KEEL-RUN-ERROR=") {
        return Some(L1Event::Error(e.to_string()));
    }
    for prefix in ["KEEL-RIG-ERROR: ", "KEEL-RIG-NOKVM: "] {
        if let Some(e) = line.strip_prefix(prefix) {
            return Some(L1Event::Error(e.to_string()));
        }
    }
    None
}

/// Reads the lines a growing file gains.
pub(super) struct Follow {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Follow {
    pub(super) fn new(path: &Path) -> Follow {
        Follow {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last call.
    pub(super) fn lines(&mut self) -> Vec<String> {
        let Ok(mut file) = fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if let Ok(n) = file.read_to_end(&mut buf) {
            self.offset += n as u64;
        }
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        rig::normalize(&complete)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Creates L1's state disk (sparse) unless it exists.
pub(super) fn ensure_state_image(path: &Path) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("Creating {}", path.display()))?;
    file.set_len(STATE_IMAGE_BYTES)
        .with_context(|| format!("Sizing {}", path.display()))?;
    Ok(true)
}

pub(super) fn run_in_rig(
    opts: &RunOptions,
    bins: &Binaries,
    state_dir: &Path,
    why: &str,
) -> Result<i32> {
    host::ensure(&[host::QEMU])?;
    check_port_free(opts.port)?;
    let image = state_dir.join(STATE_IMAGE);
    let fresh = ensure_state_image(&image)?;
    let bin_dir = run_dir().join("bin");
    let keel_vmm = stripped(&bins.keel_vmm, &bin_dir)?;
    let keeld = stripped(&bins.keeld, &bin_dir)?;
    let keel = stripped(&bins.keel, &bin_dir)?;
    let mut files = Vec::new();
    let web_ui = ui_dir();
    if let Some(ui) = &web_ui {
        files.push((ui.clone(), "/usr/share/keel/ui".to_string()));
    }
    let admin_password = std::env::var("KEEL_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let script = l1_script(&L1Script {
        cpus: opts.cpus,
        memory: opts.memory.clone(),
        admin_password: admin_password.clone(),
        ui_dir: web_ui.as_ref().map(|_| "/usr/share/keel/ui".to_string()),
    });
    let rig_opts = RigOptions {
        cpus: 2,
        memory_mib: L1_MEMORY_MIB,
        files,
        keel_vmm: Some(keel_vmm),
        programs: vec![
            (keeld, "/usr/bin/keeld".into()),
            (keel, "/usr/bin/keel".into()),
        ],
        disks: vec![image.clone()],
        host_forward: Some((opts.port, L1_PORT)),
        ..RigOptions::default()
    };
    let console_log = run_dir().join("l1-console.log");
    eprintln!(
        "xtask: {why}: booting Keel's host image (the rig's L1 under QEMU TCG, slow: allow a \
         minute or two)\nxtask: keeld in L1 on port {L1_PORT}, forwarded to \
         https://127.0.0.1:{}\nxtask: L1's state disk: {}{}\nxtask: L1's console: {}",
        opts.port,
        image.display(),
        if fresh { " (new)" } else { "" },
        console_log.display()
    );
    catch_interrupts()?;
    let started = Instant::now();
    let mut l1 = rig::spawn(&rig_opts, &script, &console_log)?;
    let mut follow = Follow::new(&console_log);
    let mut fingerprint = None;
    let mut password = match admin_password {
        Some(p) => Password::Known {
            password: p,
            source: "KEEL_ADMIN_PASSWORD, if it was set on the first start".into(),
        },
        None => Password::Unknown,
    };
    let mut demo = String::from("error: not reported");
    let secs = |t: Instant| t.elapsed().as_secs_f64();
    loop {
        for line in follow.lines() {
            match parse_l1_line(&line) {
                Some(L1Event::Booted) => {
                    eprintln!("xtask: L1 booted after {:.0} s", secs(started))
                }
                Some(L1Event::Listening) => {}
                Some(L1Event::Fingerprint(fp)) => {
                    eprintln!("xtask: keeld listens in L1 ({:.0} s)", secs(started));
                    fingerprint = Some(fp);
                }
                Some(L1Event::Password(p)) => {
                    password = Password::Known {
                        password: p,
                        source: "generated on first start, in L1's \
                                 /var/lib/keel/admin-password"
                            .into(),
                    }
                }
                Some(L1Event::PasswordUnknown) => {}
                Some(L1Event::Demo(d)) => demo = d,
                Some(L1Event::Error(e)) => eprintln!("xtask: L1: {e}"),
                Some(L1Event::Ready) => {
                    eprintln!("xtask: ready after {:.0} s", secs(started));
                    print!(
                        "{}",
                        banner(&Banner {
                            url: format!("https://127.0.0.1:{}", opts.port),
                            fingerprint: fingerprint.clone(),
                            password: password.clone(),
                            demo: demo.clone(),
                            keel: bins.keel.clone(),
                            web_ui: web_ui.is_some(),
                            place: format!(
                                "keeld in the rig's L1 VM, its port forwarded to 127.0.0.1:{}",
                                opts.port
                            ),
                            notes: vec![format!(
                                "L1's console (keeld's log): {}\n\
                                 Ctrl-C stops L1 and the VMs in it. The host's state stays on \
                                 {},\nso the next `cargo xtask run` finds the same host, \
                                 certificate and VMs (delete the file to start afresh).",
                                console_log.display(),
                                image.display()
                            )],
                        })
                    );
                }
                None => {}
            }
        }
        if interrupted() {
            l1.stop();
            eprintln!("xtask: stopped L1 (its state stays on {})", image.display());
            return Ok(0);
        }
        if let Some(status) = l1.try_wait()? {
            return Err(l1_ended(
                status,
                &l1.qemu_errors(),
                &console_log,
                opts.port,
                &image,
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The error for an L1 that ended by itself.
pub(super) fn l1_ended(
    status: ExitStatus,
    qemu_errors: &str,
    console_log: &Path,
    port: u16,
    image: &Path,
) -> anyhow::Error {
    if qemu_errors.contains("Could not set up host forwarding rule") {
        return anyhow::anyhow!(
            "QEMU cannot forward 127.0.0.1:{port} (in use?): stop what listens there or pass --port"
        );
    }
    if qemu_errors.contains("\"write\" lock") {
        return anyhow::anyhow!(
            "{} is in use by another QEMU (another `cargo xtask run`?): stop it or pass \
             --state-dir",
            image.display()
        );
    }
    let console = fs::read(console_log).unwrap_or_default();
    anyhow::anyhow!(
        "L1 ended (QEMU {status}){}{}\nL1's console ({}) ended with:\n{}",
        if qemu_errors.is_empty() {
            ""
        } else {
            "; QEMU said:\n"
        },
        qemu_errors,
        console_log.display(),
        rig::tail(&rig::normalize(&console), 25)
    )
}
