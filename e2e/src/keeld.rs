//! A real keeld for end-to-end tests: its own temporary state directory, a
//! loopback port chosen by the kernel, HTTPS with its self-signed
//! certificate pinned by fingerprint, and the `keel` CLI pointed at it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use client::{Client, Credentials, Trust};

/// The admin password every test keeld gets.
pub const ADMIN_PASSWORD: &str = "test-admin-pw";

/// A binary of this workspace beside the test executable, brought up to
/// date with `cargo build -p PACKAGE` (once per test process; cargo test
/// does not rebuild binaries of other packages).
pub fn workspace_bin(package: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(package) {
        return p.clone();
    }
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(package)))
        .unwrap_or_else(|| xtask::paths::target_dir().join("debug").join(package));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package])
        .current_dir(xtask::paths::workspace_root())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    assert!(path.exists(), "{} does not exist", path.display());
    built.insert(package.to_string(), path.clone());
    path
}

thread_local! {
    static PRIVATE_NET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Moves the calling thread (a test's) into a network namespace of its
/// own, once, with loopback up: the keeld it starts, its keel-vmm
/// processes and the test's clients all live there, so keeld's bridges,
/// NAT rules, DHCP servers and TAPs never touch the machine's network and
/// vanish with the test, also when it fails.
pub fn private_netns() {
    PRIVATE_NET.with(|done| {
        if done.get() {
            return;
        }
        // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's
        // network namespace; no memory is involved.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "cannot create a network namespace for keeld (root needed): {}",
                std::io::Error::last_os_error()
            );
        }
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("running ip (iproute2)");
        assert!(up.success(), "ip link set lo up failed");
        done.set(true);
    });
}

/// keeld and keel, built once per test binary.
fn bins() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        crate::keel_vmm();
        (workspace_bin("keeld"), workspace_bin("keel"))
    })
}

/// A running keeld. Dropping it kills keeld and every keel-vmm it started
/// (found by the state directory in their command lines), then removes the
/// state directory.
pub struct Keeld {
    pub state: PathBuf,
    pub url: String,
    pub fingerprint: String,
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Keeld {
    /// Starts keeld on a fresh state directory named after the test.
    pub fn start(name: &str) -> Keeld {
        let state = std::env::temp_dir().join(format!("keel-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        Self::start_in(state)
    }

    /// Starts keeld on `state` (which may hold a previous keeld's state),
    /// in the calling thread's private network namespace.
    pub fn start_in(state: PathBuf) -> Keeld {
        private_netns();
        let (keeld, _) = bins();
        let mut child = Command::new(keeld)
            .arg("--state-dir")
            .arg(&state)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--keel-vmm")
            .arg(crate::keel_vmm())
            .env("KEEL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting keeld");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("keeld's stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut k = Keeld {
            state,
            url: String::new(),
            fingerprint: String::new(),
            child: Some(child),
            stderr: rx,
            log: Vec::new(),
        };
        let end = Instant::now() + Duration::from_secs(60);
        while k.url.is_empty() {
            let left = end.saturating_duration_since(Instant::now());
            match k.stderr.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("keeld: listening on ") {
                        let url = rest.split_whitespace().next().unwrap_or("");
                        k.url = url.to_string();
                        if let Some(fp) = rest.split("SHA-256 ").nth(1) {
                            k.fingerprint = fp.trim_end_matches(')').to_string();
                        }
                    }
                    k.log.push(line);
                }
                Err(_) => panic!("keeld did not start:\n{}", k.log.join("\n")),
            }
        }
        k
    }

    /// More of keeld's stderr (what arrived so far).
    pub fn drain_log(&mut self) -> String {
        while let Ok(line) = self.stderr.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Stops keeld with `signal` (SIGTERM, SIGKILL) and waits for it; its
    /// VMs keep running. The state directory stays for the next start.
    pub fn stop_with(mut self, signal: i32) -> PathBuf {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, signal) };
            let _ = c.wait();
        }
        let state = std::mem::take(&mut self.state);
        std::mem::forget(self);
        state
    }

    /// A client logged in as admin (HTTP Basic, no session).
    pub fn admin(&self) -> Client {
        self.client_as("admin", ADMIN_PASSWORD)
    }

    pub fn client_as(&self, user: &str, password: &str) -> Client {
        self.anonymous().with_credentials(Credentials::Password {
            user: user.into(),
            password: password.into(),
        })
    }

    /// A client with no credentials, trusting keeld's certificate.
    pub fn anonymous(&self) -> Client {
        let host = self.url.trim_start_matches("https://");
        let (h, p) = host.rsplit_once(':').expect("host:port");
        let der = client::fetch_certificate(h, p.parse().expect("port")).expect("certificate");
        assert_eq!(
            client::fingerprint(&der),
            self.fingerprint,
            "keeld printed its fingerprint"
        );
        Client::new(&self.url, Trust::Pinned(der)).expect("client")
    }

    /// Runs the `keel` CLI against this keeld as `user` (password through
    /// the environment), with its own config directory.
    pub fn keel(&self, user: &str, password: &str, args: &[&str]) -> Output {
        let (_, keel) = bins();
        let config = self.state.join("cli-config");
        Command::new(keel)
            .args([
                "--host",
                &self.url,
                "--trust-fingerprint",
                &self.fingerprint,
            ])
            .args(["--user", user])
            .args(args)
            .env("KEEL_CONFIG_DIR", &config)
            .env("KEEL_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("running keel")
    }

    /// `keel` as admin; panics with its output unless it succeeded.
    pub fn keel_ok(&self, args: &[&str]) -> String {
        let out = self.keel("admin", ADMIN_PASSWORD, args);
        assert!(
            out.status.success(),
            "keel {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Keeld {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.state.as_os_str().is_empty() {
            kill_vmms_of(&self.state);
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

/// Kills every process whose command line mentions `state` (the VMMs a
/// test's keeld started, which outlive keeld by design) and removes it.
pub fn cleanup_state(state: &Path) {
    kill_vmms_of(state);
    let _ = std::fs::remove_dir_all(state);
}

fn kill_vmms_of(state: &Path) {
    let needle = state.to_string_lossy().into_owned();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) && pid != std::process::id() as i32 {
            // SAFETY: kill(2) on a process this test started (its command
            // line names the test's own state directory).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The start of every script [`keeld_session`] runs: keeld on
/// 127.0.0.1:8443 with a state directory in the working directory, `$KEELD`
/// its pid, `$K` the CLI as admin with keeld's certificate pinned.
const KEELD_SESSION_PRELUDE: &str = r#"set -u
export KEEL_ADMIN_PASSWORD=rig-admin-pw KEEL_PASSWORD=rig-admin-pw KEEL_CONFIG_DIR=$PWD/cli
chmod +x keeld keel keel-vmm
./keeld --state-dir $PWD/state --listen 127.0.0.1:8443 --keel-vmm $PWD/keel-vmm > keeld.log 2>&1 </dev/null &
KEELD=$!
i=0; while ! grep -q 'listening on' keeld.log && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
FP=$(sed -n 's/.*SHA-256 \([0-9A-F:]*\)).*/\1/p' keeld.log)
K="./keel --host https://127.0.0.1:8443 --trust-fingerprint $FP --user admin"
"#;

/// keeld with real Linux guests (natively on hardware KVM, else in the KVM
/// rig): a session with keeld, keel and keel-vmm (stripped: the rig carries
/// its files in RAM) and the test guest as `vmlinuz` and
/// `initramfs.cpio.gz`, running `script` after [`KEELD_SESSION_PRELUDE`];
/// `extra` adds to the session's time limit. None when skipped.
pub fn keeld_session(tag: &str, script: &str, extra: Duration) -> Option<crate::SessionOutput> {
    let tmp = std::env::temp_dir().join(format!("keel-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("a temporary directory");
    let guest = xtask::guest::build().expect("building the test guest");
    let strip = |bin: &Path| xtask::demo::stripped(bin, &tmp).expect("stripping a binary");
    let (keeld, keel) = bins();
    let out = crate::Session::new()
        .file(&strip(keeld), "keeld")
        .file(&strip(keel), "keel")
        .file(&strip(crate::keel_vmm()), "keel-vmm")
        .file(&guest.vmlinuz, "vmlinuz")
        .file(&guest.initramfs, "initramfs.cpio.gz")
        .sh(&format!("{KEELD_SESSION_PRELUDE}{script}"))
        .extra_time(extra)
        .run();
    let _ = std::fs::remove_dir_all(&tmp);
    out
}
