// This file owns the container's confinement beyond its namespaces, the
// defaults Docker gives a container: masked and read-only paths under
// /proc and /sys, no_new_privs for every process the shim starts, and the
// default seccomp filter.
// Capabilities are in shim.go (dropBoundingCaps), device nodes are kept out
// by nodev on the root and volumes (container.go, rootfs.go) with no
// CAP_MKNOD, so /dev holds only the nodes setupRoot makes.
package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hyperhq/hyperd-go/internal/seccomp"
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

// containerSeccomp is the containers' default seccomp filter: everything is
// allowed but what Docker's default profile refuses a container and that
// no image needs, which fails with EPERM (moby's profiles/seccomp
// default.json, as a deny-list): kernel modules, kexec, reboot, swap, the
// clock, accounting, keyrings, bpf, perf, userfaultfd, namespaces (unshare,
// setns, clone with a CLONE_NEW* flag: a user namespace hands its creator
// every capability in it), mounts and the new mount API, handle-based opens,
// other processes' memory, NUMA policy, quotas and legacy calls. Most of
// them also need a capability the container no longer has: the filter is
// the second wall, and the kernel code behind them is kept out of reach.
func containerSeccomp() seccomp.Policy {
	deny := []uintptr{
		unix.SYS_ACCT, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY, unix.SYS_KEYCTL, unix.SYS_BPF,
		unix.SYS_CLOCK_ADJTIME, unix.SYS_CLOCK_SETTIME, unix.SYS_SETTIMEOFDAY, unix.SYS_ADJTIMEX,
		unix.SYS_CREATE_MODULE, unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
		unix.SYS_GET_KERNEL_SYMS, unix.SYS_QUERY_MODULE,
		unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD, unix.SYS_REBOOT, unix.SYS_SWAPON, unix.SYS_SWAPOFF,
		unix.SYS_IOPL, unix.SYS_IOPERM, unix.SYS_KCMP, unix.SYS_LOOKUP_DCOOKIE,
		unix.SYS_GET_MEMPOLICY, unix.SYS_SET_MEMPOLICY, unix.SYS_MBIND, unix.SYS_MOVE_PAGES,
		unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_MOUNT_SETATTR, unix.SYS_MOVE_MOUNT,
		unix.SYS_OPEN_TREE, unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK,
		unix.SYS_NAME_TO_HANDLE_AT, unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_NFSSERVCTL,
		unix.SYS_PERF_EVENT_OPEN, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV,
		unix.SYS_QUOTACTL, unix.SYS_SETNS, unix.SYS_UNSHARE, unix.SYS_SYSFS, unix.SYS__SYSCTL,
		unix.SYS_USELIB, unix.SYS_USERFAULTFD, unix.SYS_USTAT, unix.SYS_VHANGUP,
	}
	eperm := seccomp.Errno(unix.EPERM)
	p := seccomp.Policy{Default: seccomp.Allow}
	for _, nr := range deny {
		p.Rules = append(p.Rules, seccomp.Rule{Syscall: nr, Action: eperm})
	}
	const newNS = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
		unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME
	p.Rules = append(p.Rules,
		seccomp.Rule{Syscall: unix.SYS_CLONE, Args: []seccomp.Arg{{Index: 0, Mask: newNS, Value: 0}}, Action: seccomp.Allow},
		seccomp.Rule{Syscall: unix.SYS_CLONE, Action: eperm},
		// clone3's flags are behind a pointer no filter can read: ENOSYS
		// makes libc fall back to clone, whose flags are checked above
		seccomp.Rule{Syscall: unix.SYS_CLONE3, Action: seccomp.Errno(unix.ENOSYS)},
	)
	return p
}
