// This file owns how the driver jails its VM processes: the per-VM jail
// directory and sockets, the cgroup, and the hyperd vm run flags and
// SysProcAttr that confine it (internal/jail, cmd/hyperd/jail.go).

package kvmdrv

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/hyperhq/hyperd-go/internal/jail"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// Jail confines each VM process like Firecracker's jailer: own namespaces,
// root pivoted to <state dir>/vm (which holds only its vsock sockets),
// uid/gid dropped, no capabilities, the VMM's seccomp allow-list, and a
// cgroup v2 <CgroupParent>/vm-<pod id> with memory.max and pids.max.
type Jail struct {
	UID, GID int
	// CgroupParent is a directory in the cgroup v2 hierarchy; default
	// <mount>/hyperd (beside the local driver's pod cgroups).
	CgroupParent string
}

// jailDirName is the VM's jail directory inside the pod's state dir.
const jailDirName = "vm"

// jailDir is the jail directory of the VM whose pod state dir is stateDir.
func jailDir(stateDir string) string { return filepath.Join(stateDir, jailDirName) }

// vmPidsMax bounds the VM process's tasks (the Go runtime's threads, one
// per vCPU and per blocking disk syscall); fork is refused by seccomp.
const vmPidsMax = 1024

// vmMemoryMax is the VM process's memory.max: the guest's RAM plus the
// VMM's own (Go runtime, device buffers, page tables) and its page cache.
func vmMemoryMax(guestMiB int) int64 {
	return int64(guestMiB+max(128, guestMiB/4)) << 20
}

// vmJail is one VM's jail as Create prepared it; nil when the driver has
// no Jail, and then every method does nothing.
type vmJail struct {
	d      *Driver
	id     string
	dir    string
	memMiB int
	mnt    string       // the cgroup v2 mount; "" when the host has none (logged)
	fd     *jail.Cgroup // this boot's cgroup, open until its process started
}

// prepareJail makes the jail directory (root-owned and only searchable:
// the VMM creates nothing there once jailed) and finds the cgroup v2
// hierarchy.
func (d *Driver) prepareJail(cfg sandbox.Config, memMiB int) (*vmJail, error) {
	j := &vmJail{d: d, id: cfg.ID, dir: jailDir(cfg.StateDir), memMiB: memMiB}
	if err := os.MkdirAll(j.dir, 0o711); err != nil {
		return nil, fmt.Errorf("kvm driver: jail dir: %w", err)
	}
	if err := os.Chmod(j.dir, 0o711); err != nil {
		return nil, fmt.Errorf("kvm driver: jail dir: %w", err)
	}
	mnt, err := jail.CgroupMount()
	if err != nil {
		d.log().Warn("no cgroup v2 hierarchy: pod VMs run jailed but without a cgroup of their own (memory.max, pids.max)", "pod", cfg.ID, "err", err)
	}
	j.mnt = mnt
	return j, nil
}

// allow lets the jailed VMM connect to a daemon socket in its jail (a
// <uds>_<port> listener): connect(2) needs write permission on it.
func (j *vmJail) allow(sock string) error {
	if j == nil {
		return nil
	}
	if err := os.Chown(sock, j.d.Jail.UID, j.d.Jail.GID); err != nil {
		return fmt.Errorf("kvm driver: %w", err)
	}
	return nil
}

// args are the hyperd vm run flags of a jailed VM.
func (j *vmJail) args() []string {
	if j == nil {
		return nil
	}
	return []string{"--jail", j.dir, "--vmm-uid", strconv.Itoa(j.d.Jail.UID), "--vmm-gid", strconv.Itoa(j.d.Jail.GID)}
}

// start makes this boot's cgroup and sets cmd to start in it, in fresh
// namespaces and its own session. It returns the cgroup's path ("" without
// one) for started.
func (j *vmJail) start(cmd *exec.Cmd) (string, error) {
	if j == nil {
		return "", nil
	}
	var cg *jail.Cgroup
	if j.mnt != "" {
		parent := j.d.Jail.CgroupParent
		if parent == "" {
			parent = filepath.Join(j.mnt, "hyperd")
		}
		var err error
		cg, err = jail.NewCgroup(j.mnt, parent, "vm-"+j.id, jail.Limits{MemoryMax: vmMemoryMax(j.memMiB), PidsMax: vmPidsMax})
		if err != nil {
			return "", fmt.Errorf("kvm driver: %w", err)
		}
		if len(cg.Unlimited) > 0 {
			j.d.log().Warn("this host's cgroup v2 lacks controllers: the pod's VM runs without these limits", "pod", j.id, "limits", cg.Unlimited)
		}
		j.fd = cg
	}
	cmd.SysProcAttr = jail.SysProcAttr(cg)
	if cg == nil {
		return "", nil
	}
	return cg.Path, nil
}

// started releases the cgroup's fd once the process started, and the
// cgroup itself when it did not.
func (j *vmJail) started(path string, ok bool) {
	if j == nil || j.fd == nil {
		return
	}
	j.fd.Close()
	j.fd = nil
	if !ok {
		jail.RemoveCgroup(path)
	}
}

// removeCgroup removes the VM's cgroup once its process is gone.
func (s *vmSandbox) removeCgroup() {
	if s.cgroup != "" {
		jail.RemoveCgroup(s.cgroup)
	}
}

func (d *Driver) log() *slog.Logger {
	if d.Log != nil {
		return d.Log
	}
	return slog.Default()
}
