// Package guestinit is what the test /init programs of vmm/testdata
// (bootinit, netinit) share: the start of a minimal PID 1 (devtmpfs on
// /dev, proc on /proc, the serial console), result lines on that console
// under a prefix the host's test looks for, and powering the guest off.
//
// The programs are built static with CGO_ENABLED=0 into test initramfs
// images; this package keeps to the standard library and x/sys/unix.
package guestinit
