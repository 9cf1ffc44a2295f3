//! virtio-balloon in the stock Linux guest, driven over the control socket
//! from inside the rig's L1: inflating by 256 MiB lowers the guest's
//! available memory by about that much without growing keel-vmm's RSS;
//! deflating gives it back; the stats queue answers.

use std::path::Path;

use e2e::LinuxVm;

const MIB_KB: i64 = 1024;

/// Dirties 400 MiB (so free guest memory is backed on the host), then
/// prints its memory every half second.
const GUEST: &str = r#"
mkdir -p /mnt && mount -t tmpfs -o size=600m tmpfs /mnt
dd if=/dev/zero of=/mnt/fill bs=1M count=400 2>/dev/null; rm -f /mnt/fill; umount /mnt
echo BALLOON_GUEST_READY
while :; do
    set -- $(awk '/^MemTotal:|^MemFree:|^MemAvailable:/ { printf "%s ", $2 }' /proc/meminfo)
    echo "MEMINFO total=$1 free=$2 avail=$3"
    sleep 0.5
done
"#;

const DRIVER: &str = r#"
c=keel-api-client; s=api.sock
fail() { echo "DRIVER_FAILED=$*"; $c $s stop; exit 1; }
# The last whole line: the newest may still be arriving on the serial port.
mem() { grep '^MEMINFO' "$out" | sed '$d' | tail -n 1 | sed -n "s/.*$1=\([0-9]*\).*/\1/p"; }
rss() { sed -n 's/^VmRSS:[^0-9]*\([0-9]*\).*/\1/p' /proc/$pid/status; }
# Waits until the status shows actual_bytes = $1.
settle() {
    n=0
    until $c $s status | grep -q "\"actual_bytes\":$1,"; do
        sleep 0.5; n=$((n+1)); [ $n -lt 240 ] || fail "actual never reached $1: $($c $s status)"
    done
    # Let the guest print fresh numbers.
    sleep 2
}
$c $s wait || exit 1
n=0; until grep -q BALLOON_GUEST_READY "$out"; do sleep 0.5; n=$((n+1)); [ $n -lt 600 ] || fail "guest not ready"; done
sleep 2
echo AVAIL_BEFORE=$(mem avail)
echo TOTAL_BEFORE=$(mem total)
echo RSS_BEFORE=$(rss)
echo STATS_FIRST=$($c $s balloon-stats)
$c $s balloon-set 268435456 >/dev/null || fail "balloon-set"
settle 268435456
echo AVAIL_INFLATED=$(mem avail)
echo TOTAL_INFLATED=$(mem total)
echo RSS_INFLATED=$(rss)
echo STATUS_INFLATED=$($c $s status)
sleep 1
echo STATS=$($c $s balloon-stats)
$c $s balloon-set 0 >/dev/null || fail "deflate"
settle 0
echo AVAIL_DEFLATED=$(mem avail)
echo RSS_DEFLATED=$(rss)
echo TOO_BIG=$($c $s balloon-set 2147483648)
echo BUTTON=$($c $s power-button)
"#;

fn api_client() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keel-api-client"))
}

#[test]
fn inflating_takes_memory_from_the_guest_and_gives_it_to_the_host() {
    let Some(out) = LinuxVm::new()
        .memory("1G")
        .cmd(GUEST)
        .arg("--balloon")
        .arg("--api-socket")
        .arg("api.sock")
        .run_with_driver(DRIVER, &[api_client()])
    else {
        return;
    };
    let num = |name: &str| -> i64 {
        out.value(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {}", out.dump()))
    };
    assert_eq!(out.value("DRIVER_FAILED"), None, "{}", out.dump());
    let (before, inflated, deflated) = (
        num("AVAIL_BEFORE"),
        num("AVAIL_INFLATED"),
        num("AVAIL_DEFLATED"),
    );
    let (rss_before, rss_inflated, rss_deflated) =
        (num("RSS_BEFORE"), num("RSS_INFLATED"), num("RSS_DEFLATED"));
    eprintln!(
        "MemAvailable kB: before {before}, inflated {inflated}, deflated {deflated}; \
         keel-vmm VmRSS kB: before {rss_before}, inflated {rss_inflated}, deflated {rss_deflated}"
    );
    // The guest lost about 256 MiB...
    let drop = before - inflated;
    assert!(
        (200 * MIB_KB..=320 * MIB_KB).contains(&drop),
        "MemAvailable fell by {drop} kB: {}",
        out.dump()
    );
    // ...without the host paying for it (the pages went back to the host).
    assert!(
        rss_inflated <= rss_before + 16 * MIB_KB,
        "RSS grew from {rss_before} to {rss_inflated} kB: {}",
        out.dump()
    );
    // Deflating gives it back.
    assert!(
        deflated - inflated >= 200 * MIB_KB,
        "MemAvailable only rose by {} kB: {}",
        deflated - inflated,
        out.dump()
    );
    let status = out.value("STATUS_INFLATED").unwrap_or_default();
    for needle in [
        "\"target_bytes\":268435456",
        "\"driver_ready\":true",
        "\"stats\":true",
        "\"rejected_pages\":0",
    ] {
        assert!(status.contains(needle), "{needle}: {}", out.dump());
    }
    let stats = out.value("STATS").unwrap_or_default();
    for needle in [
        "\"free_bytes\":",
        "\"total_bytes\":",
        "\"available_bytes\":",
    ] {
        assert!(stats.contains(needle), "{needle}: {}", out.dump());
    }
    let too_big = out.value("TOO_BIG").unwrap_or_default();
    assert!(too_big.contains("invalid-argument"), "{}", out.dump());
    assert_eq!(out.vm.status, Some(0), "{}", out.dump());
}

const REPORTING_DRIVER: &str = r#"
c=keel-api-client; s=api.sock
fail() { echo "DRIVER_FAILED=$*"; $c $s stop; exit 1; }
# The last whole line: the newest may still be arriving on the serial port.
mem() { grep '^MEMINFO' "$out" | sed '$d' | tail -n 1 | sed -n "s/.*$1=\([0-9]*\).*/\1/p"; }
rss() { sed -n 's/^VmRSS:[^0-9]*\([0-9]*\).*/\1/p' /proc/$pid/status; }
reported() { $c $s status | sed -n 's/.*"reported_bytes":\([0-9]*\).*/\1/p'; }
$c $s wait || exit 1
n=0; until grep -q BALLOON_GUEST_READY "$out"; do sleep 0.5; n=$((n+1)); [ $n -lt 600 ] || fail "guest not ready"; done
echo RSS_BEFORE=$(rss)
n=0; until [ "$(reported)" -ge 104857600 ]; do sleep 0.5; n=$((n+1)); [ $n -lt 240 ] || fail "little reported: $(reported)"; done
sleep 2
echo REPORTED=$(reported)
echo RSS_REPORTED=$(rss)
echo STATUS=$($c $s status)
sleep 1
echo TOTAL_BEFORE=$(mem total)
$c $s balloon-set 67108864 >/dev/null || fail "balloon-set"
n=0; until $c $s status | grep -q '"actual_bytes":67108864,'; do sleep 0.5; n=$((n+1)); [ $n -lt 240 ] || fail "no inflation"; done
sleep 2
echo TOTAL_INFLATED=$(mem total)
echo BUTTON=$($c $s power-button)
"#;

#[test]
fn free_page_reporting_returns_freed_guest_memory_to_the_host() {
    let Some(out) = LinuxVm::new()
        .memory("1G")
        .cmd(GUEST)
        .arg("--balloon")
        .arg("free_page_reporting=on,deflate_on_oom=on")
        .arg("--api-socket")
        .arg("api.sock")
        .run_with_driver(REPORTING_DRIVER, &[api_client()])
    else {
        return;
    };
    let num = |name: &str| -> i64 {
        out.value(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {}", out.dump()))
    };
    assert_eq!(out.value("DRIVER_FAILED"), None, "{}", out.dump());
    let (before, after, reported) = (num("RSS_BEFORE"), num("RSS_REPORTED"), num("REPORTED"));
    eprintln!("reported {reported} bytes; keel-vmm VmRSS kB: before {before}, after {after}");
    assert!(
        after < before - 100 * MIB_KB,
        "RSS went from {before} to {after} kB: {}",
        out.dump()
    );
    let status = out.value("STATUS").unwrap_or_default();
    for needle in [
        "\"free_page_reporting\":true",
        "\"deflate_on_oom\":true",
        "\"stats\":true",
        "\"rejected_pages\":0",
    ] {
        assert!(status.contains(needle), "{needle}: {}", out.dump());
    }
    // With DEFLATE_ON_OOM the guest keeps counting ballooned pages in
    // MemTotal.
    assert_eq!(num("TOTAL_BEFORE"), num("TOTAL_INFLATED"), "{}", out.dump());
    assert_eq!(out.vm.status, Some(0), "{}", out.dump());
}
