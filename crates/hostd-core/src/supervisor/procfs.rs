//! What /proc says about a VMM process: its CPU time, resident memory and
//! start time. Parsers are pure functions of the text, tested below.

use std::io;

/// The fields of `/proc/PID/stat` the supervisor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z`, …
    pub state: char,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// When the process started, in clock ticks after boot.
    pub starttime: u64,
}

/// Parses `/proc/PID/stat`. The command name (in parentheses) may hold
/// spaces and parentheses itself: the fields start after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5).
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        state: field(3)?.chars().next()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        starttime: field(22)?.parse().ok()?,
    })
}

/// Parses `VmRSS:  1234 kB` out of `/proc/PID/status`, in bytes.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => n.checked_mul(1024),
        _ => None,
    }
}

/// Parses `btime N` (the boot time, Unix seconds) out of `/proc/stat`.
pub fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unreadable {what}"))
}

/// `/proc/PID/stat`.
pub fn stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| invalid("/proc/PID/stat"))
}

/// Resident memory of `pid`, in bytes (0 for a zombie).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(parse_rss(&text).unwrap_or(0))
}

/// Ticks to milliseconds.
pub fn ticks_to_ms(ticks: u64) -> u64 {
    let hz = crate::sys::clock_ticks_per_second().max(1);
    ticks.saturating_mul(1000) / hz
}

/// When `pid` started, in Unix milliseconds (the same for every reader, so
/// it identifies the run across keeld restarts).
pub fn started_ms(pid: u32) -> io::Result<u64> {
    let st = stat(pid)?;
    let btime = parse_btime(&std::fs::read_to_string("/proc/stat")?)
        .ok_or_else(|| invalid("/proc/stat"))?;
    Ok(btime
        .saturating_mul(1000)
        .saturating_add(ticks_to_ms(st.starttime)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (keel-vmm) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 37 0 0 20 0 5 0 987654 12345678 1100 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                utime: 150,
                stime: 37,
                starttime: 987654
            })
        );
        let odd = line.replace("(keel-vmm)", "(a) b) (c)");
        assert_eq!(parse_stat(&odd).map(|s| s.utime), Some(150));
        assert_eq!(parse_stat("4242 (x) Z 1 2"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("no parenthesis at all"), None);
    }

    #[test]
    fn rss_and_btime_parse() {
        let status = "Name:\tkeel-vmm\nVmPeak:\t  99999 kB\nVmRSS:\t    4608 kB\nThreads:\t5\n";
        assert_eq!(parse_rss(status), Some(4608 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
        assert_eq!(parse_rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_rss("VmRSS:\t1 MB\n"), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn this_process_reads_from_proc() {
        let me = std::process::id();
        let st = stat(me).unwrap();
        assert!(matches!(st.state, 'R' | 'S'));
        assert!(rss_bytes(me).unwrap() > 0);
        let started = started_ms(me).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // Started within the last hour, and not in the future (ticks round).
        assert!(
            started <= now + 1000 && started + 3_600_000 > now,
            "{started} vs {now}"
        );
        assert!(stat(u32::MAX).is_err());
    }
}
