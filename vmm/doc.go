// Package vmm runs one virtual machine: it joins the kvm package (VM,
// memory, vCPUs), the guest package (kernel, initrd, boot tables) and the
// virtio devices into a machine, runs one locked OS thread per vCPU, routes
// port I/O and MMIO exits to the devices (a 16550A UART for the console,
// virtio-mmio for the rest), and reports how the guest stopped: poweroff,
// reboot, a triple fault, or an error. A running machine can be paused and
// snapshotted (snapshot.go: vCPU, interrupt controller, clock and device
// state, memory written sparse), and a machine restored from a snapshot
// (restore.go) with its memory mapped copy-on-write from the snapshot's
// memory file and devices of its own.
//
// On hosts whose KVM is software-nested, KVM's instruction emulator cannot
// execute every ring-0 instruction; when KVM_RUN reports such an emulation
// failure, vmm finishes the few instructions a Linux boot needs itself
// (see emulate.go) and resumes the guest.
package vmm
