#!/bin/sh
# /init of the KVM rig's L1 VM (see xtask/src/rig.rs): load KVM, run
# /rig/cmd with its output on the console, print its exit status, power off.

/bin/busybox --install -s
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /run
mount -t devpts devpts /dev/pts 2>/dev/null
# L2 guests may have more memory than L1 (e.g. 5 GiB in 4 GiB): untouched
# guest memory costs nothing, so never refuse the mapping.
echo 1 >/proc/sys/vm/overcommit_memory
# Loopback, for helpers that talk to each other over 127.0.0.1.
/bin/busybox ip link set lo up

kver=$(uname -r)
while read -r mod; do
    [ -n "$mod" ] || continue
    if ! insmod "/lib/modules/$kver/$mod.ko" 2>/tmp/insmod.err; then
        echo "KEEL-RIG-ERROR: insmod $mod failed: $(cat /tmp/insmod.err)"
    fi
done </etc/keel-modules

if [ ! -c /dev/kvm ]; then
    echo "KEEL-RIG-NOKVM: /dev/kvm did not appear after loading kvm-amd"
    dmesg | grep -i -E 'kvm|svm' | tail -n 5
    poweroff -f
fi

cd /
if [ -e /rig/interactive ]; then
    setsid cttyhack /bin/sh /rig/cmd
else
    /bin/sh /rig/cmd </dev/null
fi
echo "KEEL-RIG-EXIT=$?"
sync
poweroff -f
