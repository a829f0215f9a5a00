// Package guest is test tier 6 of DESIGN.md, "the guest side in a real
// kernel": its tests boot `make kernel`'s kernel (build/vmlinuz) with our
// initramfs (initramfs.Build: hyper-agent as /init plus the guest's kernel
// modules) under qemu-system-x86_64 with TCG — no KVM, so it runs wherever
// QEMU does — and drive the agent, PID 1 of the guest, over a
// virtio-console (hyper_agent_serial=/dev/hvc0 on the kernel command line;
// every connection multiplexed with agent/mux). The image's rootfs is an
// ext4 image of a busybox tree on a read-only virtio-blk disk, the overlay
// lower of every container.
//
// The agent channel must not lose a byte, and a virtconsole does when its
// chardev's socket is full: QEMU drops what it could not write
// (hw/char/virtio-console.c, flush_buf; a fresh-clone CI run lost
// large_stdout to "mux: frame type 55 with length 1375946983" so, when the
// test process fell behind reading). The harness therefore hands QEMU one
// end of a socketpair whose send buffer (64 MiB) is far above what the
// mux's credit windows let the guest have in flight; the "slow host
// reader" case stalls the host's reads to prove nothing is lost. (A
// virtserialport, which QEMU throttles instead, stalled requests for a
// minute at a time under this QEMU's TCG: not used.)
//
// One VM is booted per test run; the cases run against it in turn: module
// loading, the overlay root on the virtio-blk lower, the container
// namespaces, exit codes and signals, exec, tty and resize, a few MB of
// stdout (also read by a stalling host), stdin EOF, localhost between
// containers, cgroup v2 stats, commit with a whiteout, and finally
// shutdown, after which QEMU must exit by itself because the guest powered
// off. The guest's kernel console
// (ttyS0) is kept in a file and shown with any failure.
//
// Missing prerequisites (root, qemu-system-x86_64, build/vmlinuz and
// build/modules from `make kernel` — or next to $HYPERD_KERNEL —,
// mkfs.ext4, /bin/busybox) fail the test with the reason; nothing is
// skipped. The whole VM is killed after five minutes (a passing run takes
// about 20 s); HYPERD_GUEST_CONSOLE=FILE keeps the guest's console.
//
// The package holds tests only.
package guest
