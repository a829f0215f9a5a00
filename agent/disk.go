// This file owns waiting for the block devices a container mounts (its
// rootfs with a rootfs_type, volumes with an fstype) to be there and to
// have a size. In a VM restored from a template the virtio-blk devices
// exist from the template's boot with capacity 0: the VMM attaches the
// pod's disk files at restore and raises a configuration change, and the
// guest kernel updates the capacity asynchronously (virtio_blk's
// config-change work, set_capacity_and_notify). Mounting before that
// fails (or finds no file system), so the agent waits, bounded, for a
// nonzero size. A cold-booted VM's disks have their size from the start:
// there the wait is one stat and one sysfs read per device.

package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// diskWait bounds how long a container's creation waits for its block
// devices to be attached.
const diskWait = 10 * time.Second

// diskPoll is how often a waited-for device is looked at again.
const diskPoll = 20 * time.Millisecond

// errNotBlock is diskSize's answer for a path that is not a block device.
var errNotBlock = errors.New("not a block device")

// diskSize returns the size in bytes of the block device at path: the
// device's size in sysfs (/sys/dev/block/MAJ:MIN/size, 512-byte sectors),
// or where sysfs does not have it, BLKGETSIZE64 on the device. It returns
// errNotBlock for anything but a block device and the stat error (ENOENT
// included) for a path that is not there.
func diskSize(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, errNotBlock
	}
	sys := fmt.Sprintf("/sys/dev/block/%d:%d/size", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	if b, err := os.ReadFile(sys); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			return n * 512, nil
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
}

// waitDisks returns once every path in devs that is a block device has a
// nonzero size, polling until deadline. A path under /dev/ that is not
// there yet is waited for too (the kernel may create the node late); any
// other path, and any that is not a block device, is left to the mount to
// judge. The error names the device that stayed empty or absent.
func waitDisks(devs []string, deadline time.Time) error {
	for _, dev := range devs {
		for {
			size, err := diskSize(dev)
			switch {
			case errors.Is(err, errNotBlock):
				size = 1 // not ours to wait for
			case errors.Is(err, unix.ENOENT) && strings.HasPrefix(dev, "/dev/"):
			case err != nil:
				return fmt.Errorf("block device %s: %w", dev, err)
			}
			if size > 0 {
				break
			}
			if !time.Now().Before(deadline) {
				if err != nil {
					return fmt.Errorf("block device %s did not appear: %w (was the pod's disk attached?)", dev, err)
				}
				return fmt.Errorf("block device %s is still empty (size 0): the pod's disk was not attached to it", dev)
			}
			time.Sleep(min(diskPoll, time.Until(deadline)+time.Millisecond))
		}
	}
	return nil
}
