//! `crates/net`'s own integration tests (crates/net/tests/netns.rs) run
//! inside the KVM rig's L1, whose Debian kernel has what a development
//! machine's may lack (bridge VLAN filtering here): there none of them may
//! skip. The test binary is built on the host and carried into L1.

use std::process::Command;

use e2e::Session;

/// The `netns` test executable of the `net` package, built now.
fn netns_test_binary() -> std::path::PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "test",
            "--quiet",
            "-p",
            "net",
            "--test",
            "netns",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(xtask::paths::workspace_root())
        .output()
        .expect("running cargo test --no-run");
    assert!(out.status.success(), "building net's tests failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "netns")
        .find_map(|v| v["executable"].as_str().map(std::path::PathBuf::from))
        .expect("cargo named the netns test executable")
}

#[test]
fn the_net_library_tests_pass_in_l1_without_skipping() {
    let tmp = std::env::temp_dir().join(format!("keel-e2e-netlib-rig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let bin = xtask::demo::stripped(&netns_test_binary(), &tmp).expect("stripping");
    let out = Session::new()
        .file(&bin, "netns-tests")
        .sh("chmod +x netns-tests\n./netns-tests --test-threads=1 --nocapture 2>&1\necho NETNS_STATUS=$?\n")
        .run();
    let _ = std::fs::remove_dir_all(&tmp);
    let Some(out) = out else {
        return;
    };
    let sh = &out.sh[0];
    let dump = &sh.stdout;
    assert_eq!(sh.value("NETNS_STATUS").as_deref(), Some("0"), "{dump}");
    assert!(dump.contains("test result: ok"), "{dump}");
    assert!(!dump.contains("SKIPPED"), "nothing may skip in L1: {dump}");
}
