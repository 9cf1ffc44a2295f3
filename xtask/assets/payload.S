# Keel's PVH payload guests: tiny ELF64 images that the PVH boot protocol
# enters in 32-bit protected mode (paging off, flat segments) at pvh_start.
# Assembled with GNU as; the variant is chosen with --defsym VARIANT_<NAME>=1
# (see xtask/src/payload.rs). They talk to the board through ports only:
#   COM1 0x3f8 (LSR 0x3fd), PM1 status 0x600, PM1 enable 0x602,
#   PM1 control 0x604 (S5 = SLP_TYP 5 | SLP_EN), i8042 command 0x64.

	.set COM1, 0x3f8
	.set COM1_LSR, 0x3fd
	.set PM1_STS, 0x600
	.set PM1_EN, 0x602
	.set PM1_CNT, 0x604
	.set PWRBTN, 0x0100
	.set S5_SLEEP, (5 << 10) | (1 << 13)
	.set DEBUG_EXIT, 0xf4

# The PVH entry note: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY (18).
	.section .note.Xen, "a", @note
	.p2align 2
	.long 4
	.long 4
	.long 18
	.asciz "Xen"
	.long pvh_start

	.text
	.code32
	.globl pvh_start
pvh_start:
	cli
	cld
	mov $stack_top, %esp

.ifdef VARIANT_OK
	mov $msg_ok, %esi
	call puts
	jmp poweroff
.endif

.ifdef VARIANT_TRIPLE_FAULT
	mov $msg_triple_fault, %esi
	call puts
	# An IDT with limit 0: #UD cannot be delivered (#GP), nor can #GP
	# (#DF), nor #DF: the CPU shuts down. (ud2, not int3: PVM's KVM cannot
	# emulate int3 and would report an emulation failure instead.)
	lidt idt_empty
	ud2
	jmp halt
.endif

.ifdef VARIANT_RESET
	mov $msg_reset, %esi
	call puts
	mov $0xfe, %al
	out %al, $0x64
	jmp halt
.endif

.ifdef VARIANT_HANG
	mov $msg_hang, %esi
	call puts
	jmp halt
.endif

.ifdef VARIANT_BUTTON
	mov $msg_ready, %esi
	call puts
	mov $PM1_EN, %dx
	mov $PWRBTN, %ax
	out %ax, %dx
1:	pause
	mov $PM1_STS, %dx
	in %dx, %ax
	test $PWRBTN, %ax
	jz 1b
	mov $PWRBTN, %ax		# write 1 to clear
	out %ax, %dx
	mov $msg_button, %esi
	call puts
	jmp poweroff
.endif

.ifdef VARIANT_ECHO
	mov $msg_echo, %esi
	call puts
1:	mov $COM1_LSR, %dx
	in %dx, %al
	test $0x01, %al		# data ready
	jnz 2f
	pause
	jmp 1b
2:	mov $COM1, %dx
	in %dx, %al
	call putc
	jmp 1b
.endif

	jmp halt

# ACPI S5 through the PM1a control block; then QEMU's isa-debug-exit port
# (0xf4), so the same payload also ends a QEMU microvm in benchmarks; halt if
# the board ignores both.
poweroff:
	mov $PM1_CNT, %dx
	mov $S5_SLEEP, %ax
	out %ax, %dx
	mov $DEBUG_EXIT, %dx
	xor %eax, %eax
	out %al, %dx
halt:
	cli
	hlt
	jmp halt

# Writes the NUL-terminated string at %esi to COM1.
puts:
	lodsb
	test %al, %al
	jz 1f
	call putc
	jmp puts
1:	ret

# Writes %al to COM1 once the transmitter holding register is empty.
putc:
	mov %al, %bl
	mov $COM1_LSR, %dx
1:	in %dx, %al
	test $0x20, %al
	jz 1b
	mov $COM1, %dx
	mov %bl, %al
	out %al, %dx
	ret

	.section .rodata
msg_ok:			.asciz "KEEL-PAYLOAD-OK\n"
msg_triple_fault:	.asciz "KEEL-PAYLOAD-TRIPLE-FAULT\n"
msg_reset:		.asciz "KEEL-PAYLOAD-RESET\n"
msg_hang:		.asciz "KEEL-PAYLOAD-HANG\n"
msg_ready:		.asciz "KEEL-PAYLOAD-READY\n"
msg_button:		.asciz "KEEL-PAYLOAD-BUTTON\n"
msg_echo:		.asciz "KEEL-PAYLOAD-ECHO\n"
	.p2align 2
idt_empty:
	.word 0
	.long 0

	.data
	.p2align 4
stack:
	.fill 4096, 1, 0
stack_top:
