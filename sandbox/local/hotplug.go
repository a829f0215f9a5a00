package local

// This file owns disks given to a running local sandbox (sandbox.DiskAdder).

import (
	"context"
	"fmt"
	"os"
	"slices"

	"github.com/hyperhq/hyperd-go/sandbox"
)

var _ sandbox.DiskAdder = (*localSandbox)(nil)

// AddDisk lets the sandbox use a host directory or file (an image's
// rootfs, a volume) that was not among its Config's disks: the agent sees
// host paths in place, so this only extends the list DiskSource checks
// and the Handle persists. Block devices (which on a cgroup v1 host need
// a device rule made at creation) are refused. Callers serialize AddDisk
// with the sandbox's other calls (the daemon holds the pod's lock).
func (s *localSandbox) AddDisk(ctx context.Context, d sandbox.Disk) error {
	st, err := os.Stat(d.HostPath)
	if err != nil {
		return fmt.Errorf("local driver: add disk: %w", err)
	}
	if !st.IsDir() && !st.Mode().IsRegular() {
		return fmt.Errorf("local driver: add disk %s: only directories and files can be given to a running sandbox", d.HostPath)
	}
	for _, have := range s.disks {
		if have.HostPath == d.HostPath {
			return nil
		}
	}
	s.disks = append(slices.Clone(s.disks), d)
	return nil
}
