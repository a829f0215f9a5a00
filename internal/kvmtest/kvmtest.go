// Package kvmtest decides where a test that needs /dev/kvm runs. Where the
// host has a usable /dev/kvm it runs here. Where it has none (some machines
// of this project's kind are themselves guests without a KVM device),
// `make test` sets HYPERD_NO_KVM=1 for the host run and runs these
// packages' tests inside the nested runner's L1 instead (e2e/nested
// TestKVMSuites), which has a real /dev/kvm: here they skip, saying so.
// Anywhere else a missing /dev/kvm fails the test with the reason.
package kvmtest

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Env is set to 1 by make test on a host without a usable /dev/kvm.
const Env = "HYPERD_NO_KVM"

// Usable reports whether /dev/kvm opens (a device node without a driver
// behind it does not).
func Usable() error {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: "/dev/kvm", Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: "/dev/kvm", Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return &os.PathError{Op: "open", Path: "/dev/kvm", Err: unix.ENODEV} // a stray regular file
	}
	return nil
}

// Need fails t unless /dev/kvm is usable, or skips it where HYPERD_NO_KVM=1
// says the nested runner runs it instead.
func Need(t testing.TB) {
	t.Helper()
	err := Usable()
	if err == nil {
		return
	}
	if os.Getenv(Env) == "1" {
		t.Skipf("no usable /dev/kvm on this host (%v): make test runs this inside the nested runner's L1 (e2e/nested TestKVMSuites)", err)
	}
	t.Fatalf("this test needs a usable /dev/kvm (%v); on a host without one, make test runs it inside the nested runner's L1 (HYPERD_NO_KVM=1 here)", err)
}
