//! `keel host info`, `keel task …`, `keel event …`

use std::time::Duration;

use clap::Subcommand;
use client::Client;

use super::{connect, print_json};
use crate::table;
use crate::Global;

pub fn host_info(c: &Client, g: &Global) -> anyhow::Result<()> {
    let h = c.host_info()?;
    if g.json {
        return print_json(&h);
    }
    println!("Host:        {}", h.hostname);
    println!("Version:     {}", h.keel_version);
    println!("Kernel:      {}", h.kernel);
    println!("Uptime:      {} s", h.uptime_s);
    println!(
        "CPU:         {} ({} cores, {} threads)",
        h.cpu.model, h.cpu.cores, h.cpu.threads
    );
    println!(
        "Memory:      {} total, {} free",
        table::bytes(h.memory_total_bytes),
        table::bytes(h.memory_free_bytes)
    );
    println!(
        "KVM:         {}{}",
        if h.kvm.usable { "usable" } else { "NOT usable" },
        h.kvm
            .error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    println!("Compatibility:");
    for c in &h.compatibility {
        println!(
            "  {:<28} {:<8} {}",
            c.name,
            format!("{:?}", c.status).to_lowercase(),
            c.detail
        );
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Recent tasks, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        before: Option<u64>,
    },
    /// Waits until a task finished and prints it.
    Wait {
        id: u64,
        /// Seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

pub fn task(cmd: TaskCmd, g: &Global) -> anyhow::Result<()> {
    let c = connect(g)?;
    match cmd {
        TaskCmd::List { limit, before } => {
            let page = c.task_list(before, limit)?;
            if g.json {
                return print_json(&page);
            }
            let rows = page
                .items
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.kind.clone(),
                        t.target.clone().unwrap_or_default(),
                        format!("{:?}", t.state).to_lowercase(),
                        format!("{}%", t.progress),
                        t.user.clone(),
                        table::time(t.started_ms),
                        t.error
                            .as_ref()
                            .map(|e| e.message.clone())
                            .unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(
                &[
                    "ID",
                    "KIND",
                    "TARGET",
                    "STATE",
                    "PROGRESS",
                    "USER",
                    "STARTED (UTC)",
                    "ERROR",
                ],
                &rows,
            );
            if let Some(n) = page.next {
                println!("(more: --before {n})");
            }
            Ok(())
        }
        TaskCmd::Wait { id, timeout } => {
            let t = c.task_wait(id, Duration::from_secs(timeout))?;
            super::vm::finish(&c, t, g)
        }
    }
}

#[derive(Subcommand)]
pub enum EventCmd {
    /// Events, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        before: Option<u64>,
        /// Only about `host`, `vm:NAME` or `user:NAME`.
        #[arg(long)]
        target: Option<String>,
    },
}

pub fn event(cmd: EventCmd, g: &Global) -> anyhow::Result<()> {
    let c = connect(g)?;
    let EventCmd::List {
        limit,
        before,
        target,
    } = cmd;
    let page = c.event_list(before, limit, target.as_deref())?;
    if g.json {
        return print_json(&page);
    }
    let rows = page
        .items
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                table::time(e.time_ms),
                format!("{:?}", e.severity).to_lowercase(),
                e.user.clone().unwrap_or_else(|| "-".into()),
                e.target.clone().unwrap_or_default(),
                e.message.clone(),
            ]
        })
        .collect::<Vec<_>>();
    table::print(
        &["ID", "TIME (UTC)", "SEVERITY", "USER", "TARGET", "MESSAGE"],
        &rows,
    );
    if let Some(n) = page.next {
        println!("(more: --before {n})");
    }
    Ok(())
}
