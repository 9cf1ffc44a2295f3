//! Payload guests (tiny PVH ELFs) on the native /dev/kvm: exit statuses and
//! power handling, in milliseconds.

use e2e::{run_payload, Payload};

#[test]
fn ok_payload_prints_its_marker_and_powers_off() {
    let Some(out) = run_payload(Payload::Ok, &[], None) else {
        return;
    };
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert_eq!(out.count(Payload::Ok.marker()), 1, "{}", out.dump());
}

#[test]
fn triple_fault_exits_3() {
    let Some(out) = run_payload(Payload::TripleFault, &[], None) else {
        return;
    };
    assert_eq!(out.status, Some(3), "{}", out.dump());
    assert!(
        out.stdout.contains(Payload::TripleFault.marker()),
        "{}",
        out.dump()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.dump());
}

#[test]
fn reset_with_no_reboot_exits_0() {
    let Some(out) = run_payload(Payload::Reset, &["--no-reboot"], None) else {
        return;
    };
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert_eq!(out.count(Payload::Reset.marker()), 1, "{}", out.dump());
}

#[test]
fn reset_without_no_reboot_restarts_the_guest() {
    // The payload resets on every boot: seeing its marker twice proves the
    // VM restarted in place. SIGTERM then ends it: either at the next reset
    // (a reset after the power button counts as shutting down: 0) or, at
    // the latest, hard after the shutdown timeout (5).
    let Some(out) = run_payload(
        Payload::Reset,
        &["--shutdown-timeout", "1"],
        Some(&format!("{0}\n{0}", Payload::Reset.marker())),
    ) else {
        return;
    };
    assert!(out.count(Payload::Reset.marker()) >= 2, "{}", out.dump());
    assert!(matches!(out.status, Some(0) | Some(5)), "{}", out.dump());
}

#[test]
fn hang_and_sigterm_exits_5_after_the_shutdown_timeout() {
    let Some(out) = run_payload(
        Payload::Hang,
        &["--shutdown-timeout", "1"],
        Some(Payload::Hang.marker()),
    ) else {
        return;
    };
    assert_eq!(out.status, Some(5), "{}", out.dump());
}

#[test]
fn sigterm_presses_the_power_button() {
    let Some(out) = run_payload(Payload::Button, &[], Some(Payload::Button.marker())) else {
        return;
    };
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert!(
        out.stdout.contains("KEEL-PAYLOAD-BUTTON\n"),
        "{}",
        out.dump()
    );
}

#[test]
fn serial_off_still_runs_the_guest() {
    let Some(out) = run_payload(Payload::Ok, &["--serial", "off"], None) else {
        return;
    };
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert!(!out.stdout.contains(Payload::Ok.marker()), "{}", out.dump());
}
