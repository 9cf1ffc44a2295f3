#!/bin/sh
# Run by busybox acpid when the ACPI power button is pressed.
echo KEEL-POWER-BUTTON >/dev/console
sync
poweroff -f
