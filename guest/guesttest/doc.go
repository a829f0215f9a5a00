// Package guesttest builds tiny guest kernels for tests of the VMM and the
// kvm sandbox driver: ELF64 x86-64 files with a PVH entry note (the Xen
// "PHYS32_ENTRY" note our loader boots through, see guest/elf.go) whose
// 32-bit protected-mode code writes a message to COM1 and then powers the
// machine off, resets it, triple-faults or halts. They boot in
// milliseconds even on software-nested KVM, so they exercise what a real
// kernel reaches here only after minutes, or never: how a VM stops.
package guesttest
