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
    /// The web Host Client's built assets (ui/dist).
    #[arg(long, value_name = "DIR")]
    ui_dir: Option<PathBuf>,
    /// The keel-vmm binary (default: beside keeld, then $PATH).
    #[arg(long, value_name = "PATH")]
    keel_vmm: Option<PathBuf>,
    /// Extra names for the self-signed certificate (hostnames, addresses).
    #[arg(long = "cert-name", value_name = "NAME")]
    cert_names: Vec<String>,
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

fn run(args: Args) -> anyhow::Result<()> {
    let keel_vmm = keel_vmm_path(args.keel_vmm)?;
    let admin_password = std::env::var("KEEL_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let opened = Host::open(HostOptions {
        state_dir: args.state_dir.clone(),
        keel_vmm,
        admin_password,
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
        let app = keeld::router(keeld::AppState {
            host: opened.host.clone(),
            ui_dir: args.ui_dir,
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
