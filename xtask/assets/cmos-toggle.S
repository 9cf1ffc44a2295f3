# cmos-toggle: the test guest's reboot-once flag in CMOS NVRAM byte 0x48.
# A static x86-64 Linux program (no libc), assembled with GNU as + ld by
# xtask/src/guest.rs. The cloud kernel has neither /dev/port nor a CMOS
# nvmem device, and /dev/nvram refuses to work when the CMOS checksum is
# invalid (as under QEMU), so this talks to ports 0x70/0x71 directly.
#
# Byte 0x48 is free on QEMU's board too (QEMU keeps its boot flag in 0x38).
#
# Reads byte 0x48, writes 1 if it was 0 and 0 otherwise, and exits with
#   0: it was 0 (now 1)   1: it was not 0 (now 0)   2: no port access

	.set SYS_IOPERM, 173
	.set SYS_EXIT, 60
	.set CMOS_INDEX, 0x70
	.set CMOS_DATA, 0x71
	.set FLAG, 0x48

	.text
	.globl _start
_start:
	mov $SYS_IOPERM, %eax
	mov $CMOS_INDEX, %edi
	mov $2, %esi
	mov $1, %edx
	syscall
	test %rax, %rax
	jnz 1f

	mov $FLAG, %al
	out %al, $CMOS_INDEX
	in $CMOS_DATA, %al
	mov %al, %bl			# the old value
	xor %ecx, %ecx
	test %bl, %bl
	sete %cl			# the new value: old == 0
	mov $FLAG, %al
	out %al, $CMOS_INDEX
	mov %cl, %al
	out %al, $CMOS_DATA

	xor %edi, %edi
	test %bl, %bl
	setne %dil
	mov $SYS_EXIT, %eax
	syscall

1:	mov $2, %edi
	mov $SYS_EXIT, %eax
	syscall
