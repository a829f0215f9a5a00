// This file owns the jail of `hyperd vm run`: its flags, the order in
// which the VMM confines itself, and its seccomp allow-list.

package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/internal/jail"
	"github.com/hyperhq/hyperd-go/internal/seccomp"
	"github.com/hyperhq/hyperd-go/sandbox/kvmdrv"
)

// DefaultVMMID is the uid and gid a jailed VMM runs as by default.
const DefaultVMMID = jail.DefaultID

// VMMJailOptions are the daemon's settings for the kvm driver's jail.
type VMMJailOptions struct {
	VMMJail *bool `json:"vmm-jail"` // nil: on
	VMMUID  int   `json:"vmm-uid"`  // 0: DefaultVMMID
	VMMGID  int   `json:"vmm-gid"`
}

// flags registers --vmm-jail, --vmm-uid, --vmm-gid; apply copies the ones
// given on the command line over the config file's after fs.Parse.
func (o *VMMJailOptions) flags(fs *flag.FlagSet) (apply func() error) {
	on := fs.Bool("vmm-jail", true, "kvm: confine each VM process (hyperd vm run): own mount/pid/ipc/uts/net namespaces, root pivoted to the pod's sandbox/vm directory, --vmm-uid/--vmm-gid, no capabilities, seccomp allow-list, a cgroup with memory.max; false runs VMMs as root on the host (the README's security model)")
	uid := fs.Int("vmm-uid", DefaultVMMID, "kvm: uid of the jailed VMMs")
	gid := fs.Int("vmm-gid", DefaultVMMID, "kvm: gid of the jailed VMMs")
	return func() error {
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "vmm-jail":
				o.VMMJail = on
			case "vmm-uid":
				o.VMMUID = *uid
			case "vmm-gid":
				o.VMMGID = *gid
			}
		})
		if o.VMMUID < 0 || o.VMMGID < 0 {
			return errors.New("--vmm-uid and --vmm-gid must be > 0 (0: the default)")
		}
		return nil
	}
}

// driverJail is the kvm driver's jail setting: nil when it is off.
func (o VMMJailOptions) driverJail() *kvmdrv.Jail {
	if o.VMMJail != nil && !*o.VMMJail {
		return nil
	}
	j := &kvmdrv.Jail{UID: o.VMMUID, GID: o.VMMGID}
	if j.UID == 0 {
		j.UID = DefaultVMMID
	}
	if j.GID == 0 {
		j.GID = DefaultVMMID
	}
	return j
}

// vmJail holds the jail flags of `hyperd vm run`.
type vmJail struct {
	dir      string
	uid, gid int
	noPivot  bool // tests: the initramfs-root path (jail.Config.NoPivot)
}

func (j *vmJail) flags(fs *flag.FlagSet) {
	fs.StringVar(&j.dir, "jail", "", "confine the VMM once the VM is set up: pivot to this directory (it must hold the --vsock socket), drop to --vmm-uid/--vmm-gid, seccomp allow-list; the process must have been started in new namespaces (the kvm driver does)")
	fs.IntVar(&j.uid, "vmm-uid", DefaultVMMID, "uid of a jailed VMM")
	fs.IntVar(&j.gid, "vmm-gid", DefaultVMMID, "gid of a jailed VMM")
}

// prepare runs before anything is opened: paths become absolute (the
// process is about to change directory), the vsock socket must lie in the
// jail directory, and the working directory becomes the jail so the VMM
// names its sockets relative to it: the same names resolve after the pivot
// (the vsock device dials <uds>_<port> at run time). It returns the
// vsock path to give the device.
func (j *vmJail) prepare(kernel, initrd *string, disks []string, vsock string) (string, error) {
	if j.dir == "" {
		return vsock, nil
	}
	if j.uid <= 0 || j.gid <= 0 {
		return "", errors.New("--vmm-uid and --vmm-gid must be > 0")
	}
	dir, err := filepath.Abs(j.dir)
	if err != nil {
		return "", err
	}
	j.dir = dir
	for _, p := range []*string{kernel, initrd} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return "", err
			}
		}
	}
	for i, d := range disks {
		if disks[i], err = filepath.Abs(d); err != nil {
			return "", err
		}
	}
	if vsock != "" {
		abs, err := filepath.Abs(vsock)
		if err != nil {
			return "", err
		}
		if filepath.Dir(abs) != dir {
			return "", fmt.Errorf("--vsock %s must be directly in the --jail directory %s", vsock, dir)
		}
		vsock = filepath.Base(abs)
	}
	if err := os.Chdir(dir); err != nil {
		return "", err
	}
	return vsock, nil
}

// enter confines the VMM: everything it opens by path (/dev/kvm, the
// kernel and initrd, the disks, its vsock listener) is open by now, the
// guest has not run an instruction yet.
func (j *vmJail) enter() error {
	if j.dir == "" {
		return nil
	}
	p := vmmPolicy()
	return jail.Enter(jail.Config{Root: j.dir, UID: j.uid, GID: j.gid, Seccomp: &p, NoPivot: j.noPivot})
}

// Thread-creating clone(2) flags: the Go runtime's (runtime/os_linux.go
// cloneFlags, plus CLONE_SETTLS that its amd64 clone adds: strace shows
// it) and glibc's pthread_create (a cgo build, e.g. go test).
const (
	goThreadFlags    = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_SYSVSEM | unix.CLONE_THREAD | unix.CLONE_SETTLS
	glibcThreadFlags = goThreadFlags | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
)

// vmmPolicy is the VMM's seccomp allow-list; anything else kills the
// process (SIGSYS). It is derived from the code paths after the jail is
// entered (the vCPU loops, virtio devices, the vsock unix sockets) and the
// Go runtime's needs, checked with strace on the device tests:
//   - generous for the runtime: memory, signals, futexes, threads, timers;
//   - ioctl only of type KVMIO (0xAE: the VM and vCPU fds), others ENOTTY;
//   - socket only AF_UNIX (the vsock host side), no bind/listen after setup;
//   - mmap/mprotect never with PROT_EXEC;
//   - clone only to make threads (fork-like flags kill), clone3 ENOSYS so
//     glibc falls back to clone, whose flags a filter can read;
//   - openat fails with EACCES (nothing in the jail is to be opened);
//   - no execve, ptrace, mount, namespaces, bpf, keys, modules, io_uring.
func vmmPolicy() seccomp.Policy {
	allow := []uintptr{
		// I/O on open fds: disks, eventfds, sockets, the console
		unix.SYS_READ, unix.SYS_WRITE, unix.SYS_READV, unix.SYS_WRITEV,
		unix.SYS_PREAD64, unix.SYS_PWRITE64, unix.SYS_PREADV, unix.SYS_PWRITEV, unix.SYS_PREADV2, unix.SYS_PWRITEV2,
		// the console log's two files take turns: emptied with ftruncate
		unix.SYS_FTRUNCATE,
		unix.SYS_LSEEK, unix.SYS_FSYNC, unix.SYS_FDATASYNC, unix.SYS_FSTAT, unix.SYS_NEWFSTATAT, unix.SYS_STATX,
		unix.SYS_CLOSE, unix.SYS_FCNTL, unix.SYS_SPLICE, unix.SYS_PIPE2, unix.SYS_SENDFILE,
		// the vsock listener's Close unlinks its socket (the jail is read-only: EROFS)
		unix.SYS_UNLINKAT,
		// sockets: the host side of vsock (the socket call itself is checked below)
		unix.SYS_CONNECT, unix.SYS_ACCEPT, unix.SYS_ACCEPT4, unix.SYS_SHUTDOWN,
		unix.SYS_GETSOCKOPT, unix.SYS_SETSOCKOPT, unix.SYS_GETSOCKNAME, unix.SYS_GETPEERNAME,
		unix.SYS_SENDTO, unix.SYS_RECVFROM, unix.SYS_SENDMSG, unix.SYS_RECVMSG,
		// event loop
		unix.SYS_EPOLL_CREATE1, unix.SYS_EPOLL_CTL, unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT, unix.SYS_EPOLL_PWAIT2,
		unix.SYS_EVENTFD2, unix.SYS_PPOLL,
		// memory (mmap and mprotect are checked below)
		unix.SYS_MUNMAP, unix.SYS_MADVISE, unix.SYS_MREMAP, unix.SYS_BRK,
		// threads, signals, time
		unix.SYS_FUTEX, unix.SYS_SET_ROBUST_LIST, unix.SYS_RSEQ, unix.SYS_SET_TID_ADDRESS, unix.SYS_ARCH_PRCTL,
		unix.SYS_RT_SIGACTION, unix.SYS_RT_SIGPROCMASK, unix.SYS_RT_SIGRETURN, unix.SYS_SIGALTSTACK,
		unix.SYS_TGKILL, unix.SYS_TKILL, unix.SYS_KILL, // alone in its pid namespace
		unix.SYS_SCHED_YIELD, unix.SYS_SCHED_GETAFFINITY, unix.SYS_NANOSLEEP, unix.SYS_CLOCK_NANOSLEEP,
		unix.SYS_CLOCK_GETTIME, unix.SYS_CLOCK_GETRES, unix.SYS_GETTIMEOFDAY, unix.SYS_TIME,
		unix.SYS_TIMER_CREATE, unix.SYS_TIMER_SETTIME, unix.SYS_TIMER_DELETE, unix.SYS_SETITIMER,
		unix.SYS_GETPID, unix.SYS_GETTID, unix.SYS_GETPPID, unix.SYS_GETUID, unix.SYS_GETEUID, unix.SYS_GETGID, unix.SYS_GETEGID,
		unix.SYS_UNAME, unix.SYS_GETRANDOM, unix.SYS_GETRUSAGE, unix.SYS_RESTART_SYSCALL,
		unix.SYS_EXIT, unix.SYS_EXIT_GROUP,
	}
	p := seccomp.Policy{Default: seccomp.KillProcess}
	for _, nr := range allow {
		p.Rules = append(p.Rules, seccomp.Rule{Syscall: nr, Action: seccomp.Allow})
	}
	p.Rules = append(p.Rules,
		seccomp.Rule{Syscall: unix.SYS_IOCTL, Args: []seccomp.Arg{{Index: 1, Mask: 0xFFFFFFFF_0000FF00, Value: 0xAE00}}, Action: seccomp.Allow},
		seccomp.Rule{Syscall: unix.SYS_IOCTL, Action: seccomp.Errno(unix.ENOTTY)},
		seccomp.Rule{Syscall: unix.SYS_SOCKET, Args: []seccomp.Arg{{Index: 0, Value: unix.AF_UNIX}}, Action: seccomp.Allow},
		seccomp.Rule{Syscall: unix.SYS_MMAP, Args: []seccomp.Arg{{Index: 2, Mask: unix.PROT_EXEC, Value: 0}}, Action: seccomp.Allow},
		seccomp.Rule{Syscall: unix.SYS_MPROTECT, Args: []seccomp.Arg{{Index: 2, Mask: unix.PROT_EXEC, Value: 0}}, Action: seccomp.Allow},
		seccomp.Rule{Syscall: unix.SYS_CLONE, Args: []seccomp.Arg{{Index: 0, Value: goThreadFlags}}, Action: seccomp.Allow},
		seccomp.Rule{Syscall: unix.SYS_CLONE, Args: []seccomp.Arg{{Index: 0, Value: glibcThreadFlags}}, Action: seccomp.Allow},
		seccomp.Rule{Syscall: unix.SYS_CLONE3, Action: seccomp.Errno(unix.ENOSYS)},
		// the runtime names its anonymous mappings (PR_SET_VMA); nothing else
		seccomp.Rule{Syscall: unix.SYS_PRCTL, Args: []seccomp.Arg{{Index: 0, Value: unix.PR_SET_VMA}}, Action: seccomp.Allow},
		seccomp.Rule{Syscall: unix.SYS_PRCTL, Action: seccomp.Errno(unix.EPERM)},
		// reading its own limits only
		seccomp.Rule{Syscall: unix.SYS_PRLIMIT64, Args: []seccomp.Arg{{Index: 0, Value: 0}, {Index: 2, Value: 0}}, Action: seccomp.Allow},
		seccomp.Rule{Syscall: unix.SYS_OPENAT, Action: seccomp.Errno(unix.EACCES)},
		seccomp.Rule{Syscall: unix.SYS_OPEN, Action: seccomp.Errno(unix.EACCES)},
	)
	return p
}
