//! `/metrics`: the host's and the VMs' counters in the Prometheus text
//! format, every name prefixed `keel_`.

use std::fmt::Write;
use std::path::Path;

use hostd_api::{PowerState, Privilege};

use crate::datastores;
use crate::error::Result;
use crate::host::{Caller, Host};
use crate::hostinfo::meminfo_bytes;
use crate::sys;
use crate::tasks;
use crate::vms;

/// Builds one exposition: a `# HELP`/`# TYPE` header per family, then its
/// samples.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// Escapes a label value (backslash, quote, newline).
pub fn escape(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The `cpu` line of /proc/stat: seconds per mode.
pub fn cpu_seconds(stat: &str, ticks: u64) -> Vec<(&'static str, f64)> {
    const MODES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Vec::new();
    };
    line.split_whitespace()
        .skip(1)
        .zip(MODES)
        .filter_map(|(v, mode)| Some((mode, v.parse::<u64>().ok()? as f64 / ticks.max(1) as f64)))
        .collect()
}

fn state_label(s: PowerState) -> &'static str {
    match s {
        PowerState::PoweredOn => "poweredOn",
        PowerState::PoweredOff => "poweredOff",
        PowerState::Paused => "paused",
        PowerState::Crashed => "crashed",
    }
}

impl Host {
    /// The Prometheus text exposition (System.View on the host).
    pub fn metrics(&self, caller: &Caller) -> Result<String> {
        self.require(caller, None, Privilege::SystemView)?;
        let mut m = Exposition::default();
        let root = Path::new("/");
        let meminfo = std::fs::read_to_string(root.join("proc/meminfo")).unwrap_or_default();
        m.family(
            "keel_host_memory_total_bytes",
            "gauge",
            "Memory of the host.",
        );
        m.sample(
            "keel_host_memory_total_bytes",
            &[],
            meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0) as f64,
        );
        m.family(
            "keel_host_memory_available_bytes",
            "gauge",
            "Memory available for new allocations.",
        );
        m.sample(
            "keel_host_memory_available_bytes",
            &[],
            meminfo_bytes(&meminfo, "MemAvailable").unwrap_or(0) as f64,
        );
        let stat = std::fs::read_to_string(root.join("proc/stat")).unwrap_or_default();
        m.family(
            "keel_host_cpu_seconds_total",
            "counter",
            "CPU time of the host by mode, all CPUs.",
        );
        for (mode, secs) in cpu_seconds(&stat, sys::clock_ticks_per_second()) {
            m.sample("keel_host_cpu_seconds_total", &[("mode", mode)], secs);
        }
        if let Some(up) = std::fs::read_to_string(root.join("proc/uptime"))
            .ok()
            .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        {
            m.family(
                "keel_host_uptime_seconds",
                "gauge",
                "Time since the host booted.",
            );
            m.sample("keel_host_uptime_seconds", &[], up);
        }

        let dss = datastores::list(self.store())?;
        m.family(
            "keel_datastore_capacity_bytes",
            "gauge",
            "Size of the datastore's file system.",
        );
        for ds in &dss {
            m.sample(
                "keel_datastore_capacity_bytes",
                &[("datastore", &ds.name)],
                ds.info().capacity_bytes as f64,
            );
        }
        m.family(
            "keel_datastore_free_bytes",
            "gauge",
            "Free space of the datastore's file system.",
        );
        for ds in &dss {
            m.sample(
                "keel_datastore_free_bytes",
                &[("datastore", &ds.name)],
                ds.info().free_bytes as f64,
            );
        }

        let rows = self.store().with(vms::rows)?;
        let infos: Vec<_> = rows
            .iter()
            .map(|r| {
                let (state, runtime) = self.vm_power_state(r);
                let (cfg, _) = self.vm_config(r);
                (r, state, runtime, cfg)
            })
            .collect();
        m.family("keel_vms", "gauge", "Registered VMs by power state.");
        for s in [
            PowerState::PoweredOn,
            PowerState::Paused,
            PowerState::PoweredOff,
            PowerState::Crashed,
        ] {
            let n = infos.iter().filter(|(_, st, _, _)| *st == s).count();
            m.sample("keel_vms", &[("state", state_label(s))], n as f64);
        }
        m.family(
            "keel_vm_power_state",
            "gauge",
            "1 for the VM's current power state.",
        );
        for (r, st, _, _) in &infos {
            for s in [
                PowerState::PoweredOn,
                PowerState::Paused,
                PowerState::PoweredOff,
                PowerState::Crashed,
            ] {
                let v = if *st == s { 1.0 } else { 0.0 };
                m.sample(
                    "keel_vm_power_state",
                    &[("vm", &r.name), ("state", state_label(s))],
                    v,
                );
            }
        }
        m.family("keel_vm_vcpus", "gauge", "vCPUs of the VM.");
        for (r, _, _, cfg) in &infos {
            m.sample("keel_vm_vcpus", &[("vm", &r.name)], cfg.vcpus as f64);
        }
        m.family(
            "keel_vm_memory_configured_bytes",
            "gauge",
            "Memory configured for the VM.",
        );
        for (r, _, _, cfg) in &infos {
            m.sample(
                "keel_vm_memory_configured_bytes",
                &[("vm", &r.name)],
                (cfg.memory_mib * 1024 * 1024) as f64,
            );
        }
        let running: Vec<_> = infos
            .iter()
            .filter_map(|(r, _, rt, _)| rt.as_ref().map(|rt| (r, rt)))
            .collect();
        m.family(
            "keel_vm_cpu_seconds_total",
            "counter",
            "CPU time (user + system) of the VM's VMM process.",
        );
        for (r, rt) in &running {
            m.sample(
                "keel_vm_cpu_seconds_total",
                &[("vm", &r.name)],
                rt.cpu_ms as f64 / 1000.0,
            );
        }
        m.family(
            "keel_vm_memory_rss_bytes",
            "gauge",
            "Resident memory of the VM's VMM process.",
        );
        for (r, rt) in &running {
            m.sample(
                "keel_vm_memory_rss_bytes",
                &[("vm", &r.name)],
                rt.rss_bytes as f64,
            );
        }
        m.family(
            "keel_vm_uptime_seconds",
            "gauge",
            "Time since the VM's VMM started.",
        );
        for (r, rt) in &running {
            m.sample(
                "keel_vm_uptime_seconds",
                &[("vm", &r.name)],
                rt.uptime_ms as f64 / 1000.0,
            );
        }
        m.family(
            "keel_vm_boots",
            "gauge",
            "Boots of the guest in this run (1 + reboots).",
        );
        for (r, rt) in &running {
            m.sample("keel_vm_boots", &[("vm", &r.name)], rt.boots as f64);
        }
        m.family("keel_tasks_running", "gauge", "Tasks in progress.");
        m.sample(
            "keel_tasks_running",
            &[],
            tasks::running_count(self.store())? as f64,
        );
        Ok(m.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format_and_escaping() {
        let mut m = Exposition::default();
        m.family("keel_x", "gauge", "An x.");
        m.sample("keel_x", &[], 3.0);
        m.sample("keel_x", &[("vm", "a\"b\\c\nd"), ("state", "on")], 1.5);
        assert_eq!(
            m.finish(),
            "# HELP keel_x An x.\n# TYPE keel_x gauge\nkeel_x 3\nkeel_x{vm=\"a\\\"b\\\\c\\nd\",state=\"on\"} 1.5\n"
        );
    }

    #[test]
    fn proc_stat_cpu_line() {
        let stat = "cpu  100 5 50 1000 10 0 2 0 0 0\ncpu0 1 2 3\n";
        let s = cpu_seconds(stat, 100);
        assert_eq!(s[0], ("user", 1.0));
        assert_eq!(s[3], ("idle", 10.0));
        assert_eq!(s.len(), 8);
        assert!(cpu_seconds("nothing", 100).is_empty());
    }
}
