//! keeld: the Keel host daemon. Parses its flags, opens the host's state
//! (hostd-core) and serves the API (the keeld library).
//!
//! Stopping keeld (SIGTERM, SIGINT) never stops a VM: each runs in its own
//! keel-vmm process, and the next keeld re-attaches to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hostd_core::{Host, HostOptions};

#[derive(Parser)]
#[command(
    name = "keeld",
    version,
    about = "The Keel host daemon: manages this machine's virtual machines"
)]
struct Args {
    /// Where the inventory, datastores, certificates and runtime files live.
    #[arg(long, default_value = "/var/lib/keel", value_name = "DIR")]
    state_dir: PathBuf,
    /// Address and port of the API and the web client.
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS (only for a trusted network or a
    /// TLS proxy in front).
    #[arg(long)]
    insecure_http: bool,
    /// The web Host Client's built assets (default: `<keeld's
    /// folder>/../../ui/dist` in a development tree, else /usr/share/keel/ui).
    #[arg(long, value_name = "DIR")]
    ui_dir: Option<PathBuf>,
    /// The keel-vmm binary (default: beside keeld, then $PATH).
    #[arg(long, value_name = "PATH")]
    keel_vmm: Option<PathBuf>,
    /// Extra names for the self-signed certificate (hostnames, addresses).
    #[arg(long = "cert-name", value_name = "NAME")]
    cert_names: Vec<String>,
    /// The default network's subnet, used on first start only (default:
    /// the first of 10.77.0.0/24, 10.177.0.0/24, 172.31.77.0/24,
    /// 192.168.77.0/24 that does not overlap the host's networks).
    #[arg(long, value_name = "CIDR")]
    vm_network_subnet: Option<String>,
    /// Keep switches and port groups in the inventory only: no bridges,
    /// NAT, DHCP or TAPs on this host (VMs with network adapters on port
    /// groups cannot power on).
    #[arg(long)]
    no_host_network: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keeld: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn keel_vmm_path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        anyhow::ensure!(p.is_file(), "--keel-vmm {} is not a file", p.display());
        return Ok(p);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        let p = dir.join("keel-vmm");
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("keel-vmm");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    anyhow::bail!("Cannot find keel-vmm beside keeld or in $PATH: give it with --keel-vmm PATH")
}

/// Where the installed UI lives on a host.
const SYSTEM_UI_DIR: &str = "/usr/share/keel/ui";

/// The web Host Client's assets: `--ui-dir`, else `ui/dist` of the
/// development tree keeld was built in (`target/debug/keeld` →
/// `ui/dist`), else the system's. `None` when none holds an index.html.
fn ui_dir(flag: Option<PathBuf>) -> Option<PathBuf> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from));
    let candidates = match flag {
        Some(dir) => vec![dir],
        None => exe_dir
            .map(|d| d.join("../../ui/dist"))
            .into_iter()
            .chain([PathBuf::from(SYSTEM_UI_DIR)])
            .collect(),
    };
    candidates
        .into_iter()
        .find(|d| d.join("index.html").is_file())
        .map(|d| d.canonicalize().unwrap_or(d))
}

fn run(args: Args) -> anyhow::Result<()> {
    let keel_vmm = keel_vmm_path(args.keel_vmm)?;
    let ui_flag = args.ui_dir.clone();
    let ui_dir = ui_dir(args.ui_dir);
    let ui_line = match (&ui_dir, &ui_flag) {
        (Some(dir), _) => format!("from {}", dir.display()),
        (None, Some(flag)) => format!(
            "not built: no index.html in --ui-dir {} (/ shows a notice page)",
            flag.display()
        ),
        (None, None) => format!(
            "not built: no ui/dist beside the source tree nor {SYSTEM_UI_DIR} \
             (`cargo xtask ui build`; / shows a notice page)"
        ),
    };
    let admin_password = std::env::var("KEEL_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let opened = Host::open(HostOptions {
        state_dir: args.state_dir.clone(),
        keel_vmm,
        admin_password,
        vm_network_subnet: args.vm_network_subnet.clone(),
        host_network: !args.no_host_network,
    })
    .with_context(|| format!("Cannot open the host state in {}", args.state_dir.display()))?;
    if opened.first_start {
        eprintln!(
            "keeld: created the host state in {}",
            args.state_dir.display()
        );
        match &opened.admin_password_file {
            Some(f) => eprintln!(
                "keeld: the password of user 'admin' is in {} (readable by root only)",
                f.display()
            ),
            None => eprintln!("keeld: user 'admin' has the password from KEEL_ADMIN_PASSWORD"),
        }
    }
    let tls = if args.insecure_http {
        None
    } else {
        let setup =
            keeld::tls::TlsSetup::load_or_create(&args.state_dir.join("tls"), &args.cert_names)?;
        Some(setup)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("keeld-http")
        .build()
        .context("Cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("Cannot listen on {}", args.listen))?;
        let local = listener.local_addr().unwrap_or(args.listen);
        match &tls {
            Some(t) => eprintln!(
                "keeld: listening on https://{local} (certificate {}, SHA-256 {})",
                t.cert_path.display(),
                t.fingerprint
            ),
            None => eprintln!("keeld: listening on http://{local} (plain HTTP: --insecure-http)"),
        }
        eprintln!("keeld: web Host Client {ui_line}");
        let app = keeld::router(keeld::AppState {
            host: opened.host.clone(),
            ui_dir,
        });
        keeld::serve(listener, tls, app, shutdown_signal())
            .await
            .context("The HTTP server failed")?;
        eprintln!("keeld: stopping (running VMs keep running)");
        anyhow::Ok(())
    })?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
