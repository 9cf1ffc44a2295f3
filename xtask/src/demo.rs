//! `cargo xtask run`: a whole Keel host (keeld with its defaults) and a demo
//! VM running the test guest, with the URL, the login and example `keel`
//! commands printed.
//!
//! On hardware KVM, keeld runs here in the foreground. Elsewhere (PVM, no
//! KVM: a stock kernel cannot boot on the local `/dev/kvm`), the rig's L1
//! image boots with keeld inside it, and QEMU's user networking forwards
//! `127.0.0.1:<port>` to it: that L1 image is the first form of Keel's
//! bootable host image. L1 keeps its host state (inventory, datastore,
//! certificate, admin password) on a disk image in the state directory, so
//! a second run finds the same host and the same demo VM.
//!
//! ```text
//! host: cargo xtask run ── QEMU TCG ── L1: keeld 0.0.0.0:8443 ── keel-vmm → demo (L2)
//!       127.0.0.1:8443 ──hostfwd──────────┘   /var/lib/keel = /dev/vda (STATE/l1-state.img)
//! ```

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::guest::Guest;
use crate::host::{self, Kvm};
use crate::paths;
use crate::proc::ChildGuard;
use crate::util::which;

/// The demo VM's name.
pub const DEMO_VM: &str = "demo";
/// The demo VM's kernel command line: the test guest without `keel.cmd`
/// gives a shell on its serial console.
pub const DEMO_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 quiet";
const DEMO_NOTES: &str = "The test guest of `cargo xtask run`: Debian's cloud kernel and a \
                          busybox initramfs with a shell on the serial console; \
                          `udhcpc -i eth0` gets an address on VM Network";
/// The demo VM's network adapter: keeld's default port group (a shell on
/// its console gets an address with `udhcpc -i eth0`).
pub const DEMO_NIC: &str = "VM Network";
/// keeld's port inside L1.
pub const L1_PORT: u16 = 8443;
/// How long keeld may take to listen (natively; L1 has no limit but
/// reports progress).
const NATIVE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run the demo host.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The port on 127.0.0.1 where the API is reached.
    pub port: u16,
    /// The host state (natively keeld's `--state-dir`; with the rig, where
    /// L1's state disk lives); [`default_state_dir`] when `None`.
    pub state_dir: Option<PathBuf>,
    /// The demo VM's vCPUs and memory (`256M`, `1G`).
    pub cpus: u32,
    pub memory: String,
    /// Where keeld runs.
    pub place: Place,
}

/// Where keeld runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Here on hardware KVM, else in the rig.
    Auto,
    /// Here, whatever the local KVM (where it cannot boot Linux, the demo
    /// VM fails to boot; for testing this path).
    Native,
    /// In the rig's L1, whatever the local KVM.
    Rig,
}

impl RunOptions {
    /// Whether keeld runs in the rig (probes /dev/kvm for [`Place::Auto`]).
    pub fn uses_rig(&self) -> bool {
        match self.place {
            Place::Auto => host::kvm() != Kvm::Hardware,
            Place::Native => false,
            Place::Rig => true,
        }
    }
}

/// The programs `cargo xtask run` builds.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub keel_vmm: PathBuf,
    pub keeld: PathBuf,
    pub keel: PathBuf,
}

/// `$XDG_DATA_HOME/keel-demo`, else `~/.local/share/keel-demo`, else (no
/// `$HOME`) `<target>/keel-demo`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("keel-demo");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/keel-demo"),
        None => paths::target_dir().join("keel-demo"),
    }
}

/// Where `cargo xtask run` keeps its logs and scratch files.
fn run_dir() -> PathBuf {
    paths::target_dir().join("keel-run")
}

/// Runs the demo host until Ctrl-C; returns the exit status for xtask.
pub fn run(opts: &RunOptions, bins: &Binaries, guest: &Guest) -> Result<i32> {
    let state_dir = match &opts.state_dir {
        Some(dir) => std::path::absolute(dir)
            .with_context(|| format!("Resolving --state-dir {}", dir.display()))?,
        None => default_state_dir(),
    };
    fs::create_dir_all(&state_dir)
        .with_context(|| format!("Creating the state directory {}", state_dir.display()))?;
    fs::create_dir_all(run_dir()).with_context(|| format!("Creating {}", run_dir().display()))?;
    match (opts.place, host::kvm()) {
        (Place::Native, _) | (Place::Auto, Kvm::Hardware) => {
            run_native(opts, bins, guest, &state_dir)
        }
        (_, kind) => {
            let why = match kind {
                Kvm::Hardware => "--rig".to_string(),
                Kvm::Pvm => "the local /dev/kvm is PVM, which boots no stock kernel".to_string(),
                Kvm::Unusable(why) => why,
            };
            l1::run_in_rig(opts, bins, &state_dir, &why)
        }
    }
}

// ---- Ctrl-C ----------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP set a flag instead of killing us,
/// so the children are stopped (or left running) on purpose. Children get
/// the default handlers back when they exec.
fn catch_interrupts() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `signal` has no other preconditions.
        let previous = unsafe { libc::signal(sig, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error()).context("Installing a signal handler");
        }
    }
    Ok(())
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

// ---- shared pieces -----------------------------------------------------------

/// Fails clearly when something already listens on `127.0.0.1:port`.
pub fn check_port_free(port: u16) -> Result<()> {
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "Port {port} on 127.0.0.1 is in use (another keeld or `cargo xtask run`?): \
             stop it or pass --port"
        ),
        Err(e) => Err(e).with_context(|| format!("Cannot listen on 127.0.0.1:{port}")),
    }
}

/// keeld's `keeld: listening on https://ADDR (certificate PATH, SHA-256 FP)`
/// line → (URL, fingerprint).
pub fn parse_listening(line: &str) -> Option<(String, Option<String>)> {
    let rest = &line[line.find("keeld: listening on ")? + "keeld: listening on ".len()..];
    let url = rest.split_whitespace().next()?.to_string();
    let fp = rest
        .split_once("SHA-256 ")
        .map(|(_, fp)| fp.trim().trim_end_matches(')').trim().to_string())
        .filter(|fp| !fp.is_empty());
    Some((url, fp))
}

/// The admin password as far as we can know it: the file keeld wrote on
/// first start, else `KEEL_ADMIN_PASSWORD` (which keeld used on first start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    Known { password: String, source: String },
    Unknown,
}

fn native_password(state_dir: &Path) -> Password {
    let file = state_dir.join("admin-password");
    if let Ok(text) = fs::read_to_string(&file) {
        if !text.trim().is_empty() {
            return Password::Known {
                password: text.trim().to_string(),
                source: format!("generated on first start, in {}", file.display()),
            };
        }
    }
    match std::env::var("KEEL_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => Password::Known {
            password: p,
            source: "KEEL_ADMIN_PASSWORD, if it was set on the first start".into(),
        },
        _ => Password::Unknown,
    }
}

/// What the banner tells.
#[derive(Clone, Debug)]
pub struct Banner {
    pub url: String,
    pub fingerprint: Option<String>,
    pub password: Password,
    /// `created`, `started`, `running` or `error: …`.
    pub demo: String,
    pub keel: PathBuf,
    pub web_ui: bool,
    /// Where keeld runs, for the title.
    pub place: String,
    /// What Ctrl-C does, and other closing lines.
    pub notes: Vec<String>,
}

/// The text printed once the host is up.
pub fn banner(b: &Banner) -> String {
    let mut t = String::new();
    let line = "─".repeat(72);
    t.push_str(&format!("{line}\nKeel host running ({})\n\n", b.place));
    t.push_str(&format!("  API          {}/api/v1\n", b.url));
    t.push_str(&format!("  OpenAPI      {}/api/v1/openapi.json\n", b.url));
    if b.web_ui {
        t.push_str(&format!("  Web UI       {}/\n", b.url));
    }
    if let Some(fp) = &b.fingerprint {
        t.push_str(&format!("  Certificate  self-signed, SHA-256 {fp}\n"));
    }
    t.push_str("  User         admin\n");
    match &b.password {
        Password::Known { password, source } => {
            t.push_str(&format!("  Password     {password}   ({source})\n"))
        }
        Password::Unknown => t.push_str(
            "  Password     the one given in KEEL_ADMIN_PASSWORD when this host first started\n",
        ),
    }
    let demo = match b.demo.as_str() {
        "created" => "created and powered on".to_string(),
        "started" => "powered on".to_string(),
        "running" => "already powered on".to_string(),
        other => other.to_string(),
    };
    t.push_str(&format!("  Demo VM      {DEMO_VM}: {demo}\n\n"));
    let keel = b.keel.display();
    let trust = match &b.fingerprint {
        Some(fp) => format!(" --trust-fingerprint {fp}"),
        None => " --insecure".to_string(),
    };
    t.push_str("Try (the CLI is ");
    t.push_str(&format!("{keel}; `keel login` asks for the password):\n"));
    t.push_str(&format!("  {keel} --host {}{trust} login\n", b.url));
    t.push_str(&format!("  {keel} vm list\n"));
    t.push_str(&format!(
        "  {keel} vm console {DEMO_VM}     # a shell in the guest; the detach keys are printed\n"
    ));
    t.push_str(&format!("  curl -k {}/api/v1/openapi.json\n", b.url));
    for note in &b.notes {
        t.push('\n');
        t.push_str(note);
    }
    t.push_str(&format!("\n{line}\n"));
    t
}

/// The web client's built assets, when they exist (`ui/dist`).
fn ui_dir() -> Option<PathBuf> {
    let dir = paths::workspace_root().join("ui").join("dist");
    dir.join("index.html").is_file().then_some(dir)
}

/// A copy of `src` in `dir` without debug information (what L1 unpacks
/// under TCG shrinks several times), reused while newer than `src`; `src`
/// itself when `strip` is missing or `src` is no ELF file.
pub fn stripped(src: &Path, dir: &Path) -> Result<PathBuf> {
    let Some(name) = src.file_name() else {
        bail!("{} has no file name", src.display());
    };
    let mut magic = [0u8; 4];
    let is_elf = fs::File::open(src)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && crate::elf::is_elf(&magic);
    let Some(strip) = which("strip").filter(|_| is_elf) else {
        return Ok(src.to_path_buf());
    };
    let dest = dir.join(name);
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(s), Some(d)) = (mtime(src), mtime(&dest)) {
        if d >= s {
            return Ok(dest);
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("Creating {}", dir.display()))?;
    crate::util::run_captured(
        Command::new(strip)
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dest)
            .arg(src),
    )?;
    Ok(dest)
}

// ---- natively ---------------------------------------------------------------

fn run_native(opts: &RunOptions, bins: &Binaries, guest: &Guest, state_dir: &Path) -> Result<i32> {
    check_port_free(opts.port)?;
    let listen = format!("127.0.0.1:{}", opts.port);
    let mut cmd = Command::new(&bins.keeld);
    cmd.arg("--state-dir")
        .arg(state_dir)
        .args(["--listen", &listen])
        .arg("--keel-vmm")
        .arg(&bins.keel_vmm)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let web_ui = ui_dir();
    if let Some(ui) = &web_ui {
        cmd.arg("--ui-dir").arg(ui);
    }
    catch_interrupts()?;
    eprintln!(
        "xtask: starting keeld on https://{listen} with its state in {}",
        state_dir.display()
    );
    // In the terminal's process group: Ctrl-C reaches keeld itself, which
    // stops and leaves its VMs running.
    let mut keeld = ChildGuard::spawn(&mut cmd, false)?;
    let stderr = keeld.child_mut().stderr.take().context("keeld's stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            eprintln!("{line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + NATIVE_START_TIMEOUT;
    let (url, fingerprint) = loop {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(found) = parse_listening(&line) {
                break found;
            }
        }
        if let Some(status) = keeld.wait_timeout(Duration::ZERO)? {
            bail!("keeld stopped ({status}) before it listened: see its messages above");
        }
        if interrupted() {
            return Ok(stop_native(&mut keeld));
        }
        if Instant::now() > deadline {
            bail!(
                "keeld did not listen within {} s",
                NATIVE_START_TIMEOUT.as_secs()
            );
        }
    };
    let password = native_password(state_dir);
    let demo = match &password {
        Password::Known { password, .. } => {
            eprintln!("xtask: making sure the demo VM runs");
            native_demo(opts, bins, guest, &url, fingerprint.as_deref(), password)
                .unwrap_or_else(|e| format!("error: {e:#}"))
        }
        Password::Unknown => "error: the admin password is unknown (set KEEL_ADMIN_PASSWORD \
                              to the one of this host's first start)"
            .to_string(),
    };
    let keel = &bins.keel;
    print!(
        "{}",
        banner(&Banner {
            url,
            fingerprint,
            password,
            demo,
            keel: keel.clone(),
            web_ui: web_ui.is_some(),
            place: format!("keeld here, state in {}", state_dir.display()),
            notes: vec![format!(
                "Ctrl-C stops keeld. VMs keep running without it (each in its own keel-vmm \
                 process), and the next\n`cargo xtask run` finds them again. To stop the demo \
                 VM first: {} vm stop {DEMO_VM}\n(or `vm shutdown` to ask the guest).",
                keel.display()
            )],
        })
    );
    let status = loop {
        if let Some(status) = keeld.wait_timeout(Duration::from_millis(200))? {
            break status;
        }
        if interrupted() {
            return Ok(stop_native(&mut keeld));
        }
    };
    eprintln!("xtask: keeld stopped ({status}); running VMs keep running");
    Ok(if status.success() { 0 } else { 1 })
}

/// Stops keeld (SIGTERM; Ctrl-C has usually reached it already).
fn stop_native(keeld: &mut ChildGuard) -> i32 {
    let _ = keeld.signal(libc::SIGTERM);
    let status = keeld.wait_timeout(Duration::from_secs(15)).ok().flatten();
    if status.is_none() {
        keeld.kill();
    }
    eprintln!(
        "xtask: keeld stopped; VMs keep running (`keel vm stop {DEMO_VM}` stops the demo VM \
         next time)"
    );
    0
}

/// Logs in with the CLI (its own config directory, so the person's stays
/// untouched) and makes sure the demo VM exists and is powered on.
fn native_demo(
    opts: &RunOptions,
    bins: &Binaries,
    guest: &Guest,
    url: &str,
    fingerprint: Option<&str>,
    password: &str,
) -> Result<String> {
    let config = run_dir().join("keel-cli");
    let keel = |args: &[&str]| -> Result<(bool, String)> {
        let mut cmd = Command::new(&bins.keel);
        cmd.args(["--host", url]);
        match fingerprint {
            Some(fp) => cmd.args(["--trust-fingerprint", fp]),
            None => cmd.arg("--insecure"),
        };
        let out = cmd
            .args(args)
            .env("KEEL_CONFIG_DIR", &config)
            .env("KEEL_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("Running {}", bins.keel.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text.trim().to_string()))
    };
    let (ok, text) = keel(&["login"])?;
    if !ok {
        bail!("keel login failed: {text}");
    }
    let (exists, shown) = keel(&["vm", "show", DEMO_VM])?;
    if exists {
        if shown_state(&shown).as_deref() == Some("poweredOn") {
            return Ok("running".into());
        }
        let (ok, text) = keel(&["vm", "start", DEMO_VM])?;
        if !ok {
            bail!("keel vm start {DEMO_VM} failed: {text}");
        }
        return Ok("started".into());
    }
    let kernel = guest.vmlinuz.display().to_string();
    let initrd = guest.initramfs.display().to_string();
    let cpus = opts.cpus.to_string();
    let (ok, text) = keel(&[
        "vm",
        "create",
        DEMO_VM,
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--cmdline",
        DEMO_CMDLINE,
        "--cpus",
        &cpus,
        "--memory",
        &opts.memory,
        "--notes",
        DEMO_NOTES,
        "--nic",
        DEMO_NIC,
        "--start",
    ])?;
    if !ok {
        bail!("keel vm create {DEMO_VM} failed: {text}");
    }
    Ok("created".into())
}

/// The `State:` of `keel vm show`.
fn shown_state(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map(|s| s.trim().to_string())
}

mod l1;
pub use l1::{l1_script, parse_l1_line, L1Event, L1Script, STATE_IMAGE};

#[cfg(test)]
mod tests;
