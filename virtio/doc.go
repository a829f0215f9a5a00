// Package virtio implements the virtio devices of our VMM in userspace:
// split virtqueues (virtio v1.2 §2.7), the virtio-mmio version 2 transport
// (§4.2.2) and the console (§5.3), entropy (§5.4), block (§5.2), socket
// (§5.10) and network (§5.1) devices.
//
// # Trust
//
// Everything the guest writes — register values, ring indices, descriptor
// addresses, lengths and flags, indirect tables, request headers, vsock
// packet headers, virtio_net headers and frames — is untrusted. Guest memory is only reached through
// Memory, whose accessors check every range without integer overflow.
// Descriptor chains are bounded (at most Queue Size descriptors, at most the
// table's entries inside an indirect table, no nested indirect tables), so
// walking a chain always ends. A malformed chain is returned to the driver
// as used with length 0; a corrupt ring or queue layout stops the queue and
// sets DEVICE_NEEDS_RESET. No guest input may panic the VMM; the fuzz tests
// (FuzzQueue, FuzzDevices, FuzzMMIO, FuzzVsockTx, FuzzVsockSequence,
// FuzzNetTx, FuzzNetRx, FuzzNetRings) check that. A chain's buffers total at most MaxChainBytes.
// A saved state handed to RestoreState is checked as untrusted too
// (FuzzRestoreState).
//
// # API
//
//   - Memory: NewMemory(ram) wraps guest RAM mapped at GPA 0.
//   - Devices (each implements Device; Blk, Vsock and Net have Close):
//     NewConsole(w io.Writer) (Input or ServeInput(r) feeds the guest),
//     NewRng(),
//     OpenBlk(path, readOnly), NewVsock(VsockConfig{GuestCID, UDS, ...}),
//     NewNet(backend, NetConfig{MAC, MTU, Logf}) over a NetBackend:
//     OpenTap(name) or AdoptTap(fd) (Net.Stats counts packets and bytes).
//   - Slots, devices whose backing comes later (VM templates): NewBlkSlot
//     then Blk.Attach(path, readOnly); NewNetSlot(cfg) then
//     Net.Attach(backend).
//   - Transport: NewMMIO(dev, mem, irq) for any Device, or the shorthands
//     NewConsoleMMIO, NewRngMMIO, NewBlkMMIO, NewVsockMMIO and NewNetMMIO,
//     which return the transport and the device.
//   - Queue, Chain, ChainReader/ChainWriter: the split-ring machinery, for
//     writing further devices.
//   - Snapshots: MMIO.Pause, Resume, SaveState() (MMIOState, JSON) and
//     RestoreState(MMIOState) on a new transport.
//
// # Wiring
//
// The VMM, for each device:
//
//   - maps the transport at a MMIOWindowSize (0x200) window of its MMIO bus
//     and forwards exits to MMIO.Read / MMIO.Write with the offset relative
//     to the window base (the vmm.MMIODevice interface);
//   - implements Interrupt with an eventfd registered with KVM_IRQFD on the
//     device's GSI (EventFD does this, or the VMM's own). The transport sets
//     InterruptStatus and calls Trigger once per event, i.e. edge
//     semantics; a level-triggered wiring with a resample fd re-asserts
//     while MMIO.InterruptPending is true;
//   - optionally registers, for each queue q < MMIO.NumQueues(), an
//     ioeventfd at base+RegQueueNotify (4 bytes, datamatch q) and calls
//     MMIO.NotifyQueue(q) when it fires (MMIO.ServeNotify does the loop);
//     without it, the QueueNotify write exit calls NotifyQueue itself;
//   - describes the devices to the guest (ACPI DSDT devices with _HID
//     "LNRO0005" and a memory + interrupt _CRS, or virtio_mmio.device= on
//     kernels that support it);
//   - on shutdown calls MMIO.Close (device reset) and the device's Close.
//
// Device processing runs on the caller's goroutine (a vCPU thread or the
// ioeventfd goroutine); devices serialise internally. The vsock device
// additionally runs goroutines per host connection, which fill the rx
// queue and raise the interrupt themselves; the network device runs one
// goroutine reading its backend into the receiveq.
//
// # Network device
//
// Modern only (VERSION_1: the virtio_net_hdr is always 12 bytes). Offered:
// MAC, MTU, STATUS (link always up), MRG_RXBUF, and with a backend that
// carries virtio_net_hdr (a tap with IFF_VNET_HDR, TUNSETVNETHDRSZ 12) CSUM
// and HOST_TSO4/6 (guest headers go to the tap as they are, checked
// against the negotiated features) plus the GUEST_CSUM and GUEST_TSO4/6
// that TUNSETOFFLOAD accepted when the tap was opened. At activation the
// tap's offloads are narrowed to what the driver took; if that ioctl fails
// (a jailed VMM's seccomp filter), received partial checksums are
// completed in software and TSO frames dropped. Transmit: each chain is
// copied, checked and written to the backend in one write; chains are
// always returned with length 0. Receive: a goroutine reads one frame at a
// time and, while the driver has no (or not enough) buffers, or no driver
// is active, keeps it and waits for a notification (back-pressure: the
// tap queues or drops, never us); Close ends the wait. Frames above
// NetMaxFrame (65550 bytes) or below an Ethernet header are dropped either
// way; without MRG_RXBUF a frame larger than the driver's chain is dropped
// and the chain kept for the next one.
//
// # Snapshots
//
// MMIO.Pause stops a device touching guest memory: notifications are
// recorded instead of delivered (after waiting for those in flight), and
// devices with goroutines of their own stop them filling queues (vsock
// host connections, net receive, console input). Resume serves what was
// recorded. SaveState (paused only) returns the transport registers, each
// queue's registers and ring positions, and the configuration space;
// guest memory is saved by the VMM. No device of this package has state
// of its own (MMIOState.Device stays empty): requests complete within a
// notification, net's receive side gives back the chains it holds for a
// frame by saving an earlier ring position, and vsock connections belong
// to the process (a restored vsock has none and sends the guest a
// TRANSPORT_RESET event, then keeps host packets back until the driver
// re-posted its event buffer, Linux's sign it handled the event, or a
// second passed).
//
// RestoreState runs on a new transport over a new device (new disk files,
// tap, vsock socket and CID) before the vCPUs: it validates the state as
// untrusted input, restores the registers, activates the device at the
// saved ring positions (checked against guest memory: used.idx must
// match, nothing may be in flight), signals a configuration change when
// the configuration space differs from the saved one (a slot attached
// with a disk, a new CID or MAC), re-raises an unacknowledged interrupt,
// and notifies every active queue once. Slots keep their offered features
// fixed whatever they are backed with: a blk slot never offers RO (a
// read-only image fails writes instead), a net slot offers every offload
// and requires a backend with virtio_net_hdr if the driver took CSUM or
// HOST_TSO.
//
// # vsock host side
//
// Firecracker's hybrid scheme: the device listens on VsockConfig.UDS. A
// host client connects, writes "CONNECT <port>\n"; the device sends the
// guest a REQUEST from host CID 2 and a fresh host port (from 2^30 up); when
// the guest answers RESPONSE the client reads "OK <hostport>\n" and then the
// raw stream. A guest RST, or no answer within ConnectTimeout, closes the
// client's connection without the OK line. A guest connecting to CID 2
// port P is connected to the unix socket "<UDS>_<P>" (RST if nobody
// listens). Flow control follows §5.10.6.3 both ways: the device never
// sends beyond the guest's buf_alloc - (tx_cnt - fwd_cnt), asks with
// CREDIT_REQUEST when stalled, advertises 256 KiB per connection, returns
// credit (CREDIT_UPDATE) as the host socket drains, and resets a guest that
// overruns it. Host EOF becomes SHUTDOWN(SEND) after the pending data; a
// guest SHUTDOWN(SEND) half-closes the host socket; a full guest SHUTDOWN
// is answered with RST once buffered data is written.
//
// # Deliberate departures and limits
//
//   - VIRTIO_F_EVENT_IDX, packed rings, VIRTIO_F_RING_RESET and shared memory
//     regions are not offered. VIRTIO_F_INDIRECT_DESC is.
//   - An indirect descriptor must be the only descriptor of its chain (what
//     Linux does); the spec allows a device to be that strict about chains
//     it cannot handle.
//   - The vsock device supports stream sockets only (no SEQPACKET).
//   - The network device has one queue pair, no control queue (no
//     CTRL_VQ: no MAC filtering, promiscuous switch, announce or MQ), no
//     UFO/USO/ECN offloads, and no vhost: every frame is a read or write
//     of the tap. It does not segment TSO frames in software.
//   - One package, one file per device, rather than a subpackage per
//     device: the devices share unexported plumbing (the base lock and
//     queue set, the transport's broken-queue reporting) and the test
//     driver, and vmm/ already imports virtio.NewVsock and friends.
//     Splitting would export that plumbing for no caller's benefit.
//   - Notifications that arrive before DRIVER_OK are ignored (§3.1.1
//     forbids them); devices that can have work pending at activation
//     (vsock rx, console ServeInput) start it from Activate.
package virtio
