//! keeld with a real Linux guest (natively on hardware KVM, else inside the
//! KVM rig): the CLI creates a VM from the stock Debian kernel and the test
//! initramfs, powers it on, the boot marker appears in the console log, a
//! command typed on the console answers, and `keel vm shutdown` presses the
//! power button, which the guest honours: the VM ends poweredOff.

use std::time::Duration;

use e2e::{keeld_session, BASE_CMDLINE};

const SCRIPT: &str = r#"
$K vm create linux --kernel $PWD/vmlinuz --initrd $PWD/initramfs.cpio.gz \
    --cmdline "$CMDLINE" --memory 256M --cpus 1 --start
echo CREATE_STATUS=$?
i=0; while ! $K vm log linux | grep -q KEEL-GUEST-BOOTED && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done
echo BOOTED=$($K vm log linux | grep -c KEEL-GUEST-BOOTED)
echo STATE_ON=$($K --json vm show linux | sed -n 's/.*"power_state": "\([a-zA-Z]*\)".*/\1/p')
# Type a command on the serial console through keeld's WebSocket.
(sleep 1; echo 'echo RESULT=$((6*7))'; sleep 3) | $K vm console linux > console.out 2>&1
i=0; while ! $K vm log linux | grep -q 'RESULT=42' && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
echo ANSWER=$($K vm log linux | grep -c 'RESULT=42')
$K vm shutdown linux
echo SHUTDOWN_STATUS=$?
echo STATE_OFF=$($K --json vm show linux | sed -n 's/.*"power_state": "\([a-zA-Z]*\)".*/\1/p')
$K event list --target vm:linux --limit 50
kill $KEELD
echo '--- keeld.log'; cat keeld.log
"#;

#[test]
fn keeld_boots_a_linux_guest_and_the_guest_honours_shutdown() {
    // The guest's shell stays on the console after boot (keel.then=shell).
    let cmdline = format!(
        "{BASE_CMDLINE} {}",
        xtask::guest::cmdline_args("true", e2e::Then::Shell)
    );
    let script = format!(
        "CMDLINE='{cmdline}'
{SCRIPT}"
    );
    let out = keeld_session("keeld-rig", &script, Duration::ZERO);
    let Some(out) = out else {
        return;
    };
    let sh = &out.sh[0];
    let v = |n: &str| sh.value(n).unwrap_or_default();
    let dump = &sh.stdout;
    assert_eq!(v("CREATE_STATUS"), "0", "{dump}");
    assert_eq!(v("BOOTED"), "1", "the boot marker once: {dump}");
    assert_eq!(v("STATE_ON"), "poweredOn", "{dump}");
    assert_ne!(v("ANSWER"), "0", "the typed command answered: {dump}");
    assert_eq!(v("SHUTDOWN_STATUS"), "0", "{dump}");
    assert_eq!(v("STATE_OFF"), "poweredOff", "{dump}");
    assert!(dump.contains("VM linux powered off"), "the event: {dump}");
}
