#!/bin/sh
# /init of Keel's test guest: a busybox initramfs around Debian's cloud kernel.
# Built by xtask/src/guest.rs; the kernel command line drives it:
#   keel.cmd=<base64 of a shell command>  run it, print KEEL-CMD-EXIT=<status>
#   keel.then=poweroff|reboot|reboot-once|wait|shell   what to do afterwards
# Without keel.cmd: an interactive shell on the console, poweroff when it exits.

/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /run
mount -t devpts devpts /dev/pts 2>/dev/null

# The kernel package ships no modules.dep: /etc/keel-modules lists the
# modules in dependency order.
kver=$(uname -r)
while read -r mod; do
    [ -n "$mod" ] || continue
    ko=/lib/modules/$kver/$mod.ko
    if [ ! -f "$ko" ]; then
        echo "keel-guest: module $mod is missing"
        continue
    fi
    if ! insmod "$ko" 2>/tmp/insmod.err; then
        grep -q 'File exists' /tmp/insmod.err ||
            echo "keel-guest: insmod $mod failed: $(cat /tmp/insmod.err)"
    fi
done </etc/keel-modules

# Named virtio-console ports as udev links them: /dev/virtio-ports/NAME.
# Names arrive a moment after the module loads: wait up to 3 s for them.
if [ -n "$(ls /sys/bus/virtio/drivers/virtio_console 2>/dev/null | grep virtio)" ]; then
    i=0
    while [ $i -lt 30 ]; do
        n=0 named=0
        for p in /sys/class/virtio-ports/vport*; do
            [ -e "$p" ] && n=$((n + 1)) && [ -f "$p/name" ] && named=$((named + 1))
        done
        [ $n -gt 0 ] && [ $n = $named ] && break
        sleep 0.1
        i=$((i + 1))
    done
    mkdir -p /dev/virtio-ports
    for p in /sys/class/virtio-ports/vport*; do
        [ -f "$p/name" ] && ln -sf "../${p##*/}" "/dev/virtio-ports/$(cat "$p/name")"
    done
fi

# The ACPI power button (button.ko → KEY_POWER on /dev/input/event*) powers
# the guest off: busybox acpid runs /etc/acpi/PWRF/00000080.
acpid -c /etc/acpi -l /tmp/acpid.log 2>/dev/null ||
    echo "keel-guest: acpid failed to start"

echo KEEL-GUEST-BOOTED

cmd=
then=poweroff
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    keel.cmd=*) cmd=${arg#keel.cmd=} ;;
    keel.then=*) then=${arg#keel.then=} ;;
    esac
done

interactive() {
    echo "keel-guest: shell on the console; 'poweroff' (or exit) powers the VM off"
    setsid cttyhack /bin/sh -l
}

if [ -z "$cmd" ]; then
    interactive
    sync
    poweroff -f
fi

echo "$cmd" | base64 -d >/tmp/keel-cmd 2>/dev/null || echo "keel-guest: keel.cmd is not valid base64"
sh /tmp/keel-cmd
echo "KEEL-CMD-EXIT=$?"
sync

case "$then" in
reboot)
    reboot -f
    ;;
reboot-once)
    # The flag lives in CMOS NVRAM byte 0x48, which survives the VM's reboot.
    cmos-toggle
    case $? in
    0)
        echo KEEL-REBOOTING
        reboot -f
        ;;
    1) echo KEEL-SECOND-BOOT ;;
    *) echo "KEEL-CMOS-ERROR: no access to CMOS ports 0x70/0x71" ;;
    esac
    poweroff -f
    ;;
wait)
    while :; do sleep 3600; done
    ;;
shell)
    interactive
    poweroff -f
    ;;
*)
    poweroff -f
    ;;
esac
