// Package virtio implements the virtio devices of our VMM in userspace:
// split virtqueues (virtio v1.2 §2.7), the virtio-mmio version 2 transport
// (§4.2.2) and the console (§5.3), entropy (§5.4), block (§5.2) and socket
// (§5.10) devices.
//
// # Trust
//
// Everything the guest writes — register values, ring indices, descriptor
// addresses, lengths and flags, indirect tables, request headers, vsock
// packet headers — is untrusted. Guest memory is only reached through
// Memory, whose accessors check every range without integer overflow.
// Descriptor chains are bounded (at most Queue Size descriptors, at most the
// table's entries inside an indirect table, no nested indirect tables), so
// walking a chain always ends. A malformed chain is returned to the driver
// as used with length 0; a corrupt ring or queue layout stops the queue and
// sets DEVICE_NEEDS_RESET. No guest input may panic the VMM; the fuzz tests
// (FuzzQueue, FuzzVsockTx, ...) check that.
//
// # Wiring
//
// Each device sits behind an MMIO transport (NewConsoleMMIO, NewRngMMIO,
// NewBlkMMIO, NewVsockMMIO, or NewMMIO for any Device). The VMM:
//
//   - maps the transport at a MMIOWindowSize (0x200) window of its MMIO bus
//     and forwards exits to MMIO.Read / MMIO.Write with the offset relative
//     to the window base;
//   - implements Interrupt with an irqfd (KVM_IRQFD) on the device's GSI;
//     the transport calls Trigger after setting InterruptStatus;
//   - optionally registers an ioeventfd at base+RegQueueNotify for each
//     queue index (datamatch) and calls MMIO.NotifyQueue(q) when it fires;
//     without it, the QueueNotify write exit does the same;
//   - describes the devices to the guest (ACPI DSDT "LNRO0005" entries, or
//     virtio_mmio.device= on kernels that support it).
//
// Device processing runs on the caller's goroutine (the vCPU thread or the
// ioeventfd goroutine); the vsock device additionally runs goroutines per
// host connection, which feed the rx queue and raise interrupts themselves.
//
// # Deliberate departures and limits
//
//   - VIRTIO_F_EVENT_IDX, packed rings, VIRTIO_F_RING_RESET and shared memory
//     regions are not offered. VIRTIO_F_INDIRECT_DESC is.
//   - An indirect descriptor must be the only descriptor of its chain (what
//     Linux does); the spec allows a device to be that strict about chains
//     it cannot handle.
//   - The vsock device supports stream sockets only (no SEQPACKET).
package virtio
