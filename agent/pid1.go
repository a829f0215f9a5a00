package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/hyperhq/hyperd-go/internal/guestinit"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// VsockTransport listens on a vsock port (1024 for the daemon).
type VsockTransport struct{ Port uint32 }

// Listen implements Transport. It binds VMADDR_CID_ANY, not the guest's
// CID of the moment (vsock.Listen's choice): a VM restored from a template
// gets a new CID with the transport reset, and a listener bound to the old
// one would refuse every connection to the new one.
func (v VsockTransport) Listen() (net.Listener, error) {
	return vsock.ListenContextID(unix.VMADDR_CID_ANY, v.Port, nil)
}

// NotifyReady connects to the host (CID 2) on port and closes: the kvm
// driver's ready signal.
func NotifyReady(port uint32) error {
	c, err := vsock.Dial(vsock.Host, port, nil)
	if err != nil {
		return err
	}
	return c.Close()
}

// InitVM prepares the guest as PID 1: it leaves the initial rootfs (see
// leaveRootfs), mounts the pseudo filesystems and cgroup2, loads the kernel
// modules from /lib/modules/order and brings up the loopback interface.
func InitVM() error {
	if err := leaveRootfs(); err != nil {
		return err
	}
	mounts := []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666,mode=0620"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	}
	for _, m := range mounts {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	os.Symlink("/proc/self/fd", "/dev/fd")
	if err := LoadModules("/lib/modules"); err != nil {
		return err
	}
	return LoopbackUp()
}

// leaveRootfs makes the root of PID 1 (and so of every process it starts)
// a bind mount of the initramfs instead of the kernel's initial rootfs
// itself: pivot_root(2) fails with EINVAL while the caller's root is the
// initial rootfs, which has no parent mount, and every container shim
// pivot_roots into its overlay. The files stay the same (/init is still
// the agent). This is switch_root's move-and-chroot with the initramfs as
// its own new root; it must run before anything else is mounted.
func leaveRootfs() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return fmt.Errorf("statfs /: %w", err)
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return nil // booted from a disk: not the initial rootfs
	}
	const tmp = "/.root"
	if err := os.Mkdir(tmp, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("leave rootfs: %w", err)
	}
	if err := unix.Mount("/", tmp, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("leave rootfs: bind /: %w", err)
	}
	if err := unix.Chdir(tmp); err != nil {
		return fmt.Errorf("leave rootfs: %w", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("leave rootfs: move to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("leave rootfs: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("leave rootfs: %w", err)
	}
	os.Remove(tmp) // the now empty mount point, seen through the bind
	return nil
}

// LoadModules loads the modules dir/order lists (guestinit.LoadModules);
// a guest without an order file has nothing to load.
func LoadModules(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "order")); os.IsNotExist(err) {
		return nil
	}
	return guestinit.LoadModules(dir, nil)
}

// LoopbackUp sets IFF_UP on lo.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// PowerOff syncs and powers the machine off (PID 1 in a VM).
func PowerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// PrepareLocal sets up the agent's own namespaces in local mode: private
// mounts, a fresh /proc for the new pid namespace, lo up.
func PrepareLocal() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	return LoopbackUp()
}
