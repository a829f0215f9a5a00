// This file owns the container's confinement beyond its namespaces, the
// defaults Docker gives a container: masked and read-only paths under
// /proc and /sys, and no_new_privs for every process the shim starts.
// Capabilities are in shim.go (dropBoundingCaps), device nodes are kept out
// by nodev on the root and volumes (container.go, rootfs.go) with no
// CAP_MKNOD, so /dev holds only the nodes setupRoot makes.
package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maskedPaths are hidden from the container (Docker's defaults, moby
// oci/defaults.go): host-wide kernel state it has no business reading, some
// of it a leak (kcore, keys, timer_list, sched_debug).
var maskedPaths = []string{
	"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
	"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
	"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
}

// readOnlyPaths are visible but not writable (Docker's defaults): /proc/sys
// holds host-wide sysctls (kernel.core_pattern is host root code
// execution), /proc/sysrq-trigger reboots the host.
var readOnlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}

// confineProc masks and write-protects maskedPaths and readOnlyPaths under
// root (the container's future /, with its own /proc and /sys already
// mounted). Paths this kernel does not have are skipped.
func confineProc(root string) error {
	for _, p := range maskedPaths {
		st, err := os.Lstat(filepath.Join(root, p))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
		if st.IsDir() {
			err = mountIn(root, p, "tmpfs", "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0", false)
		} else {
			err = mountIn(root, p, "/dev/null", "", unix.MS_BIND, "", true)
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	for _, p := range readOnlyPaths {
		host := filepath.Join(root, p)
		st, err := os.Lstat(host)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("read-only %s: %w", p, err)
		}
		file := !st.IsDir()
		if err := mountIn(root, p, host, "", unix.MS_BIND|unix.MS_REC, "", file); err != nil {
			return fmt.Errorf("read-only %s: %w", p, err)
		}
		if err := mountIn(root, p, "", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "", file); err != nil {
			return fmt.Errorf("read-only %s: %w", p, err)
		}
	}
	return nil
}

// noNewPrivs sets no_new_privs on the shim, so that no process in the
// container gains privileges through execve: setuid/setgid bits and file
// capabilities are ignored (prctl(2) PR_SET_NO_NEW_PRIVS; the kernel's
// Documentation/userspace-api/no_new_privs.rst). It is inherited by every
// process the shim starts and cannot be unset.
func noNewPrivs() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return nil
}
