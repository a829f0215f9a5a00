// This file owns the block device (virtio v1.2 §5.2) over a raw image
// file: its features, configuration space and requests. Slots (a device
// whose backing is attached later, for VM templates) are blk_slot.go's.

package virtio

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
)

// Block device constants, §5.2.
const (
	DeviceIDBlk = 2

	BlkFSegMax = 1 << 2 // VIRTIO_BLK_F_SEG_MAX
	BlkFRO     = 1 << 5 // VIRTIO_BLK_F_RO
	BlkFFlush  = 1 << 9 // VIRTIO_BLK_F_FLUSH

	BlkTIn    = 0 // VIRTIO_BLK_T_IN
	BlkTOut   = 1 // VIRTIO_BLK_T_OUT
	BlkTFlush = 4 // VIRTIO_BLK_T_FLUSH
	BlkTGetID = 8 // VIRTIO_BLK_T_GET_ID

	BlkSOK     = 0 // VIRTIO_BLK_S_OK
	BlkSIOErr  = 1 // VIRTIO_BLK_S_IOERR
	BlkSUnsupp = 2 // VIRTIO_BLK_S_UNSUPP

	SectorSize    = 512
	blkIDBytes    = 20 // VIRTIO_BLK_ID_BYTES
	blkHeaderSize = 16 // le32 type; le32 reserved; le64 sector (§5.2.6)
	blkQueueSize  = 256
	// struct virtio_blk_config up to seg_max (§5.2.4): le64 capacity;
	// le32 size_max; le32 seg_max; then fields we do not offer.
	blkConfigSize = 16
)

// Blk is a virtio block device (§5.2) backed by a raw image file, or a
// slot (NewBlkSlot) that gets its file later (Attach).
type Blk struct {
	base
	f        *os.File // nil: an empty slot, or closed
	ro       bool
	slot     bool
	closed   bool
	capacity atomic.Uint64 // in 512-byte sectors; read by ReadConfig without the lock
	id       string
}

// OpenBlk opens the raw image at path, read-only or read-write. Its
// capacity is the file size rounded down to whole sectors. A read-only
// disk offers VIRTIO_BLK_F_RO.
func OpenBlk(path string, readOnly bool) (*Blk, error) {
	d := &Blk{}
	if err := d.open(path, readOnly); err != nil {
		return nil, err
	}
	return d, nil
}

// open opens the image at path as the device's backing. Called with d.mu
// held (or before the device is shared).
func (d *Blk) open(path string, readOnly bool) error {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("virtio-blk: %s is not a regular file", path)
	}
	id := filepath.Base(path)
	if len(id) > blkIDBytes {
		id = id[:blkIDBytes]
	}
	d.f, d.ro, d.id = f, readOnly, id
	d.capacity.Store(uint64(st.Size()) / SectorSize)
	return nil
}

// NewBlkMMIO opens the image at path and puts the device behind an MMIO
// transport.
func NewBlkMMIO(mem *Memory, irq Interrupt, path string, readOnly bool) (*MMIO, *Blk, error) {
	d, err := OpenBlk(path, readOnly)
	if err != nil {
		return nil, nil, err
	}
	return NewMMIO(d, mem, irq), d, nil
}

// Close closes the image file; requests then fail with VIRTIO_BLK_S_IOERR.
func (d *Blk) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

// Capacity is the size in 512-byte sectors.
func (d *Blk) Capacity() uint64 { return d.capacity.Load() }

func (d *Blk) DeviceID() uint32 { return DeviceIDBlk }

// Features offers SEG_MAX and FLUSH, and RO for a read-only disk opened
// with OpenBlk. A slot never offers RO: its features must not depend on
// what it is backed with later (blk_slot.go).
func (d *Blk) Features() uint64 {
	f := uint64(BlkFSegMax | BlkFFlush)
	if d.ro && !d.slot {
		f |= BlkFRO
	}
	return f
}

func (d *Blk) QueueMaxSizes() []uint16 { return []uint16{blkQueueSize} }

func (d *Blk) ReadConfig(off uint64, data []byte) {
	var cfg [blkConfigSize]byte
	binary.LittleEndian.PutUint64(cfg[0:], d.capacity.Load())
	binary.LittleEndian.PutUint32(cfg[12:], blkQueueSize-2) // seg_max: header and status take two
	readConfigBytes(cfg[:], off, data)
}

func (d *Blk) WriteConfig(off uint64, data []byte)  {}
func (d *Blk) Activate(qs []*Queue, f uint64) error { d.activate(qs, f); return nil }
func (d *Blk) Reset()                               { d.activate(nil, 0) }

// Notify serves every pending request.
func (d *Blk) Notify(qi int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.queue(qi)
	if q == nil {
		return
	}
	defer q.Interrupt()
	for c := q.Next(); c != nil; c = q.Next() {
		if q.PushChain(c, d.serve(c)) != nil {
			return
		}
	}
}

// splitLast splits bufs into everything but the last byte, and the last byte.
func splitLast(bufs []Buffer) ([]Buffer, []byte) {
	for i := len(bufs) - 1; i >= 0; i-- {
		b := bufs[i]
		if len(b) == 0 {
			continue
		}
		data := append([]Buffer(nil), bufs[:i]...)
		if len(b) > 1 {
			data = append(data, b[:len(b)-1])
		}
		return data, b[len(b)-1:]
	}
	return nil, nil
}

// serve executes one request and returns the bytes written to the chain.
func (d *Blk) serve(c *Chain) uint64 {
	data, status := splitLast(c.Writable)
	if status == nil {
		return 0 // nowhere to put the status: drop (violates §5.2.6)
	}
	if d.f == nil {
		status[0] = BlkSIOErr // an empty slot, or closed
		return 1
	}
	r := c.Reader()
	var hdr [blkHeaderSize]byte
	if n, _ := r.Read(hdr[:]); n < blkHeaderSize {
		status[0] = BlkSIOErr
		return 1
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	var written uint64
	st := byte(BlkSOK)
	switch typ {
	case BlkTIn:
		n := totalLen(data)
		if !d.inRange(sector, n) {
			st = BlkSIOErr
			break
		}
		off := int64(sector * SectorSize)
		for _, b := range data {
			if _, err := d.f.ReadAt(b, off); err != nil {
				st = BlkSIOErr
				break
			}
			off += int64(len(b))
			written += uint64(len(b))
		}
	case BlkTOut:
		n := r.Remaining()
		if d.ro || !d.inRange(sector, n) {
			st = BlkSIOErr
			break
		}
		off := int64(sector * SectorSize)
		for b := r.Next(1 << 20); b != nil; b = r.Next(1 << 20) {
			if _, err := d.f.WriteAt(b, off); err != nil {
				st = BlkSIOErr
				break
			}
			off += int64(len(b))
		}
	case BlkTFlush:
		if !d.ro {
			if err := d.f.Sync(); err != nil {
				st = BlkSIOErr
			}
		}
	case BlkTGetID:
		var id [blkIDBytes]byte
		copy(id[:], d.id)
		w := (&Chain{Writable: data}).Writer()
		w.Write(id[:])
		written = w.Written()
	default:
		st = BlkSUnsupp
	}
	status[0] = st
	return written + 1
}

// inRange checks that n bytes (a whole number of sectors) starting at sector
// lie inside the disk, without overflow.
func (d *Blk) inRange(sector, n uint64) bool {
	capacity := d.capacity.Load()
	if n%SectorSize != 0 || sector > capacity {
		return false
	}
	return n/SectorSize <= capacity-sector
}
