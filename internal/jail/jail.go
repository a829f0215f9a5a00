// This file owns entering the jail in the confined process: the root
// pivot, the privilege drop, and the seccomp filter.

package jail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/internal/seccomp"
)

// Cloneflags are the namespaces a jailed process starts in: its own mount
// table (for the pivot), pid space (it is pid 1 and sees no other
// process), IPC, hostname, and network (it has only a loopback that is
// down: the VMM's sockets are unix sockets, which are reached by path).
const Cloneflags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWNET

// DefaultID is the uid and gid a jailed process runs as unless told
// otherwise: a fixed id far above the ranges distributions hand out, as
// Firecracker's jailer --uid/--gid would be given.
const DefaultID = 900000

// Config is what Enter does to the calling process.
type Config struct {
	// Root is the jail directory, a host path: it becomes "/", mounted
	// read-only, nodev, nosuid, noexec. Nothing under it is mounted.
	Root string
	// UID and GID the process drops to; both must be non-zero.
	UID, GID int
	// Seccomp is installed last, on every thread; nil installs none.
	Seccomp *seccomp.Policy
	// NoPivot moves the jail onto "/" and chroots instead of pivot_root,
	// which refuses a root on the initial ramfs (pivot_root(2), NOTES; the
	// nested runner's L1 boots from one). Enter falls back to it by itself
	// when pivot_root says EINVAL. It is as tight here: chroot needs
	// CAP_SYS_CHROOT, which the process no longer has, and its filter
	// should refuse chroot.
	NoPivot bool
}

// SysProcAttr is how a parent starts a process that will call Enter: in
// its own session and fresh namespaces, directly in cg when cg is not nil.
func SysProcAttr(cg *Cgroup) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setsid: true, Cloneflags: Cloneflags}
	if cg != nil {
		a.UseCgroupFD, a.CgroupFD = true, cg.FD()
	}
	return a
}

// Enter confines the calling process (see the package comment for what it
// must have opened first). On error the process is in an unknown state
// between host and jail and must exit.
func Enter(c Config) error {
	if c.UID <= 0 || c.GID <= 0 {
		return fmt.Errorf("jail: uid %d gid %d: both must be unprivileged (> 0)", c.UID, c.GID)
	}
	if err := checkNamespaces(); err != nil {
		return err
	}
	root, err := filepath.Abs(c.Root)
	if err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := pivot(root, c.NoPivot); err != nil {
		return err
	}
	if err := dropPrivileges(c.UID, c.GID); err != nil {
		return err
	}
	if c.Seccomp != nil {
		if err := c.Seccomp.Install(); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
	}
	return nil
}

// checkNamespaces refuses to pivot in the host's mount namespace: a
// process started without Cloneflags would change the host's mounts. Being
// pid 1 proves the new pid namespace SysProcAttr asks for together with the
// mount namespace; where the host's init is visible (/proc is still the
// host's here, so /proc/1 is its init) its mount namespace must differ too.
func checkNamespaces() error {
	if os.Getpid() != 1 {
		return errors.New("jail: not started in a new pid namespace (jail.SysProcAttr)")
	}
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return fmt.Errorf("jail: reading the mount namespace: %w", err)
	}
	if host, err := os.Readlink("/proc/1/ns/mnt"); err == nil && self == host {
		return errors.New("jail: not started in a new mount namespace (jail.SysProcAttr)")
	}
	return nil
}

// pivot makes root the process's "/" (pivot_root(2), "pivot_root(".",
// ".")"): no mount propagates back to the host, the jail is bound onto
// itself read-only and without devices, setuid or exec, and the old root
// is detached so no path leads back to it.
func pivot(root string, noPivot bool) error {
	pivotRoot := func() error {
		var err error = unix.EINVAL
		if !noPivot {
			if err = unix.PivotRoot(".", "."); err == nil {
				// the old root is now stacked on "/": detach it
				return unix.Unmount(".", unix.MNT_DETACH)
			}
		}
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("moving the jail onto /: %w", err)
		}
		return unix.Chroot(".")
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"make mounts private", func() error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") }},
		{"bind the jail", func() error { return unix.Mount(root, root, "", unix.MS_BIND, "") }},
		{"remount it read-only", func() error {
			return unix.Mount("", root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, "")
		}},
		{"chdir into it", func() error { return unix.Chdir(root) }},
		{"pivot_root", pivotRoot},
		{"chdir /", func() error { return unix.Chdir("/") }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("jail: %s (%s): %w", s.what, root, err)
		}
	}
	return nil
}

// dropPrivileges leaves root for uid/gid on every thread (Go's syscall
// set*id calls act on all threads). Leaving uid 0 clears the permitted,
// effective and ambient capability sets (capabilities(7), "Effect of user
// ID changes on capabilities"); execve, which could regain any, is refused
// by no_new_privs and the VMM's filter. Core dumps are off: a core would
// hold the guest's memory.
func dropPrivileges(uid, gid int) error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("jail: RLIMIT_CORE: %w", err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("jail: setgroups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("jail: setresgid %d: %w", gid, err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("jail: setresuid %d: %w", uid, err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("jail: capget: %w", err)
	}
	for _, d := range data {
		if d.Effective|d.Permitted != 0 {
			return fmt.Errorf("jail: capabilities left after dropping to uid %d: %+v", uid, data)
		}
	}
	return nil
}
