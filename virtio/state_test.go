// This file tests pausing, saving and restoring devices (state.go) with
// the test driver: notifications while paused, block devices and slots,
// rng and console round trips through JSON onto a new device over a copy
// of guest memory, and states RestoreState must reject. Vsock and net
// round trips are state_dev_test.go's, FuzzRestoreState
// state_fuzz_test.go's.

package virtio

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// snapshot pauses tr, saves its state through JSON (as the VMM stores
// it) and copies guest memory, as a snapshot file would.
func snapshot(t *testing.T, tr *MMIO, mem *Memory) (MMIOState, *Memory) {
	t.Helper()
	tr.Pause()
	s, err := tr.SaveState()
	if err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out MMIOState
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out, NewMemory(append([]byte(nil), mem.b...))
}

// restoredDriver is the guest's driver after a restore: the same rings and
// ring positions, over the restored memory and the new transport.
func (d *testDriver) restoredDriver(mem *Memory, tr *MMIO, irq *countIRQ) *testDriver {
	nd := newDriver(d.t, mem, tr, irq)
	nd.alloc = d.alloc
	for _, q := range d.queues {
		c := *q
		nd.queues = append(nd.queues, &c)
	}
	return nd
}

func diskImage(t *testing.T, sectors int, fill byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, bytes.Repeat([]byte{fill}, sectors*SectorSize), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// blkRequest posts one request on queue 0 and kicks; it returns the chain.
func blkRequest(d *testDriver, typ uint32, sector uint64, data []byte, readLen uint32) chainBufs {
	segs := []seg{rseg(blkHdr(typ, sector))}
	if data != nil {
		segs = append(segs, rseg(data))
	}
	if readLen > 0 {
		segs = append(segs, wseg(readLen))
	}
	segs = append(segs, wseg(1))
	c := d.post(0, false, segs...)
	d.kick(0)
	return c
}

func blkStatus(d *testDriver, c chainBufs) byte {
	last := len(c.segs) - 1
	return d.bytesAt(c, last, 1)[0]
}

func readCapacity(tr *MMIO) uint64 {
	var b [8]byte
	tr.Read(RegConfig, b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func TestPauseDefersNotifications(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, blk, err := NewBlkMMIO(mem, irq, diskImage(t, 8, 7), false)
	if err != nil {
		t.Fatal(err)
	}
	defer blk.Close()
	d := newDriver(t, mem, tr, irq)
	d.negotiate(^uint64(0), 16)
	if _, err := tr.SaveState(); err == nil {
		t.Fatal("SaveState on a running device succeeded")
	}
	tr.Pause()
	tr.Pause() // idempotent
	c := blkRequest(d, BlkTIn, 1, nil, SectorSize)
	tr.NotifyQueue(0) // the ioeventfd path too
	if u := d.takeUsed(0); len(u) != 0 {
		t.Fatalf("served while paused: %v", u)
	}
	tr.Resume()
	u := d.takeUsed(0)
	if len(u) != 1 || u[0].id != uint32(c.head) || blkStatus(d, c) != BlkSOK {
		t.Fatalf("after Resume: used %v status %d", u, blkStatus(d, c))
	}
	tr.Resume() // not paused: nothing
	// Close ends a pause.
	tr.Pause()
	tr.Close()
	if tr.Paused() {
		t.Error("paused after Close")
	}
}

// TestRestoreBlk drives a disk, snapshots it with a request made available
// while paused, and restores onto a new disk file: the pending request is
// served at the saved ring position, then I/O continues on the new file.
func TestRestoreBlk(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, blk, err := NewBlkMMIO(mem, irq, diskImage(t, 8, 1), false)
	if err != nil {
		t.Fatal(err)
	}
	defer blk.Close()
	d := newDriver(t, mem, tr, irq)
	d.negotiate(^uint64(0), 16)
	for i := range 5 { // move the ring positions away from 0
		c := blkRequest(d, BlkTOut, uint64(i), bytes.Repeat([]byte{0xa0 + byte(i)}, SectorSize), 0)
		if u := d.takeUsed(0); len(u) != 1 || blkStatus(d, c) != BlkSOK {
			t.Fatalf("write %d: %v", i, u)
		}
	}
	tr.Pause()
	pending := blkRequest(d, BlkTIn, 2, nil, SectorSize) // kicked while paused
	s, mem2 := snapshot(t, tr, mem)
	if q := s.Queues[0]; !q.Ready || q.LastAvail != 5 || q.UsedIdx != 5 || q.Num != 16 {
		t.Fatalf("saved queue %+v", q)
	}
	tr.Close()

	// The new process: a copy of the disk with other contents.
	irq2 := &countIRQ{}
	blk2, err := OpenBlk(diskImage(t, 8, 0x55), false)
	if err != nil {
		t.Fatal(err)
	}
	defer blk2.Close()
	tr2 := NewMMIO(blk2, mem2, irq2)
	if err := tr2.RestoreState(s); err != nil {
		t.Fatal(err)
	}
	d2 := d.restoredDriver(mem2, tr2, irq2)
	u := d2.takeUsed(0)
	if len(u) != 1 || u[0].id != uint32(pending.head) || u[0].len != SectorSize+1 {
		t.Fatalf("pending request after restore: used %v", u)
	}
	if got := d2.bytesAt(pending, 1, SectorSize); !bytes.Equal(got, bytes.Repeat([]byte{0x55}, SectorSize)) {
		t.Fatalf("read %x..., want the new file's 55", got[:4])
	}
	if irq2.n.Load() == 0 {
		t.Error("no interrupt for the request served at restore")
	}
	if st := d2.rd(RegStatus); st != StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK {
		t.Errorf("status %#x", st)
	}
	if isr := d2.ack(); isr&InterruptConfigChange != 0 {
		t.Errorf("config change interrupt with an unchanged config (ISR %#x)", isr)
	}
	c := blkRequest(d2, BlkTOut, 7, bytes.Repeat([]byte{0xee}, SectorSize), 0)
	if u := d2.takeUsed(0); len(u) != 1 || blkStatus(d2, c) != BlkSOK {
		t.Fatalf("write after restore: %v", u)
	}
	blk2.mu.Lock()
	got := make([]byte, SectorSize)
	blk2.f.ReadAt(got, 7*SectorSize)
	blk2.mu.Unlock()
	if !bytes.Equal(got, bytes.Repeat([]byte{0xee}, SectorSize)) {
		t.Error("write after restore did not reach the new file")
	}
	if v, _ := mem2.LoadU32Acquire(d2.queues[0].used); uint16(v>>16) != 7 {
		t.Errorf("used idx %d after restore, want 7", uint16(v>>16))
	}
}

// TestRestoreBlkSlot: an empty slot fails every request and has capacity
// 0; attached before the restore, the restored device shows the new
// capacity, raises a configuration change interrupt with a new generation,
// and serves the file (read-only: writes fail, flush succeeds).
func TestRestoreBlkSlot(t *testing.T) {
	for _, ro := range []bool{false, true} {
		t.Run(map[bool]string{false: "rw", true: "ro"}[ro], func(t *testing.T) {
			mem := newTestMemory()
			irq := &countIRQ{}
			tr, slot := NewBlkSlotMMIO(mem, irq)
			defer slot.Close()
			d := newDriver(t, mem, tr, irq)
			d.negotiate(^uint64(0), 16)
			d.wr(RegDeviceFeaturesSel, 0)
			if f := d.rd(RegDeviceFeatures); f&BlkFRO != 0 || f&(BlkFFlush|BlkFSegMax) != BlkFFlush|BlkFSegMax {
				t.Fatalf("slot features %#x", f)
			}
			if capa := readCapacity(tr); capa != 0 {
				t.Fatalf("empty slot capacity %d", capa)
			}
			for _, typ := range []uint32{BlkTIn, BlkTOut, BlkTFlush, BlkTGetID} {
				var data []byte
				if typ == BlkTOut {
					data = make([]byte, SectorSize)
				}
				c := blkRequest(d, typ, 0, data, map[uint32]uint32{BlkTIn: SectorSize, BlkTGetID: 20}[typ])
				if u := d.takeUsed(0); len(u) != 1 || blkStatus(d, c) != BlkSIOErr {
					t.Fatalf("empty slot, type %d: used %v status %d", typ, u, blkStatus(d, c))
				}
			}
			gen := d.rd(RegConfigGeneration)
			s, mem2 := snapshot(t, tr, mem)
			tr.Close()

			irq2 := &countIRQ{}
			slot2 := NewBlkSlot()
			defer slot2.Close()
			path := diskImage(t, 32, 0x3c)
			if err := slot2.Attach(path, ro); err != nil {
				t.Fatal(err)
			}
			if err := slot2.Attach(path, ro); err == nil {
				t.Fatal("second Attach succeeded")
			}
			tr2 := NewMMIO(slot2, mem2, irq2)
			if err := tr2.RestoreState(s); err != nil {
				t.Fatal(err)
			}
			d2 := d.restoredDriver(mem2, tr2, irq2)
			if isr := d2.ack(); isr&InterruptConfigChange == 0 || irq2.n.Load() == 0 {
				t.Fatalf("no configuration change interrupt (ISR %#x, %d triggers)", isr, irq2.n.Load())
			}
			if g := d2.rd(RegConfigGeneration); g == gen {
				t.Errorf("config generation still %d", g)
			}
			if capa := readCapacity(tr2); capa != 32 {
				t.Fatalf("capacity %d after attach, want 32", capa)
			}
			d2.wr(RegDeviceFeaturesSel, 0)
			if f := d2.rd(RegDeviceFeatures); f&BlkFRO != 0 {
				t.Errorf("attached slot offers RO: %#x", f)
			}
			c := blkRequest(d2, BlkTIn, 31, nil, SectorSize)
			if u := d2.takeUsed(0); len(u) != 1 || blkStatus(d2, c) != BlkSOK || d2.bytesAt(c, 1, 1)[0] != 0x3c {
				t.Fatalf("read after attach: used %v status %d", u, blkStatus(d2, c))
			}
			c = blkRequest(d2, BlkTOut, 0, make([]byte, SectorSize), 0)
			want := byte(BlkSOK)
			if ro {
				want = BlkSIOErr
			}
			if u := d2.takeUsed(0); len(u) != 1 || blkStatus(d2, c) != want {
				t.Fatalf("write (ro %v): used %v status %d", ro, u, blkStatus(d2, c))
			}
			c = blkRequest(d2, BlkTFlush, 0, nil, 0)
			if u := d2.takeUsed(0); len(u) != 1 || blkStatus(d2, c) != BlkSOK {
				t.Fatalf("flush: status %d", blkStatus(d2, c))
			}
		})
	}
}

func TestBlkAttachErrors(t *testing.T) {
	disk, err := OpenBlk(diskImage(t, 1, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	if err := disk.Attach(diskImage(t, 1, 0), false); err == nil {
		t.Error("Attach on an OpenBlk disk succeeded")
	}
	slot := NewBlkSlot()
	if err := slot.Attach(filepath.Join(t.TempDir(), "missing"), false); err == nil {
		t.Error("attached a missing file")
	}
	if err := slot.Attach(t.TempDir(), false); err == nil {
		t.Error("attached a directory")
	}
	slot.Close()
	if err := slot.Attach(diskImage(t, 1, 0), false); err == nil {
		t.Error("Attach after Close succeeded")
	}
}

func TestRestoreRng(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, _ := NewRngMMIO(mem, irq)
	d := newDriver(t, mem, tr, irq)
	d.negotiate(^uint64(0), 8)
	for range 11 { // wraps the 8-entry ring
		d.post(0, false, wseg(16))
		d.kick(0)
		if u := d.takeUsed(0); len(u) != 1 || u[0].len != 16 {
			t.Fatalf("used %v", u)
		}
	}
	s, mem2 := snapshot(t, tr, mem)
	irq2 := &countIRQ{}
	tr2, _ := NewRngMMIO(mem2, irq2)
	if err := tr2.RestoreState(s); err != nil {
		t.Fatal(err)
	}
	d2 := d.restoredDriver(mem2, tr2, irq2)
	// The driver never acknowledged: the restored device still shows
	// the used-buffer interrupt, and raised its line again.
	if s.ISR != InterruptUsedBuffer || d2.rd(RegInterruptStatus) != InterruptUsedBuffer || irq2.n.Load() != 1 {
		t.Fatalf("saved ISR %#x, restored %#x, %d triggers", s.ISR, d2.rd(RegInterruptStatus), irq2.n.Load())
	}
	c := d2.post(0, false, wseg(64))
	d2.kick(0)
	if u := d2.takeUsed(0); len(u) != 1 || u[0].id != uint32(c.head) || u[0].len != 64 {
		t.Fatalf("after restore: used %v", u)
	}
	if bytes.Equal(d2.bytesAt(c, 0, 64), make([]byte, 64)) {
		t.Error("no entropy written")
	}
}

// TestConsolePauseAndRestore: input does not reach the guest while the
// console is paused, and does after Resume; output posted while paused
// comes out of the restored device.
func TestConsolePauseAndRestore(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	var out syncBuf
	tr, con := NewConsoleMMIO(mem, irq, &out)
	d := newDriver(t, mem, tr, irq)
	d.negotiate(^uint64(0), 8)
	rx := d.post(consoleRxQ, false, wseg(64))
	d.kick(consoleRxQ)
	tr.Pause()
	if n := con.Input([]byte("abc")); n != 0 {
		t.Fatalf("Input delivered %d bytes while paused", n)
	}
	done := make(chan error, 1)
	go func() { done <- con.ServeInput(strings.NewReader("hello")) }()
	time.Sleep(20 * time.Millisecond)
	if u := d.takeUsed(consoleRxQ); len(u) != 0 {
		t.Fatalf("ServeInput delivered while paused: %v", u)
	}
	tr.Resume()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if u := d.takeUsed(consoleRxQ); len(u) != 1 || string(d.bytesAt(rx, 0, int(u[0].len))) != "hello" {
		t.Fatalf("after Resume: used %v", u)
	}

	tr.Pause()
	d.post(consoleTxQ, false, rstr("bye\n"))
	d.kick(consoleTxQ)
	s, mem2 := snapshot(t, tr, mem)
	if out.String() != "" {
		t.Fatalf("output while paused: %q", out.String())
	}
	var out2 syncBuf
	irq2 := &countIRQ{}
	tr2, _ := NewConsoleMMIO(mem2, irq2, &out2)
	if err := tr2.RestoreState(s); err != nil {
		t.Fatal(err)
	}
	if out2.String() != "bye\n" {
		t.Fatalf("restored console wrote %q", out2.String())
	}
}

// goodRngState is a saved state of an active rng with ring positions 3/3,
// and the memory it belongs with.
func goodRngState(t *testing.T) (MMIOState, *Memory) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, _ := NewRngMMIO(mem, irq)
	d := newDriver(t, mem, tr, irq)
	d.negotiate(^uint64(0), 8)
	for range 3 {
		d.post(0, false, wseg(8))
		d.kick(0)
	}
	return snapshot(t, tr, mem)
}

func TestRestoreStateRejects(t *testing.T) {
	good, mem := goodRngState(t)
	for _, c := range []struct {
		name string
		mut  func(s *MMIOState)
		want string
	}{
		{"unknown version", func(s *MMIOState) { s.Version = 2 }, "version"},
		{"no version", func(s *MMIOState) { s.Version = 0 }, "version"},
		{"wrong device", func(s *MMIOState) { s.DeviceID = DeviceIDBlk }, "device type"},
		{"feature not offered", func(s *MMIOState) { s.DrvFeatures |= FeatureEventIdx }, "does not offer"},
		{"no VERSION_1", func(s *MMIOState) { s.DrvFeatures &^= FeatureVersion1 }, "VERSION_1"},
		{"DRIVER_OK without FEATURES_OK", func(s *MMIOState) { s.Status &^= StatusFeaturesOK }, "DRIVER_OK"},
		{"unknown status bit", func(s *MMIOState) { s.Status |= 0x20 }, "status"},
		{"NEEDS_RESET status", func(s *MMIOState) { s.Status |= StatusDeviceNeedsReset }, "status"},
		{"interrupt status", func(s *MMIOState) { s.ISR = 4 }, "interrupt"},
		{"queue count", func(s *MMIOState) { s.Queues = append(s.Queues, QueueState{}) }, "queues"},
		{"no queues", func(s *MMIOState) { s.Queues = nil }, "queues"},
		{"queue size above max", func(s *MMIOState) { s.Queues[0].Num = 512 }, "size"},
		{"queue size not a power of 2", func(s *MMIOState) { s.Queues[0].Num = 6 }, "size"},
		{"ready queue of size 0", func(s *MMIOState) { s.Queues[0].Num = 0 }, "size"},
		{"misaligned descriptor table", func(s *MMIOState) { s.Queues[0].Desc += 8 }, "aligned"},
		{"used ring outside memory", func(s *MMIOState) { s.Queues[0].Device = testMemSize }, "used ring"},
		{"avail ring outside memory", func(s *MMIOState) { s.Queues[0].Driver = 1 << 62 }, "available ring"},
		{"positions differ from memory", func(s *MMIOState) { s.Queues[0].LastAvail, s.Queues[0].UsedIdx = 9, 9 }, "guest memory"},
		{"chains in flight", func(s *MMIOState) { s.Queues[0].LastAvail++ }, "in flight"},
		{"positions on an inactive queue", func(s *MMIOState) {
			s.Status = StatusAcknowledge | StatusDriver | StatusFeaturesOK
		}, "not active"},
		{"config too large", func(s *MMIOState) { s.Config = make([]byte, 257) }, "configuration"},
		{"device state", func(s *MMIOState) { s.Device = []byte{1} }, "device state"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := good
			s.Queues = append([]QueueState(nil), good.Queues...)
			c.mut(&s)
			irq := &countIRQ{}
			tr, _ := NewRngMMIO(mem, irq)
			err := tr.RestoreState(s)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one mentioning %q", err, c.want)
			}
			d := newDriver(t, mem, tr, irq)
			if st := d.rd(RegStatus); st != 0 || irq.n.Load() != 0 {
				t.Fatalf("after a failed restore: status %#x, %d interrupts", st, irq.n.Load())
			}
			if err := tr.RestoreState(good); err != nil {
				t.Fatalf("good state after a failed one: %v", err)
			}
		})
	}
	t.Run("transport in use", func(t *testing.T) {
		tr, _ := NewRngMMIO(mem, &countIRQ{})
		if err := tr.RestoreState(good); err != nil {
			t.Fatal(err)
		}
		if err := tr.RestoreState(good); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second restore: %v", err)
		}
	})
	t.Run("not yet negotiated", func(t *testing.T) {
		// A device the driver has not set up: registers only.
		s := MMIOState{Version: MMIOStateVersion, DeviceID: DeviceIDRng, Status: StatusAcknowledge,
			DrvFeatures: 1 << 40, Queues: []QueueState{{Num: 3, Desc: 1}}}
		tr, _ := NewRngMMIO(mem, &countIRQ{})
		if err := tr.RestoreState(s); err != nil {
			t.Fatal(err)
		}
		d := newDriver(t, mem, tr, &countIRQ{})
		if st := d.rd(RegStatus); st != StatusAcknowledge {
			t.Fatalf("status %#x", st)
		}
		d.negotiate(^uint64(0), 8) // the driver starts over
	})
}
