// Package kvm is a small, typed Go API over the Linux KVM interface
// (/dev/kvm), built on golang.org/x/sys/unix.
//
// It owns exactly the kernel interface and nothing above it:
//
//   - System: the /dev/kvm fd — API version, extensions, supported and
//     emulated CPUID, MSR index lists, the size of the per-vCPU kvm_run page.
//   - VM: user memory regions (read-only slots too), TSS and identity-map
//     addresses, the in-kernel IRQCHIP and PIT, IRQ lines, MSI signalling,
//     irqfd, ioeventfd, the guest clock, capabilities.
//   - VCPU: registers, special registers, FPU, MSRs, CPUID, LAPIC, MP state,
//     vCPU events, and KVM_RUN with the shared kvm_run page decoded into typed
//     exits (Exit). Kick sets immediate_exit and signals the vCPU's thread so
//     another goroutine can take a vCPU out of KVM_RUN.
//
// Every vCPU must be run on its own locked OS thread: call
// runtime.LockOSThread before the first Run and keep running that vCPU from
// the same goroutine. Kick relies on the thread id recorded by Run.
//
// Struct layouts mirror <linux/kvm.h> and <asm/kvm.h> (x86_64); their sizes
// and the ioctl numbers are checked against the installed kernel headers by
// TestHeaderLayouts. The authoritative description of every ioctl is the
// kernel's Documentation/virt/kvm/api.rst ("The Definitive KVM API
// Documentation"); section numbers below refer to it.
//
// Putting a guest in memory is package guest's job; wiring devices and vCPU
// threads into a running machine is package vmm's.
package kvm
