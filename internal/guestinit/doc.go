// Package guestinit is what the project's init programs share. The test
// /init programs of vmm/testdata (bootinit, netinit, snapinit) use its
// Console: the start of a minimal PID 1 (devtmpfs on /dev, proc on /proc,
// the serial console), result lines on that console under a prefix the
// host's test looks for, and powering the guest off. Those programs, the
// nested runner's l1init and the guest agent's PID 1 use its system
// helpers: bringing offline CPUs online and loading kernel modules from an
// order file, with parameters from the kernel command line.
//
// The test programs are built static with CGO_ENABLED=0 into test
// initramfs images; this package keeps to the standard library and
// x/sys/unix.
package guestinit
