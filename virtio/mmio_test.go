package virtio

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
)

func TestMMIORegisters(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, _ := NewRngMMIO(mem, irq)
	d := newDriver(t, mem, tr, irq)
	for _, c := range []struct {
		off  uint64
		want uint32
	}{
		{RegMagicValue, 0x74726976},
		{RegVersion, 2},
		{RegDeviceID, DeviceIDRng},
		{RegVendorID, VendorID},
		{RegSHMLenLow, 0xffffffff},
		{RegConfigGeneration, 0},
	} {
		if got := d.rd(c.off); got != c.want {
			t.Errorf("reg %#x = %#x, want %#x", c.off, got, c.want)
		}
	}
	d.wr(RegDeviceFeaturesSel, 1)
	if f := d.rd(RegDeviceFeatures); f&1 == 0 {
		t.Errorf("VERSION_1 (bit 32) not offered: high word %#x", f)
	}
	d.wr(RegQueueSel, 0)
	if n := d.rd(RegQueueNumMax); n != 256 {
		t.Errorf("QueueNumMax %d", n)
	}
	d.wr(RegQueueSel, 5)
	if n := d.rd(RegQueueNumMax); n != 0 {
		t.Errorf("QueueNumMax of missing queue %d", n)
	}
	// Narrow or misaligned register accesses are ignored / read as 0.
	b := []byte{0xff, 0xff}
	tr.Read(RegMagicValue, b)
	if !bytes.Equal(b, []byte{0, 0}) {
		t.Errorf("16-bit register read = %x", b)
	}
	tr.Read(0x1000, b) // beyond the window
	// Features without VERSION_1 are refused.
	d.wr(RegStatus, StatusAcknowledge|StatusDriver)
	d.wr(RegDriverFeaturesSel, 1)
	d.wr(RegDriverFeatures, 0)
	d.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	if d.rd(RegStatus)&StatusFeaturesOK != 0 {
		t.Error("FEATURES_OK accepted without VERSION_1")
	}
	// Features not offered are refused.
	d.wr(RegDriverFeatures, 1|1<<30)
	d.wr(RegDriverFeaturesSel, 0)
	d.wr(RegDriverFeatures, 1<<29) // EVENT_IDX
	d.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	if d.rd(RegStatus)&StatusFeaturesOK != 0 {
		t.Error("FEATURES_OK accepted with features not offered")
	}
	d.negotiate(^uint64(0), 8)
	// Layout registers are frozen after DRIVER_OK.
	d.wr(RegQueueSel, 0)
	d.wr(RegQueueNum, 3)
	d.wr(RegQueueReady, 0)
	if d.rd(RegQueueReady) != 1 {
		t.Error("QueueReady changed after DRIVER_OK")
	}
	// Reset clears everything.
	d.wr(RegStatus, 0)
	if s, r := d.rd(RegStatus), d.rd(RegQueueReady); s != 0 || r != 0 {
		t.Errorf("after reset status %#x ready %d", s, r)
	}
	// Notifications after reset reach nothing (no panic, no used entry).
	d.kick(0)
	d.kick(7)
	d.kick(-1 & 0xffff)
}

func TestMMIOBadQueueNeedsReset(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(d *testDriver)
	}{
		{"size not power of 2", func(d *testDriver) { d.wr(RegQueueNum, 3) }},
		{"size above max", func(d *testDriver) { d.wr(RegQueueNum, 512) }},
		{"size zero", func(d *testDriver) { d.wr(RegQueueNum, 0) }},
		{"desc outside memory", func(d *testDriver) { d.wr(RegQueueNum, 8); d.wr(RegQueueDescHigh, 1) }},
		{"used misaligned", func(d *testDriver) { d.wr(RegQueueNum, 8); d.wr(RegQueueDeviceLow, 0x3002) }},
		{"avail at end of memory", func(d *testDriver) { d.wr(RegQueueNum, 8); d.wr(RegQueueDriverLow, testMemSize-4) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := newTestMemory()
			irq := &countIRQ{}
			tr, _ := NewRngMMIO(mem, irq)
			d := newDriver(t, mem, tr, irq)
			d.wr(RegStatus, StatusAcknowledge|StatusDriver)
			d.wr(RegDriverFeaturesSel, 1)
			d.wr(RegDriverFeatures, 1)
			d.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
			d.wr(RegQueueSel, 0)
			d.wr(RegQueueDescLow, 0x1000)
			d.wr(RegQueueDriverLow, 0x2000)
			d.wr(RegQueueDeviceLow, 0x3000)
			c.setup(d)
			d.wr(RegQueueReady, 1)
			d.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
			if s := d.rd(RegStatus); s&StatusDeviceNeedsReset == 0 {
				t.Errorf("status %#x, want DEVICE_NEEDS_RESET", s)
			}
			if d.ack()&InterruptConfigChange == 0 || irq.n.Load() == 0 {
				t.Error("no config change interrupt")
			}
			d.kick(0) // ignored
		})
	}
}

// TestMMIOConfigSpace reads a device's configuration with the access
// widths Linux's vm_get uses (8/16/32-bit, and 64-bit as two 32-bit reads
// around a ConfigGeneration check).
func TestMMIOConfigSpace(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	path := t.TempDir() + "/d.img"
	if err := os.WriteFile(path, make([]byte, 0x123456*SectorSize/0x1000), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, blk, err := NewBlkMMIO(mem, irq, path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer blk.Close()
	want := blk.Capacity()
	var b8 [8]byte
	tr.Read(RegConfig, b8[:])
	if got := binary.LittleEndian.Uint64(b8[:]); got != want {
		t.Errorf("64-bit read %d, want %d", got, want)
	}
	d := newDriver(t, mem, tr, irq)
	gen := d.rd(RegConfigGeneration)
	lo, hi := d.rd(RegConfig), d.rd(RegConfig+4)
	if d.rd(RegConfigGeneration) != gen || uint64(hi)<<32|uint64(lo) != want {
		t.Errorf("32-bit reads %#x %#x", hi, lo)
	}
	var got uint64
	for i := uint64(0); i < 8; i++ {
		var b [1]byte
		tr.Read(RegConfig+i, b[:])
		got |= uint64(b[0]) << (8 * i)
	}
	if got != want {
		t.Errorf("byte reads %d", got)
	}
	var b4 [4]byte
	tr.Read(RegConfig+12, b4[:])
	if seg := binary.LittleEndian.Uint32(b4[:]); seg != blkQueueSize-2 {
		t.Errorf("seg_max %d", seg)
	}
	tr.Read(RegConfig+0xf0, b4[:]) // past the config structure: zeros
	if binary.LittleEndian.Uint32(b4[:]) != 0 {
		t.Errorf("read past config = %x", b4)
	}
	tr.Write(RegConfig, []byte{1, 2, 3, 4}) // read-only config: ignored
	tr.Read(RegConfig, b8[:])
	if binary.LittleEndian.Uint64(b8[:]) != want {
		t.Error("config write changed capacity")
	}
	tr.ConfigChanged()
	if d.rd(RegConfigGeneration) == gen {
		t.Error("ConfigGeneration unchanged")
	}
	if d.ack() != InterruptConfigChange || irq.n.Load() != 1 {
		t.Errorf("config interrupt: %d triggers", irq.n.Load())
	}
	if d.rd(RegInterruptStatus) != 0 {
		t.Error("InterruptStatus not cleared by ACK")
	}
}

func TestDeviceIDsAndQueues(t *testing.T) {
	mem := newTestMemory()
	img := t.TempDir() + "/d.img"
	os.WriteFile(img, make([]byte, SectorSize), 0o600)
	blkT, blk, err := NewBlkMMIO(mem, nil, img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer blk.Close()
	vsT, vs, err := NewVsockMMIO(mem, nil, VsockConfig{GuestCID: 3, UDS: t.TempDir() + "/v.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer vs.Close()
	conT, _ := NewConsoleMMIO(mem, nil, &syncBuf{})
	rngT, _ := NewRngMMIO(mem, nil)
	for _, c := range []struct {
		tr     *MMIO
		id     uint32
		queues int
	}{{blkT, 2, 1}, {vsT, 19, 3}, {conT, 3, 2}, {rngT, 4, 1}} {
		d := newDriver(t, mem, c.tr, nil)
		if id := d.rd(RegDeviceID); id != c.id || c.tr.Device().DeviceID() != c.id {
			t.Errorf("device id %d, want %d", id, c.id)
		}
		if n := c.tr.NumQueues(); n != c.queues {
			t.Errorf("device %d: %d queues, want %d", c.id, n, c.queues)
		}
		if c.tr.InterruptPending() {
			t.Errorf("device %d: interrupt pending at start", c.id)
		}
	}
}
