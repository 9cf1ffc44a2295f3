//! `/metrics`: the host's and the VMs' counters in the Prometheus text
//! format, every name prefixed `keel_`.
//!
//! Per VM: CPU time and memory of its VMM process (/proc), and each disk's
//! and NIC's I/O, which every running VMM is asked for on its control
//! socket (`counters`, all VMMs at once, at most [`COUNTERS_TIMEOUT`]; one
//! that does not answer in time is left out of that scrape). Per host:
//! CPU, memory, block devices (/proc/diskstats) and network interfaces
//! (/proc/net/dev).

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hostd_api::{PowerState, Privilege};
use vmm_api::{DiskCounters, NicCounters, Reply, Request, VmCounters};

use crate::backend::VmmBackend;
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

/// How long a scrape waits for the VMMs' I/O counters.
pub const COUNTERS_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the VMM of each VM in `ids` for its I/O counters, all at once (a
/// thread each); the answers that came within `timeout`. A VMM that fails
/// or is slower is left out (its thread ends with the supervisor's own
/// request timeout).
pub(crate) fn vmm_counters(
    backend: &Arc<dyn VmmBackend>,
    ids: &[i64],
    timeout: Duration,
) -> HashMap<i64, VmCounters> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    for &id in ids {
        let backend = backend.clone();
        let tx = tx.clone();
        // A thread that cannot start leaves its VM out.
        let _ = std::thread::Builder::new()
            .name("metrics-vmm".into())
            .spawn(move || {
                if let Ok(Reply::Counters(c)) = backend.request(id, Request::Counters) {
                    let _ = tx.send((id, c));
                }
            });
    }
    drop(tx);
    let mut out = HashMap::new();
    while out.len() < ids.len() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((id, c)) => {
                out.insert(id, c);
            }
            // Timed out, or every thread has ended.
            Err(_) => break,
        }
    }
    out
}

type DiskField = fn(&DiskCounters) -> u64;
type NicField = fn(&NicCounters) -> u64;

/// The per-disk families: name, help, field.
const DISK_FAMILIES: &[(&str, &str, DiskField)] = &[
    (
        "keel_vm_disk_read_bytes_total",
        "Bytes the guest read from the disk.",
        |d| d.read_bytes,
    ),
    (
        "keel_vm_disk_write_bytes_total",
        "Bytes the guest wrote to the disk.",
        |d| d.write_bytes,
    ),
    (
        "keel_vm_disk_read_ops_total",
        "Read requests the disk served.",
        |d| d.read_ops,
    ),
    (
        "keel_vm_disk_write_ops_total",
        "Write requests the disk served.",
        |d| d.write_ops,
    ),
    (
        "keel_vm_disk_flush_ops_total",
        "Flush requests the disk served.",
        |d| d.flush_ops,
    ),
    (
        "keel_vm_disk_discard_ops_total",
        "Discard requests the disk served.",
        |d| d.discard_ops,
    ),
    (
        "keel_vm_disk_write_zeroes_ops_total",
        "Write-zeroes requests the disk served.",
        |d| d.write_zeroes_ops,
    ),
    (
        "keel_vm_disk_errors_total",
        "Disk requests that failed (host I/O errors, refused requests).",
        |d| d.errors,
    ),
];

/// The per-NIC families.
const NIC_FAMILIES: &[(&str, &str, NicField)] = &[
    (
        "keel_vm_net_rx_bytes_total",
        "Bytes of frames delivered to the guest.",
        |n| n.rx_bytes,
    ),
    (
        "keel_vm_net_tx_bytes_total",
        "Bytes of frames the guest sent.",
        |n| n.tx_bytes,
    ),
    (
        "keel_vm_net_rx_packets_total",
        "Frames delivered to the guest.",
        |n| n.rx_packets,
    ),
    (
        "keel_vm_net_tx_packets_total",
        "Frames the guest sent.",
        |n| n.tx_packets,
    ),
    (
        "keel_vm_net_rx_dropped_total",
        "Frames for the guest that were lost (it did not take them in time).",
        |n| n.rx_dropped,
    ),
    (
        "keel_vm_net_tx_errors_total",
        "Frames from the guest that were dropped (malformed or refused).",
        |n| n.tx_errors,
    ),
    (
        "keel_vm_net_tx_forged_total",
        "Frames from the guest dropped for a source MAC not its own (forged transmits reject).",
        |n| n.tx_forged,
    ),
    (
        "keel_vm_net_rx_filtered_total",
        "Frames for another NIC's MAC not delivered to the guest (promiscuous reject).",
        |n| n.rx_filtered,
    ),
];

/// The disk and NIC families of the VMs that answered, by VM name.
fn vm_io(m: &mut Exposition, vms: &[(&str, &VmCounters)]) {
    for (name, help, field) in DISK_FAMILIES {
        m.family(name, "counter", help);
        for (vm, c) in vms {
            for d in &c.disks {
                m.sample(name, &[("vm", vm), ("disk", &d.id)], field(d) as f64);
            }
        }
    }
    for (name, help, field) in NIC_FAMILIES {
        m.family(name, "counter", help);
        for (vm, c) in vms {
            for n in &c.nics {
                m.sample(name, &[("vm", vm), ("nic", &n.id)], field(n) as f64);
            }
        }
    }
}

/// One block device's line of /proc/diskstats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskStat {
    pub name: String,
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
}

/// Parses /proc/diskstats (`major minor name reads merged sectors ms
/// writes merged sectors …`; sectors are 512 bytes there whatever the
/// device's). Malformed lines are skipped.
pub fn diskstats(text: &str) -> Vec<DiskStat> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let n = |i: usize| f.get(i)?.parse::<u64>().ok();
            Some(DiskStat {
                name: f.get(2)?.to_string(),
                read_ops: n(3)?,
                read_bytes: n(5)?.saturating_mul(512),
                write_ops: n(7)?,
                write_bytes: n(9)?.saturating_mul(512),
            })
        })
        .collect()
}

/// One interface's line of /proc/net/dev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetDevStat {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
}

/// Parses /proc/net/dev (`name: rx bytes packets errs drop fifo frame
/// compressed multicast, tx bytes packets errs drop …`); the two header
/// lines and malformed lines are skipped.
pub fn net_dev(text: &str) -> Vec<NetDevStat> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() >= 12).then(|| NetDevStat {
                name: name.trim().to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
            })
        })
        .collect()
}

/// A whole disk worth showing: one /sys/block has (not a partition), not a
/// loop or RAM device.
fn host_disk(root: &Path, name: &str) -> bool {
    !["loop", "ram", "zram"].iter().any(|p| name.starts_with(p))
        && !name.contains('/')
        && root.join("sys/block").join(name).exists()
}

/// The host's block devices and network interfaces (the loopback left out).
fn host_io(m: &mut Exposition, root: &Path) {
    let disks: Vec<DiskStat> =
        diskstats(&std::fs::read_to_string(root.join("proc/diskstats")).unwrap_or_default())
            .into_iter()
            .filter(|d| host_disk(root, &d.name))
            .collect();
    type HostDiskField = fn(&DiskStat) -> u64;
    let disk_families: [(&str, &str, HostDiskField); 4] = [
        (
            "keel_host_disk_read_bytes_total",
            "Bytes read from the host's block device.",
            |d| d.read_bytes,
        ),
        (
            "keel_host_disk_write_bytes_total",
            "Bytes written to the host's block device.",
            |d| d.write_bytes,
        ),
        (
            "keel_host_disk_read_ops_total",
            "Reads the host's block device completed.",
            |d| d.read_ops,
        ),
        (
            "keel_host_disk_write_ops_total",
            "Writes the host's block device completed.",
            |d| d.write_ops,
        ),
    ];
    for (name, help, field) in disk_families {
        m.family(name, "counter", help);
        for d in &disks {
            m.sample(name, &[("device", &d.name)], field(d) as f64);
        }
    }
    let nets: Vec<NetDevStat> =
        net_dev(&std::fs::read_to_string(root.join("proc/net/dev")).unwrap_or_default())
            .into_iter()
            .filter(|n| n.name != "lo")
            .collect();
    type HostNetField = fn(&NetDevStat) -> u64;
    let net_families: [(&str, &str, HostNetField); 6] = [
        (
            "keel_host_net_rx_bytes_total",
            "Bytes the host's interface received.",
            |n| n.rx_bytes,
        ),
        (
            "keel_host_net_tx_bytes_total",
            "Bytes the host's interface sent.",
            |n| n.tx_bytes,
        ),
        (
            "keel_host_net_rx_packets_total",
            "Packets the host's interface received.",
            |n| n.rx_packets,
        ),
        (
            "keel_host_net_tx_packets_total",
            "Packets the host's interface sent.",
            |n| n.tx_packets,
        ),
        (
            "keel_host_net_rx_dropped_total",
            "Received packets the host's interface dropped.",
            |n| n.rx_dropped,
        ),
        (
            "keel_host_net_tx_errors_total",
            "Transmit errors of the host's interface.",
            |n| n.tx_errors,
        ),
    ];
    for (name, help, field) in net_families {
        m.family(name, "counter", help);
        for n in &nets {
            m.sample(name, &[("interface", &n.name)], field(n) as f64);
        }
    }
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
        let ids: Vec<i64> = running.iter().map(|(r, _)| r.id).collect();
        let counters = vmm_counters(&self.inner.backend, &ids, COUNTERS_TIMEOUT);
        let io: Vec<(&str, &VmCounters)> = running
            .iter()
            .filter_map(|(r, _)| Some((r.name.as_str(), counters.get(&r.id)?)))
            .collect();
        vm_io(&mut m, &io);
        host_io(&mut m, root);
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
    use std::sync::atomic::Ordering;

    use hostd_api::PowerOp;

    use super::*;
    use crate::host::testutil::{fake_counters, test_host, TestHost};
    use crate::supervisor::lock;

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

    fn id_of(t: &TestHost, name: &str) -> i64 {
        lock(&t.fake.starts)
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
            .unwrap()
    }

    #[test]
    fn vm_disk_and_nic_counters_come_from_each_running_vmm() {
        let t = test_host("metrics-io");
        for vm in ["web1", "db1", "mute", "off"] {
            t.create(vm);
        }
        for vm in ["web1", "db1", "mute"] {
            t.power(&t.admin, vm, PowerOp::On).unwrap();
        }
        let mut web = fake_counters();
        web.disks[0].write_bytes = 8192;
        web.disks[0].errors = 2;
        web.nics.push(NicCounters {
            id: "net0".into(),
            mac: "02:6b:65:00:00:01".into(),
            tap: "keel0".into(),
            rx_packets: 3,
            rx_bytes: 300,
            tx_packets: 4,
            tx_bytes: 400,
            rx_dropped: 5,
            tx_errors: 6,
            ..Default::default()
        });
        lock(&t.fake.counters).insert(id_of(&t, "web1"), Some(web));
        lock(&t.fake.counters).insert(id_of(&t, "mute"), None);
        let m = t.host.metrics(&t.admin).unwrap();
        for line in [
            "# TYPE keel_vm_disk_read_bytes_total counter",
            "keel_vm_disk_read_bytes_total{vm=\"web1\",disk=\"disk0\"} 1048576",
            "keel_vm_disk_read_ops_total{vm=\"web1\",disk=\"disk0\"} 256",
            "keel_vm_disk_write_bytes_total{vm=\"web1\",disk=\"disk0\"} 8192",
            "keel_vm_disk_write_ops_total{vm=\"web1\",disk=\"disk0\"} 0",
            "keel_vm_disk_errors_total{vm=\"web1\",disk=\"disk0\"} 2",
            "keel_vm_disk_flush_ops_total{vm=\"db1\",disk=\"disk0\"} 0",
            "keel_vm_disk_read_bytes_total{vm=\"db1\",disk=\"disk0\"} 1048576",
            "# TYPE keel_vm_net_rx_bytes_total counter",
            "keel_vm_net_rx_bytes_total{vm=\"web1\",nic=\"net0\"} 300",
            "keel_vm_net_tx_bytes_total{vm=\"web1\",nic=\"net0\"} 400",
            "keel_vm_net_rx_packets_total{vm=\"web1\",nic=\"net0\"} 3",
            "keel_vm_net_tx_packets_total{vm=\"web1\",nic=\"net0\"} 4",
            "keel_vm_net_rx_dropped_total{vm=\"web1\",nic=\"net0\"} 5",
            "keel_vm_net_tx_errors_total{vm=\"web1\",nic=\"net0\"} 6",
            "# TYPE keel_host_disk_read_bytes_total counter",
            "# TYPE keel_host_net_rx_bytes_total counter",
        ] {
            assert!(m.lines().any(|l| l == line), "no {line:?} in:\n{m}");
        }
        // A VMM that does not answer, and a VM that is off: no I/O samples,
        // the rest of the exposition is still there.
        assert!(!m.contains("vm=\"mute\",disk"), "{m}");
        assert!(!m.contains("vm=\"off\",disk"), "{m}");
        assert!(
            m.contains("keel_vm_cpu_seconds_total{vm=\"mute\"} 1.5"),
            "{m}"
        );
        assert!(!m.contains("vm=\"db1\",nic"), "{m}");
        // Every family is announced once, every sample line is well formed.
        for l in m.lines().filter(|l| l.starts_with("# TYPE")) {
            assert_eq!(m.matches(&format!("{l}\n")).count(), 1, "{l}");
        }
        for l in m.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
            assert!(l.starts_with("keel_"), "{l}");
        }
    }

    #[test]
    fn a_slow_vmm_is_skipped_within_the_bound() {
        let t = test_host("metrics-slow");
        t.create("slow");
        t.power(&t.admin, "slow", PowerOp::On).unwrap();
        let id = id_of(&t, "slow");
        let backend: Arc<dyn VmmBackend> = t.fake.clone();
        let got = vmm_counters(&backend, &[id, 9999], Duration::from_secs(5));
        assert_eq!(got.len(), 1, "the VM that is not running is left out");
        assert_eq!(got[&id], fake_counters());
        t.fake.counters_delay_ms.store(3000, Ordering::Relaxed);
        let start = Instant::now();
        let got = vmm_counters(&backend, &[id], Duration::from_millis(200));
        assert!(got.is_empty());
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(vmm_counters(&backend, &[], Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn proc_diskstats_and_net_dev() {
        let stats = "   8       0 sda 100 5 2000 50 40 2 800 30 0 60 80 0 0 0 0\n\
                     8       1 sda1 90 5 1800 40 40 2 800 30 0 50 70\n\
                     bad line\n 7 0 loop0 1 2 x 4 5 6 7\n";
        let d = diskstats(stats);
        assert_eq!(
            d[0],
            DiskStat {
                name: "sda".into(),
                read_ops: 100,
                read_bytes: 2000 * 512,
                write_ops: 40,
                write_bytes: 800 * 512,
            }
        );
        assert_eq!(d.len(), 2, "{d:?}");
        let dev = "Inter-|   Receive                            |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  \
eth0: 5000 50 1 2 0 0 0 0 7000 70 3 4 0 0 0 0\n";
        let n = net_dev(dev);
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[1],
            NetDevStat {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_packets: 50,
                rx_dropped: 2,
                tx_bytes: 7000,
                tx_packets: 70,
                tx_errors: 3,
            }
        );
        assert!(net_dev("eth0: 1 2 3").is_empty());
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
