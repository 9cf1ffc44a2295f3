//! keel: the command line of a Keel host. Speaks to keeld's REST API
//! (crates/client); human tables by default, `--json` everywhere.

#![forbid(unsafe_code)]

mod commands;
mod config;
mod table;

use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "keel", version, about = "Manage a Keel virtualization host")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// The host's URL (or $KEEL_HOST; default: the last `keel login`'s host,
    /// else https://127.0.0.1:8443).
    #[arg(long, global = true, value_name = "URL")]
    pub host: Option<String>,
    /// Log in as this user for this command (password from $KEEL_PASSWORD
    /// or a prompt) instead of using the saved session.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// Accept the host's certificate without checking it.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Trust the host's certificate if its SHA-256 fingerprint is this
    /// (for scripts; interactive use asks once).
    #[arg(long, global = true, value_name = "FINGERPRINT")]
    pub trust_fingerprint: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Log in and keep the session for the next commands.
    Login,
    /// End the saved session.
    Logout,
    /// The host.
    #[command(subcommand)]
    Host(HostCmd),
    /// Virtual machines.
    #[command(subcommand)]
    Vm(commands::vm::VmCmd),
    /// Datastores and their files.
    #[command(subcommand)]
    Datastore(commands::datastore::DatastoreCmd),
    /// Virtual switches and port groups.
    #[command(subcommand)]
    Network(commands::network::NetworkCmd),
    /// Long operations.
    #[command(subcommand)]
    Task(commands::misc::TaskCmd),
    /// What changed, who did it and when.
    #[command(subcommand)]
    Event(commands::misc::EventCmd),
    /// Users.
    #[command(subcommand)]
    User(commands::users::UserCmd),
    /// Who may do what, on the host or on one VM.
    #[command(subcommand)]
    Permission(commands::users::PermissionCmd),
    /// Prints a shell completion script (bash, zsh, fish, …).
    Completion { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
pub enum HostCmd {
    /// Hardware, KVM, memory and the compatibility check.
    Info,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Command::Completion { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "keel", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e:#}");
            let usage = e
                .downcast_ref::<client::ClientError>()
                .is_some_and(|c| matches!(c, client::ClientError::Usage(_)))
                || e.downcast_ref::<commands::UsageError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
