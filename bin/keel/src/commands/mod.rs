//! Connecting to the host and running one command.

pub mod datastore;
pub mod misc;
pub mod network;
pub mod users;
pub mod vm;

use std::io::IsTerminal;

use anyhow::{bail, Context};
use base64::Engine;
use client::{Client, Credentials, Trust};
use serde::Serialize;

use crate::config::State;
use crate::{Cli, Command, Global, HostCmd};

/// A mistake in how keel was called (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

pub const DEFAULT_HOST: &str = "https://127.0.0.1:8443";

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global.clone();
    match cli.command {
        Command::Login => login(&g),
        Command::Logout => logout(&g),
        Command::Host(HostCmd::Info) => misc::host_info(&connect(&g)?, &g),
        Command::Vm(c) => vm::run(c, &g),
        Command::Datastore(c) => datastore::run(c, &g),
        Command::Network(c) => network::run(c, &g),
        Command::Task(c) => misc::task(c, &g),
        Command::Event(c) => misc::event(c, &g),
        Command::User(c) => users::user(c, &g),
        Command::Permission(c) => users::permission(c, &g),
        Command::Completion { .. } => Ok(()),
    }
}

fn host_url(g: &Global, state: &State) -> String {
    g.host
        .clone()
        .or_else(|| std::env::var("KEEL_HOST").ok().filter(|h| !h.is_empty()))
        .or_else(|| state.host.clone())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// How much to trust the host's certificate: pinned before, given by
/// fingerprint, accepted by the person at a prompt, or `--insecure`.
fn trust(g: &Global, url: &str, state: &mut State) -> anyhow::Result<Trust> {
    if g.insecure {
        return Ok(Trust::Insecure);
    }
    if url.starts_with("http://") {
        return Ok(Trust::Insecure); // no TLS at all
    }
    let probe = Client::new(url, Trust::Insecure)?;
    let key = host_key(probe.url());
    if let Some(b64) = state.certificates.get(&key) {
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .context("A pinned certificate in keel's state is damaged")?;
        // A fingerprint given for a different certificate than the pinned
        // one is the way to accept a host's new certificate: checked below.
        let replace = g
            .trust_fingerprint
            .as_ref()
            .is_some_and(|want| !want.eq_ignore_ascii_case(&client::fingerprint(&der)));
        if !replace {
            return Ok(Trust::Pinned(der));
        }
    }
    let der = client::fetch_certificate(probe.host(), probe.port())?;
    let fp = client::fingerprint(&der);
    let accepted = match &g.trust_fingerprint {
        Some(want) => {
            if !want.eq_ignore_ascii_case(&fp) {
                bail!("The certificate of {key} has fingerprint {fp}, not {want}: refusing it");
            }
            true
        }
        None if std::io::stdin().is_terminal() => {
            eprintln!("The certificate of {key} is not known.\nSHA-256 fingerprint: {fp}");
            eprint!("Trust it from now on? [y/N] ");
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            matches!(answer.trim(), "y" | "Y" | "yes")
        }
        None => bail!(
            "The certificate of {key} is not known (SHA-256 {fp}): check it and pass \
             --trust-fingerprint {fp}, or --insecure"
        ),
    };
    if !accepted {
        bail!("Not trusting {key}");
    }
    state
        .certificates
        .insert(key, base64::engine::general_purpose::STANDARD.encode(&der));
    state.save()?;
    Ok(Trust::Pinned(der))
}

fn host_key(url: &str) -> String {
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
        .to_string()
}

fn password(prompt: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("KEEL_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("No password: set KEEL_PASSWORD or run keel on a terminal");
    }
    rpassword::prompt_password(prompt).context("Cannot read the password")
}

/// A client for the host, logged in with --user or the saved session.
pub fn connect(g: &Global) -> anyhow::Result<Client> {
    let mut state = State::load()?;
    let url = host_url(g, &state);
    let trust = trust(g, &url, &mut state)?;
    let client = Client::new(&url, trust)?;
    if let Some(user) = &g.user {
        let pw = password(&format!("Password for {user}: "))?;
        return Ok(client.with_credentials(Credentials::Password {
            user: user.clone(),
            password: pw,
        }));
    }
    if let Ok(token) = std::env::var("KEEL_TOKEN") {
        return Ok(client.with_credentials(Credentials::Token(token)));
    }
    match state.tokens.get(client.url()) {
        Some(token) => Ok(client.with_credentials(Credentials::Token(token.clone()))),
        None => bail!(
            "Not logged in to {}: run `keel login` (or pass --user)",
            client.url()
        ),
    }
}

fn login(g: &Global) -> anyhow::Result<()> {
    let mut state = State::load()?;
    let url = host_url(g, &state);
    let trust = trust(g, &url, &mut state)?;
    let mut client = Client::new(&url, trust)?;
    let user = match &g.user {
        Some(u) => u.clone(),
        None => std::env::var("KEEL_USER").unwrap_or_else(|_| "admin".to_string()),
    };
    let pw = password(&format!("Password for {user} on {url}: "))?;
    let session = client.login(&user, &pw)?;
    state
        .tokens
        .insert(client.url().to_string(), session.token.clone());
    state.host = Some(client.url().to_string());
    state.save()?;
    if g.json {
        print_json(&session)
    } else {
        println!("Logged in to {} as {}", client.url(), session.user);
        Ok(())
    }
}

fn logout(g: &Global) -> anyhow::Result<()> {
    let mut state = State::load()?;
    let url = host_url(g, &state);
    if let Ok(client) = connect(g) {
        let _ = client.call_text::<()>("DELETE", "/session", None);
    }
    let key = Client::new(&url, Trust::Insecure)?.url().to_string();
    state.tokens.remove(&key);
    state.save()?;
    if !g.json {
        println!("Logged out of {key}");
    }
    Ok(())
}

pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
