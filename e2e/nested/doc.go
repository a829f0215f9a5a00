// Package nested is the nested hardware-virtualization test runner. This
// project's machines have a software-nested KVM (PVM, no vmx/svm) on which
// a guest kernel cannot finish booting; QEMU's TCG with -cpu max emulates
// AMD SVM with nested paging, so a Linux booted there (L1) gets a real
// /dev/kvm from kvm-amd, and our VMM runs pod VMs inside it.
//
// The runner builds L1's initramfs (image.go, tree.go): l1init as PID 1,
// the kvm and virtio-net modules `make kernel` extracts (build/l1modules),
// the project's binaries and guest kernel at their host paths, the host
// tools the kvm suites call with their shared libraries, and the test
// binaries. It boots L1 under QEMU (l1.go) with user networking, runs
// commands there over TCP through a hostfwd (proto.go), streams their
// output and returns their exit status under a deadline, and can expose
// more L1 ports (hyperd's --host tcp://) on host loopback. It tells an L1
// hang from a slow command: l1init writes a heartbeat to L1's second serial
// port every second, independent of the network and of any test; a silent
// heartbeat fails the command at once with every vCPU's registers from
// QEMU's monitor (QMP), every local APIC and L1's console tail. Each suite
// runs in a fresh L1. When a failed suite's L1 state proves QEMU lost an
// interrupt (lapic.go: a vCPU halted with IF=1 while its APIC holds a
// deliverable vector, unchanged seconds later), or L1's own kernel printed
// a crash report while it ran (fault.go), the suite is run once more in a
// fresh L1 and the report says so; any other hang, and any test failure,
// fails the suite. L1 boots with one vCPU online; l1init holds a reference
// on every static key pod VMs would switch (a KVM VM with a vCPU that never
// runs, a memory cgroup, an ingress qdisc, the network's once keys made)
// and only then brings the other vCPU up, so that no code the kernel
// patches is patched while another vCPU runs it: that froze L1 under TCG
// (l1init/keys.go). l1init traces every kernel code patch after that and
// sends it with the command's exit; a command during which L1 patched its
// code fails, naming the key (CodePatchError), whether or not it passed.
//
// The kvm suites (suites_test.go) run through it in `make test` where the
// host lacks vmx/svm; nestedrun is its command for make demo-kvm and make
// bench. Tests and tooling only: nothing here is part of hyperd.
package nested
