//! virtio-console named ports: the guest's stock virtio_console driver finds
//! the port by its name; a line a host program writes on the port's Unix
//! socket is read in the guest and echoed back; the host closing the socket
//! reaches the guest (PORT_OPEN 0: its read ends).

use std::path::Path;

use e2e::LinuxVm;

/// The host side, beside keel-vmm.
fn keel_sock() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keel-sock"))
}

const GUEST: &str = r#"
for p in /sys/class/virtio-ports/vport*; do echo "PORT: ${p##*/} $(cat $p/name 2>/dev/null)"; done
echo LINK=$(readlink /dev/virtio-ports/org.keel.agent.0)
echo OTHER=$(readlink /dev/virtio-ports/second)
exec 3<>/dev/virtio-ports/org.keel.agent.0
# Until the host connects, a read ends at once (no data, host closed).
i=0
while [ $i -lt 1200 ]; do
    if read -r line <&3; then break; fi
    sleep 0.1
    i=$((i + 1))
done
echo "GOT=$line"
echo "ECHO:$line" >&3
# The host closes after the echo: the next read ends.
if read -r more <&3; then echo "MORE=$more"; else echo HOST_CLOSED=1; fi
exec 3<&-
"#;

const DRIVER: &str = "
keel-sock connect agent.sock --send 'hello from the host\\n' --lines 1 --timeout 200 >reply.txt
echo SOCK_STATUS=$?
echo \"REPLY=$(cat reply.txt)\"
";

#[test]
fn host_line_is_echoed_by_the_guest_through_a_named_port() {
    let Some(out) = LinuxVm::new()
        .arg("--console-port")
        .arg("name=org.keel.agent.0,socket=agent.sock")
        .arg("--console-port")
        .arg("name=second,socket=second.sock")
        .cmd(GUEST)
        .run_with_driver(DRIVER, &[keel_sock()])
    else {
        return;
    };
    let vm = &out.vm;
    assert_eq!(vm.status, Some(0), "{}", out.dump());
    assert_eq!(
        vm.value("LINK").as_deref(),
        Some("../vport0p1"),
        "{}",
        out.dump()
    );
    assert_eq!(
        vm.value("OTHER").as_deref(),
        Some("../vport0p2"),
        "{}",
        out.dump()
    );
    assert!(
        vm.stdout.contains("PORT: vport0p1 org.keel.agent.0"),
        "{}",
        out.dump()
    );
    assert_eq!(
        vm.value("GOT").as_deref(),
        Some("hello from the host"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.value("SOCK_STATUS").as_deref(),
        Some("0"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.value("REPLY").as_deref(),
        Some("ECHO:hello from the host"),
        "{}",
        out.dump()
    );
    assert_eq!(
        vm.value("HOST_CLOSED").as_deref(),
        Some("1"),
        "{}",
        out.dump()
    );
}

#[test]
fn bad_console_port_values_exit_2_with_one_line() {
    for (args, needle) in [
        (
            &["--console-port", "name=a"][..],
            "key 'socket' is required",
        ),
        (&["--console-port", "name=a b,socket=s"], "invalid name"),
        (
            &["--console-port", "name=a,socket=s,speed=1"],
            "unknown key 'speed'",
        ),
        (
            &[
                "--console-port",
                "name=a,socket=/tmp/keel-e2e-cp-1",
                "--console-port",
                "name=a,socket=/tmp/keel-e2e-cp-2",
            ],
            "Two console ports are named 'a'",
        ),
        (
            &["--console-port", "name=a,socket=/nonexistent/dir/a.sock"],
            "Cannot listen on /nonexistent/dir/a.sock",
        ),
    ] {
        // A plain file as the kernel: ports are checked before it is loaded.
        let kernel = e2e::keel_vmm().display().to_string();
        let mut all = vec!["--kernel", kernel.as_str()];
        all.extend_from_slice(args);
        let out = e2e::run_keel_vmm(&all);
        assert_eq!(out.status, Some(2), "{args:?}: {}", out.dump());
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.dump());
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.dump());
    }
}
