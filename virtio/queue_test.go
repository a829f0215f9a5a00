package virtio

import (
	"errors"
	"testing"
)

func TestMemoryBounds(t *testing.T) {
	m := NewMemory(make([]byte, 4096))
	for _, c := range []struct {
		gpa, n uint64
		ok     bool
	}{
		{0, 4096, true},
		{4095, 1, true},
		{4096, 0, true},
		{4096, 1, false},
		{4097, 0, false},
		{1, 4096, false},
		{^uint64(0), 2, false},
		{2, ^uint64(0), false},
		{^uint64(0) - 10, 20, false},
	} {
		b, err := m.Slice(c.gpa, c.n)
		if (err == nil) != c.ok {
			t.Errorf("Slice(%#x, %#x) err = %v, want ok=%v", c.gpa, c.n, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrOutOfBounds) {
			t.Errorf("error %v does not wrap ErrOutOfBounds", err)
		}
		if err == nil && (uint64(len(b)) != c.n || cap(b) != len(b)) {
			t.Errorf("Slice(%#x, %#x) len %d cap %d", c.gpa, c.n, len(b), cap(b))
		}
	}
	if err := m.WriteU64(4088, 0x0102030405060708); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.ReadU32(4088); v != 0x05060708 {
		t.Errorf("ReadU32 = %#x (not little-endian?)", v)
	}
	if v, _ := m.ReadU16(4094); v != 0x0102 {
		t.Errorf("ReadU16 = %#x", v)
	}
	if _, err := m.ReadU64(4089); err == nil {
		t.Error("ReadU64 across the end succeeded")
	}
	if err := m.WriteU32(^uint64(0)-1, 1); err == nil {
		t.Error("WriteU32 at 2^64-2 succeeded")
	}
	if err := m.StoreU32Release(4092, 7); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.LoadU32Acquire(4092); v != 7 {
		t.Errorf("LoadU32Acquire = %d", v)
	}
	if _, err := m.LoadU32Acquire(4093); err == nil {
		t.Error("unaligned load across the end succeeded")
	}
}

// rawDesc writes descriptor i of queue qi directly.
func (d *testDriver) rawDesc(qi int, table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	if table == 0 {
		table = d.queues[qi].desc
	}
	e := table + 16*uint64(i)
	d.mem.WriteU64(e, addr)
	d.mem.WriteU32(e+8, n)
	d.mem.WriteU16(e+12, flags)
	d.mem.WriteU16(e+14, next)
}

func (d *testDriver) publishHead(qi int, head uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.publish(d.queues[qi], head)
}

// TestChainValidation posts malformed chains to the entropy device: each
// must come back used with length 0, and the next good chain still works.
func TestChainValidation(t *testing.T) {
	const buf, table = 0x200000, 0x300000
	W, N, I := uint16(DescFWrite), uint16(DescFNext), uint16(DescFIndirect)
	type dsc struct {
		table bool // in the indirect table rather than the ring
		i     uint16
		addr  uint64
		n     uint32
		flags uint16
		next  uint16
	}
	for _, c := range []struct {
		name     string
		descs    []dsc
		head     uint16
		noIndir  bool // INDIRECT_DESC not negotiated
		wantLen  uint32
		wantUsed bool
	}{
		{name: "good", descs: []dsc{{i: 0, addr: buf, n: 8, flags: W}}, wantLen: 8},
		{name: "good two", descs: []dsc{{i: 0, addr: buf, n: 8, flags: W | N, next: 5}, {i: 5, addr: buf + 8, n: 8, flags: W}}, wantLen: 16},
		{name: "head out of range", descs: nil, head: 16},
		{name: "next out of range", descs: []dsc{{i: 0, addr: buf, n: 8, flags: W | N, next: 16}}},
		{name: "self loop", descs: []dsc{{i: 0, addr: buf, n: 8, flags: W | N, next: 0}}},
		{name: "two-cycle", descs: []dsc{{i: 0, addr: buf, n: 8, flags: W | N, next: 1}, {i: 1, addr: buf, n: 8, flags: W | N, next: 0}}},
		{name: "buffer past memory", descs: []dsc{{i: 0, addr: testMemSize - 4, n: 8, flags: W}}},
		{name: "buffer address overflow", descs: []dsc{{i: 0, addr: ^uint64(0) - 3, n: 8, flags: W}}},
		{name: "readable after writable", descs: []dsc{{i: 0, addr: buf, n: 8, flags: W | N, next: 1}, {i: 1, addr: buf, n: 8}}},
		{name: "chain too many bytes", descs: []dsc{{i: 0, addr: 0, n: testMemSize, flags: W | N, next: 1}, {i: 1, addr: 0, n: testMemSize, flags: W | N, next: 2},
			{i: 2, addr: 0, n: testMemSize, flags: W | N, next: 3}, {i: 3, addr: 0, n: testMemSize, flags: W | N, next: 4}, {i: 4, addr: 0, n: testMemSize, flags: W}}},
		{name: "indirect good", descs: []dsc{{i: 0, addr: table, n: 32, flags: I}, {table: true, i: 0, addr: buf, n: 4, flags: W | N, next: 1}, {table: true, i: 1, addr: buf, n: 4, flags: W}}, wantLen: 8},
		{name: "indirect ignores its WRITE flag", descs: []dsc{{i: 0, addr: table, n: 16, flags: I | W}, {table: true, i: 0, addr: buf, n: 4, flags: W}}, wantLen: 4},
		{name: "indirect not negotiated", noIndir: true, descs: []dsc{{i: 0, addr: table, n: 16, flags: I}, {table: true, i: 0, addr: buf, n: 4, flags: W}}},
		{name: "indirect nested", descs: []dsc{{i: 0, addr: table, n: 16, flags: I}, {table: true, i: 0, addr: table, n: 16, flags: I}}},
		{name: "indirect with next", descs: []dsc{{i: 0, addr: table, n: 16, flags: I | N, next: 1}, {i: 1, addr: buf, n: 4, flags: W}, {table: true, i: 0, addr: buf, n: 4, flags: W}}},
		{name: "indirect after buffer", descs: []dsc{{i: 0, addr: buf, n: 4, flags: W | N, next: 1}, {i: 1, addr: table, n: 16, flags: I}, {table: true, i: 0, addr: buf, n: 4, flags: W}}},
		{name: "indirect length not multiple of 16", descs: []dsc{{i: 0, addr: table, n: 24, flags: I}, {table: true, i: 0, addr: buf, n: 4, flags: W}}},
		{name: "indirect empty", descs: []dsc{{i: 0, addr: table, n: 0, flags: I}}},
		{name: "indirect table past memory", descs: []dsc{{i: 0, addr: testMemSize - 16, n: 32, flags: I}}},
		{name: "indirect next past table", descs: []dsc{{i: 0, addr: table, n: 32, flags: I}, {table: true, i: 0, addr: buf, n: 4, flags: W | N, next: 2}}},
		{name: "indirect loop", descs: []dsc{{i: 0, addr: table, n: 32, flags: I}, {table: true, i: 0, addr: buf, n: 4, flags: W | N, next: 1}, {table: true, i: 1, addr: buf, n: 4, flags: W | N, next: 0}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := newTestMemory()
			irq := &countIRQ{}
			tr, _ := NewRngMMIO(mem, irq)
			d := newDriver(t, mem, tr, irq)
			accept := ^uint64(0)
			if c.noIndir {
				// negotiate() always accepts INDIRECT_DESC; do it by hand.
				d.negotiate(0, 16)
				d.wr(RegStatus, 0)
				d.wr(RegStatus, StatusAcknowledge|StatusDriver)
				d.wr(RegDriverFeaturesSel, 1)
				d.wr(RegDriverFeatures, 1)
				d.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
				q := d.queues[0]
				d.wr(RegQueueSel, 0)
				d.wr(RegQueueNum, uint32(q.size))
				d.wr(RegQueueDescLow, uint32(q.desc))
				d.wr(RegQueueDriverLow, uint32(q.avail))
				d.wr(RegQueueDeviceLow, uint32(q.used))
				d.wr(RegQueueReady, 1)
				d.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
				*q = drvQueue{size: q.size, desc: q.desc, avail: q.avail, used: q.used}
				mem.StoreU32Release(q.avail, 0)
			} else {
				d.negotiate(accept, 16)
			}
			for _, x := range c.descs {
				tb := uint64(0)
				if x.table {
					tb = table
				}
				d.rawDesc(0, tb, x.i, x.addr, x.n, x.flags, x.next)
			}
			d.publishHead(0, c.head)
			// A good chain after the bad one.
			d.rawDesc(0, 0, 10, buf+0x1000, 4, W, 0)
			d.publishHead(0, 10)
			d.kick(0)
			u := d.takeUsed(0)
			if len(u) != 2 || u[0].id != uint32(c.head) || u[0].len != c.wantLen || u[1].id != 10 || u[1].len != 4 {
				t.Fatalf("used %v, want [{id %d len %d} {id 10 len 4}]", u, c.head, c.wantLen)
			}
			if s := d.rd(RegStatus); s&StatusDeviceNeedsReset != 0 {
				t.Fatalf("a bad chain set NEEDS_RESET: %#x", s)
			}
		})
	}
}

// TestCorruptAvailIndex: an avail index more than Queue Size ahead breaks
// the queue and asks for a reset; a reset and renegotiation recover.
func TestCorruptAvailIndex(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, _ := NewRngMMIO(mem, irq)
	d := newDriver(t, mem, tr, irq)
	d.negotiate(0, 16)
	mem.StoreU32Release(d.queues[0].avail, 17<<16)
	d.kick(0)
	if u := d.takeUsed(0); len(u) != 0 {
		t.Fatalf("used %v", u)
	}
	if s := d.rd(RegStatus); s&StatusDeviceNeedsReset == 0 {
		t.Fatalf("status %#x, want NEEDS_RESET", s)
	}
	if d.ack()&InterruptConfigChange == 0 {
		t.Fatal("no config change interrupt")
	}
	if tr.Err() == nil || !errors.Is(tr.Err(), ErrBadQueue) {
		t.Fatalf("Err() = %v", tr.Err())
	}
	d.kick(0) // still broken, no panic
	mem.StoreU32Release(d.queues[0].avail, 0)
	d.negotiate(0, 16)
	d.post(0, false, wseg(4))
	d.kick(0)
	if u := d.takeUsed(0); len(u) != 1 || u[0].len != 4 {
		t.Fatalf("after reset: used %v", u)
	}
}

func TestNotifyQueueDirect(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, _ := NewRngMMIO(mem, irq)
	d := newDriver(t, mem, tr, irq)
	tr.NotifyQueue(0) // before DRIVER_OK: ignored
	d.negotiate(0, 16)
	d.post(0, false, wseg(4))
	tr.NotifyQueue(0) // as an ioeventfd would
	if u := d.takeUsed(0); len(u) != 1 {
		t.Fatalf("used %v", u)
	}
	tr.NotifyQueue(1)
	tr.NotifyQueue(-1)
}
