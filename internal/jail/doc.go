// Package jail confines one process the way Firecracker's jailer confines
// a VMM: fresh namespaces, a root of its own, an unprivileged uid/gid with
// no capabilities, no_new_privs, a seccomp filter, and a cgroup v2 of its
// own with limits.
//
// It is split between the two processes involved. The parent (the kvm
// driver in the daemon) makes the jail directory and the cgroup and starts
// the child with SysProcAttr: Cloneflags (mount, pid, ipc, uts, net
// namespaces) and the cgroup as CLONE_INTO_CGROUP, so the child never runs
// a single instruction outside either. The child opens everything it needs
// by path first (its caller's job: /dev/kvm, the kernel, the disks, its
// listening sockets), then calls Enter, which pivots its root to the jail
// directory, drops its ids and capabilities, and installs the seccomp
// filter last. After Enter the only paths the process can reach are the
// jail directory's entries.
//
// Unlike Firecracker's jailer, which execs the VMM inside the chroot and
// so has to give it /dev/kvm and the disk images there, hyperd's VMM is one
// Go process that opens them before it jails itself: the jail directory
// holds only what the VMM opens after Enter (its vsock host-side sockets).
package jail
