package virtio

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// This file is a Go-side virtio driver for tests: it lays out split rings
// in a Memory, negotiates through the MMIO registers in the order Linux's
// virtio_mmio.c does, posts descriptor chains and reads the used ring.

type countIRQ struct{ n atomic.Int64 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

type drvQueue struct {
	size              uint16
	desc, avail, used uint64
	nextDesc          uint16
	availIdx          uint16
	lastUsed          uint16
}

type testDriver struct {
	t      testing.TB
	mem    *Memory
	tr     *MMIO
	irq    *countIRQ
	queues []*drvQueue

	mu    sync.Mutex // guards alloc
	alloc uint64
}

const (
	testMemSize  = 8 << 20
	testRingBase = 0x10000
	testBufBase  = 0x100000
)

func newTestMemory() *Memory { return NewMemory(make([]byte, testMemSize)) }

// newDriver wraps transport tr over mem. It does not negotiate yet.
func newDriver(t testing.TB, mem *Memory, tr *MMIO, irq *countIRQ) *testDriver {
	return &testDriver{t: t, mem: mem, tr: tr, irq: irq, alloc: testBufBase}
}

func (d *testDriver) rd(off uint64) uint32 {
	var b [4]byte
	d.tr.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (d *testDriver) wr(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	d.tr.Write(off, b[:])
}

// negotiate runs the §3.1.1 initialisation sequence with queue size qsize
// for every queue; it accepts the device features masked by accept (plus
// VERSION_1 and INDIRECT_DESC).
func (d *testDriver) negotiate(accept uint64, qsize uint16) {
	t := d.t
	t.Helper()
	if m := d.rd(RegMagicValue); m != MagicValue {
		t.Fatalf("magic %#x", m)
	}
	if v := d.rd(RegVersion); v != 2 {
		t.Fatalf("version %d", v)
	}
	d.wr(RegStatus, 0)
	d.wr(RegStatus, StatusAcknowledge)
	d.wr(RegStatus, StatusAcknowledge|StatusDriver)
	d.wr(RegDeviceFeaturesSel, 1)
	f := uint64(d.rd(RegDeviceFeatures)) << 32
	d.wr(RegDeviceFeaturesSel, 0)
	f |= uint64(d.rd(RegDeviceFeatures))
	if f&FeatureVersion1 == 0 {
		t.Fatalf("device does not offer VERSION_1: %#x", f)
	}
	if f&FeatureEventIdx != 0 {
		t.Fatalf("device offers EVENT_IDX")
	}
	f &= accept | FeatureVersion1 | FeatureIndirectDesc
	d.wr(RegDriverFeaturesSel, 1)
	d.wr(RegDriverFeatures, uint32(f>>32))
	d.wr(RegDriverFeaturesSel, 0)
	d.wr(RegDriverFeatures, uint32(f))
	d.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	if d.rd(RegStatus)&StatusFeaturesOK == 0 {
		t.Fatalf("FEATURES_OK not accepted")
	}
	ring := uint64(testRingBase)
	d.queues = nil
	for i := 0; i < d.tr.NumQueues(); i++ {
		d.wr(RegQueueSel, uint32(i))
		if d.rd(RegQueueReady) != 0 {
			t.Fatalf("queue %d ready before setup", i)
		}
		max := d.rd(RegQueueNumMax)
		n := qsize
		if uint32(n) > max {
			n = uint16(max)
		}
		q := &drvQueue{size: n}
		q.desc = ring
		q.avail = q.desc + 16*uint64(n)
		q.used = (q.avail + 6 + 2*uint64(n) + 4095) &^ 4095
		ring = (q.used + 6 + 8*uint64(n) + 4095) &^ 4095
		d.wr(RegQueueNum, uint32(n))
		d.wr(RegQueueDescLow, uint32(q.desc))
		d.wr(RegQueueDescHigh, uint32(q.desc>>32))
		d.wr(RegQueueDriverLow, uint32(q.avail))
		d.wr(RegQueueDriverHigh, uint32(q.avail>>32))
		d.wr(RegQueueDeviceLow, uint32(q.used))
		d.wr(RegQueueDeviceHigh, uint32(q.used>>32))
		d.wr(RegQueueReady, 1)
		d.queues = append(d.queues, q)
	}
	d.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	if s := d.rd(RegStatus); s&StatusDriverOK == 0 || s&StatusDeviceNeedsReset != 0 {
		t.Fatalf("status after DRIVER_OK: %#x", s)
	}
}

// seg is one buffer of a chain the test posts: readable data, or (when
// write > 0) a writable buffer of that many bytes.
type seg struct {
	data  []byte
	write uint32
}

func rseg(b []byte) seg          { return seg{data: b} }
func wseg(n uint32) seg          { return seg{write: n} }
func rstr(s string) seg          { return seg{data: []byte(s)} }
func (s seg) isW() bool          { return s.write > 0 }
func (s seg) size() int          { return max(len(s.data), int(s.write)) }
func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

func (d *testDriver) allocBuf(n uint64) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := alignUp(d.alloc, 16)
	if a+n > testMemSize {
		a = testBufBase // wrap: tests keep few buffers alive
	}
	d.alloc = a + n
	return a
}

// chainBufs holds the guest addresses of the buffers of a posted chain.
type chainBufs struct {
	head  uint16
	addrs []uint64
	segs  []seg
}

// writable returns the contents of the i-th segment after the device used it.
func (d *testDriver) bytesAt(c chainBufs, i int, n int) []byte {
	b, err := d.mem.Slice(c.addrs[i], uint64(n))
	if err != nil {
		d.t.Fatal(err)
	}
	return append([]byte(nil), b...)
}

// post places segs as one chain (as an indirect table when indirect) in
// queue qi and makes it available, without notifying.
func (d *testDriver) post(qi int, indirect bool, segs ...seg) chainBufs {
	d.mu.Lock()
	q := d.queues[qi]
	d.mu.Unlock()
	c := chainBufs{segs: segs}
	for _, s := range segs {
		a := d.allocBuf(uint64(s.size()))
		if !s.isW() {
			b, _ := d.mem.Slice(a, uint64(len(s.data)))
			copy(b, s.data)
		}
		c.addrs = append(c.addrs, a)
	}
	writeDesc := func(table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
		e := table + 16*uint64(i)
		d.mem.WriteU64(e, addr)
		d.mem.WriteU32(e+8, n)
		d.mem.WriteU16(e+12, flags)
		d.mem.WriteU16(e+14, next)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if indirect {
		table := d.allocLocked(16 * uint64(len(segs)))
		for i, s := range segs {
			var fl uint16
			if s.isW() {
				fl |= DescFWrite
			}
			if i+1 < len(segs) {
				fl |= DescFNext
			}
			writeDesc(table, uint16(i), c.addrs[i], uint32(s.size()), fl, uint16(i+1))
		}
		c.head = q.nextDesc
		q.nextDesc = (q.nextDesc + 1) % q.size
		writeDesc(q.desc, c.head, table, uint32(16*len(segs)), DescFIndirect, 0)
	} else {
		c.head = q.nextDesc
		for i, s := range segs {
			idx := q.nextDesc
			q.nextDesc = (q.nextDesc + 1) % q.size
			var fl uint16
			if s.isW() {
				fl |= DescFWrite
			}
			if i+1 < len(segs) {
				fl |= DescFNext
			}
			writeDesc(q.desc, idx, c.addrs[i], uint32(s.size()), fl, q.nextDesc)
		}
	}
	d.publish(q, c.head)
	return c
}

func (d *testDriver) allocLocked(n uint64) uint64 {
	a := alignUp(d.alloc, 16)
	if a+n > testMemSize {
		a = testBufBase
	}
	d.alloc = a + n
	return a
}

// publish appends head to the avail ring and releases the new index.
// Called with d.mu held.
func (d *testDriver) publish(q *drvQueue, head uint16) {
	d.mem.WriteU16(q.avail+4+2*uint64(q.availIdx%q.size), head)
	q.availIdx++
	flags, _ := d.mem.LoadU32Acquire(q.avail)
	d.mem.StoreU32Release(q.avail, uint32(q.availIdx)<<16|flags&0xffff)
}

// setNoInterrupt sets or clears VIRTQ_AVAIL_F_NO_INTERRUPT on queue qi.
func (d *testDriver) setNoInterrupt(qi int, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.queues[qi]
	var f uint32
	if on {
		f = AvailFNoInterrupt
	}
	d.mem.StoreU32Release(q.avail, uint32(q.availIdx)<<16|f)
}

func (d *testDriver) kick(qi int) { d.wr(RegQueueNotify, uint32(qi)) }

type usedElem struct {
	id  uint32
	len uint32
}

// takeUsed returns the used elements added since the last call.
func (d *testDriver) takeUsed(qi int) []usedElem {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.queues[qi]
	v, err := d.mem.LoadU32Acquire(q.used)
	if err != nil {
		d.t.Fatal(err)
	}
	idx := uint16(v >> 16)
	var out []usedElem
	for ; q.lastUsed != idx; q.lastUsed++ {
		e := q.used + 4 + 8*uint64(q.lastUsed%q.size)
		id, _ := d.mem.ReadU32(e)
		n, _ := d.mem.ReadU32(e + 4)
		out = append(out, usedElem{id, n})
	}
	return out
}

// waitUsed polls until n used elements arrive on queue qi.
func (d *testDriver) waitUsed(qi, n int, timeout time.Duration) []usedElem {
	d.t.Helper()
	var got []usedElem
	deadline := time.Now().Add(timeout)
	for len(got) < n {
		got = append(got, d.takeUsed(qi)...)
		if len(got) >= n {
			break
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("queue %d: %d used elements after %v, want %d", qi, len(got), timeout, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return got
}

// ack reads and acknowledges InterruptStatus as Linux's vm_interrupt does.
func (d *testDriver) ack() uint32 {
	s := d.rd(RegInterruptStatus)
	d.wr(RegInterruptACK, s)
	return s
}

func (u usedElem) String() string { return fmt.Sprintf("{id %d len %d}", u.id, u.len) }
