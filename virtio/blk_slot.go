// This file owns block device slots: a virtio-blk device present in a VM
// template with no backing yet, whose image is attached when a VM is
// restored from the template (as Firecracker's drive update), and the
// capacity change the guest then learns through a configuration change
// interrupt (RestoreState, or MMIO.ConfigChanged on a running VM).

package virtio

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// NewBlkSlot returns an empty block device slot: capacity 0, every
// request fails with VIRTIO_BLK_S_IOERR until Attach. Its features are
// those of a writable disk whatever it is backed with later (a template's
// negotiated features must stay valid), so it never offers
// VIRTIO_BLK_F_RO: a read-only attached image answers writes with
// VIRTIO_BLK_S_IOERR instead (and flushes with OK).
func NewBlkSlot() *Blk {
	return &Blk{slot: true}
}

// NewBlkSlotMMIO returns an empty slot behind an MMIO transport.
func NewBlkSlotMMIO(mem *Memory, irq Interrupt) (*MMIO, *Blk) {
	d := NewBlkSlot()
	return NewMMIO(d, mem, irq), d
}

// Slot reports whether the device was made by NewBlkSlot.
func (d *Blk) Slot() bool { return d.slot }

// Attach backs an empty slot with the raw image at path (opened as
// OpenBlk does) and sets its capacity. Attached before RestoreState, the
// new capacity differs from the saved configuration space and the guest
// gets a configuration change interrupt; Linux's virtio_blk then re-reads
// the capacity (virtblk_config_changed). On a running VM the caller
// calls MMIO.ConfigChanged itself.
func (d *Blk) Attach(path string, readOnly bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case !d.slot:
		return errors.New("virtio-blk: Attach on a disk opened with OpenBlk (not a slot)")
	case d.closed:
		return errors.New("virtio-blk: Attach on a closed slot")
	case d.f != nil:
		return errors.New("virtio-blk: slot already has a backing file")
	}
	return d.open(path, readOnly)
}

// AttachFile backs an empty slot with an open raw image (a disk handed to
// a running VM over its control socket, whose path the jailed VMM cannot
// open) and names it id (VIRTIO_BLK_T_GET_ID, at most 20 bytes). The slot
// owns f from then on, on success only. f must be a regular file; a
// writable disk needs f open for writing (a read-only one may be either:
// the device refuses writes itself). The caller raises the configuration
// change (MMIO.ConfigChanged) on a running VM.
func (d *Blk) AttachFile(f *os.File, readOnly bool, id string) error {
	if len(id) > blkIDBytes {
		return fmt.Errorf("virtio-blk: id %q is longer than %d bytes", id, blkIDBytes)
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("virtio-blk: %w", err)
	}
	if !readOnly && fl&unix.O_ACCMODE == unix.O_RDONLY {
		return errors.New("virtio-blk: a writable disk's file is open read-only")
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("virtio-blk: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("virtio-blk: the disk is not a regular file (%v)", st.Mode().Type())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case !d.slot:
		return errors.New("virtio-blk: AttachFile on a disk opened with OpenBlk (not a slot)")
	case d.closed:
		return errors.New("virtio-blk: AttachFile on a closed slot")
	case d.f != nil:
		return errors.New("virtio-blk: slot already has a backing file")
	}
	d.f, d.ro, d.id = f, readOnly, id
	d.capacity.Store(uint64(st.Size()) / SectorSize)
	return nil
}

// Backing reports what backs the device: attached is false for an empty
// (or closed) slot; id and readOnly are those it was attached with.
func (d *Blk) Backing() (id string, readOnly, attached bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.id, d.ro, d.f != nil
}
