// This file owns disks given to a running pod VM (sandbox.DiskAdder): the
// empty disk slots a VM gets (a template's, or a cold boot's as many), the
// daemon's side of the VM process's control socket (control.go), and the
// bookkeeping that lets DiskSource and a reattached sandbox know the disk.

package kvmdrv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/sandbox"
	"github.com/hyperhq/hyperd-go/vmm"
)

var _ sandbox.DiskAdder = (*vmSandbox)(nil)

// controlTimeout bounds one attach over the control socket when ctx has
// no earlier deadline.
const controlTimeout = 10 * time.Second

// maxVMDevices is how many virtio devices a VM can have (vmm: one I/O
// APIC pin each).
const maxVMDevices = 24 - vmm.FirstDeviceGSI

// coldDiskSlots is how many empty disk slots a cold-booted VM with nDisks
// disks and nNets interfaces gets: as a template's VM, its block devices
// are TemplateDiskSlots in all (a pod then has the same room for hot-added
// disks whichever way its VM started), within the VM's device limit (its
// vsock and rng devices count too).
func coldDiskSlots(nDisks, nNets int) int {
	n := max(TemplateDiskSlots-nDisks, 0)
	return max(min(n, maxVMDevices-nDisks-nNets-2), 0)
}

// diskID is the virtio-blk serial a hot-added disk gets: derived from its
// host path, so a repeated attach of the same disk (a daemon that died
// before it saved the handle) is recognized by the VM process.
func diskID(hostPath string) string {
	sum := sha256.Sum256([]byte(hostPath))
	return hex.EncodeToString(sum[:])[:maxDiskID]
}

// AddDisk attaches a disk image to the running VM: the next empty disk
// slot (its guest name the next /dev/vdX after the VM's disks) is backed
// with the image, opened here and handed to the VM process over its
// control socket. DiskSource then knows it and Handle lists it. Only
// regular files (raw images) can be given; a disk already given is not
// given again. Callers serialize AddDisk with the sandbox's other calls
// (the daemon holds the pod's lock).
func (s *vmSandbox) AddDisk(ctx context.Context, d sandbox.Disk) error {
	s.mu.Lock()
	disks, control := s.disks, s.control
	s.mu.Unlock()
	if slices.Contains(disks, d.HostPath) {
		return nil
	}
	if control == "" {
		return fmt.Errorf("kvm driver: the VM of %s was started without a control socket (by an older hyperd): it takes no disk while it runs", s.id)
	}
	if st, err := os.Stat(d.HostPath); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("kvm driver: add disk %s: only disk image files can be given to a VM (host directories cannot be shared into it)", d.HostPath)
	}
	flag := unix.O_RDWR
	if d.ReadOnly {
		flag = unix.O_RDONLY
	}
	f, err := os.OpenFile(d.HostPath, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("kvm driver: add disk: %w", err)
	}
	defer f.Close() // the VM process has its own copy
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("kvm driver: add disk: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("kvm driver: add disk %s: only disk image files can be given to a VM (host directories cannot be shared into it)", d.HostPath)
	}
	req := ControlRequest{Slot: len(disks), ReadOnly: d.ReadOnly, ID: diskID(d.HostPath)}
	if err := attachDisk(ctx, control, req, f); err != nil {
		return fmt.Errorf("kvm driver: add disk %s to the VM of %s: %w", d.HostPath, s.id, err)
	}
	s.mu.Lock()
	s.disks = append(slices.Clone(s.disks), d.HostPath)
	s.mu.Unlock()
	return nil
}

// attachDisk sends one request with f over the control socket at sock
// and reads the answer (bounded: the VM process is not trusted).
func attachDisk(ctx context.Context, sock string, req ControlRequest, f *os.File) error {
	msg, err := req.Marshal()
	if err != nil {
		return err
	}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer c.Close()
	deadline := time.Now().Add(controlTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	uc := c.(*net.UnixConn)
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := raw.Control(func(fd uintptr) {
		_, _, werr = uc.WriteMsgUnix(msg, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	runtime.KeepAlive(f)
	if werr != nil {
		return fmt.Errorf("control socket: %w", werr)
	}
	ans, err := io.ReadAll(io.LimitReader(c, MaxControlAnswer+1))
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if len(ans) == 0 {
		return errors.New("control socket: the VM process closed the connection without an answer")
	}
	return ParseControlAnswer(ans, req.Slot)
}

// DiskSource: disks are attached in Config order as /dev/vda, /dev/vdb ...,
// then those AddDisk gave, in the slots after them (the vsock device comes
// after every disk and slot on the MMIO bus, so it does not shift the
// block device names).
func (s *vmSandbox) DiskSource(hostPath string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, d := range s.disks {
		if d == hostPath {
			if i >= 26 {
				return "", fmt.Errorf("kvm driver: disk %d has no single-letter name", i)
			}
			return "/dev/vd" + string(rune('a'+i)), nil
		}
	}
	return "", fmt.Errorf("kvm driver: %s is not attached to %s", hostPath, s.id)
}

// controlPath is the control socket of the VM whose vsock socket is uds.
func controlPath(uds string) string { return filepath.Join(filepath.Dir(uds), controlSock) }
