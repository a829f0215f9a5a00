// This file owns FuzzRestoreState: saved states (registers, queues, ring
// positions, configuration) and ring memory from the fuzzer, restored
// onto a fresh transport of every device. RestoreState must never panic;
// on error it leaves the transport reset, on success the device keeps
// working and what it saves again restores again.

package virtio

import (
	"encoding/binary"
	"io"
	"testing"
)

const (
	fuzzStateMem  = 2 << 20 // rings at testRingBase, buffers from testBufBase
	fuzzRingBytes = 16 << 10
	fuzzQueueRec  = 19 // ready(1) num(2) desc(4) driver(4) device(4) lastAvail(2) usedIdx(2)
	fuzzRegsRec   = 22 // version(1) status(4) isr(1) generation(4) features(8) sels(3) flags(1)
)

// fuzzEncodeState turns s into the fuzz target's regs and queues inputs.
func fuzzEncodeState(s MMIOState) (regs, queues []byte) {
	le := binary.LittleEndian
	regs = append(regs, byte(s.Version))
	regs = le.AppendUint32(regs, s.Status)
	regs = append(regs, byte(s.ISR))
	regs = le.AppendUint32(regs, s.Generation)
	regs = le.AppendUint64(regs, s.DrvFeatures)
	regs = append(regs, byte(s.DevFeatSel), byte(s.DrvFeatSel), byte(s.QueueSel), 0)
	for _, q := range s.Queues {
		ready := byte(0)
		if q.Ready {
			ready = 1
		}
		queues = append(queues, ready)
		queues = le.AppendUint16(queues, q.Num)
		for _, a := range []uint64{q.Desc, q.Driver, q.Device} {
			queues = le.AppendUint32(queues, uint32(a))
		}
		queues = le.AppendUint16(queues, q.LastAvail)
		queues = le.AppendUint16(queues, q.UsedIdx)
	}
	return regs, queues
}

// fuzzDecodeState builds a state for a device of type id with nq queues.
// Flags: bit 0 a wrong device type, bit 1 device state bytes, bit 2 one
// queue too many; a queue's ready byte bit 1 puts its addresses above 4
// GiB.
func fuzzDecodeState(id uint32, nq int, regs, queues, cfg []byte) MMIOState {
	le := binary.LittleEndian
	r := make([]byte, fuzzRegsRec)
	copy(r, regs)
	s := MMIOState{
		Version: int(int8(r[0])), DeviceID: id,
		Status: le.Uint32(r[1:]), ISR: uint32(r[5]), Generation: le.Uint32(r[6:]),
		DrvFeatures: le.Uint64(r[10:]),
		DevFeatSel:  uint32(r[18]), DrvFeatSel: uint32(r[19]), QueueSel: uint32(r[20]),
		Config: cfg,
	}
	flags := r[21]
	if flags&1 != 0 {
		s.DeviceID ^= 1
	}
	if flags&2 != 0 {
		s.Device = []byte{flags}
	}
	if flags&4 != 0 {
		nq++
	}
	for i := range nq {
		q := make([]byte, fuzzQueueRec)
		if off := i * fuzzQueueRec; off < len(queues) {
			copy(q, queues[off:])
		}
		var hi uint64
		if q[0]&2 != 0 {
			hi = 1 << 32
		}
		s.Queues = append(s.Queues, QueueState{
			Ready: q[0]&1 != 0, Num: le.Uint16(q[1:]),
			Desc: hi | uint64(le.Uint32(q[3:])), Driver: hi | uint64(le.Uint32(q[7:])), Device: hi | uint64(le.Uint32(q[11:])),
			LastAvail: le.Uint16(q[15:]), UsedIdx: le.Uint16(q[17:]),
		})
	}
	return s
}

// fuzzSeedStates adds the states of real devices after some I/O, with
// their ring memory.
func fuzzSeedStates(f *testing.F, t *testing.T) {
	add := func(dev uint8, tr *MMIO, mem *Memory) {
		tr.Pause()
		s, err := tr.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		regs, queues := fuzzEncodeState(s)
		ring, _ := mem.Slice(testRingBase, fuzzRingBytes)
		f.Add(dev, regs, queues, s.Config, append([]byte(nil), ring...))
		tr.Close()
	}
	mem := NewMemory(make([]byte, fuzzStateMem))
	irq := &countIRQ{}
	tr, _ := NewRngMMIO(mem, irq)
	d := newDriver(t, mem, tr, irq)
	d.negotiate(^uint64(0), 8)
	for range 5 {
		d.post(0, false, wseg(8))
		d.kick(0)
	}
	d.post(0, false, wseg(8)) // available, not notified
	add(0, tr, mem)

	mem = NewMemory(make([]byte, fuzzStateMem))
	tr, _ = NewConsoleMMIO(mem, irq, io.Discard)
	d = newDriver(t, mem, tr, irq)
	d.negotiate(^uint64(0), 8)
	d.post(consoleRxQ, false, wseg(8))
	d.post(consoleTxQ, false, rstr("x"))
	d.kick(consoleTxQ)
	add(1, tr, mem)

	mem = NewMemory(make([]byte, fuzzStateMem))
	tr, _ = NewBlkSlotMMIO(mem, irq)
	d = newDriver(t, mem, tr, irq)
	d.negotiate(^uint64(0), 8)
	blkRequest(d, BlkTIn, 0, nil, SectorSize)
	add(2, tr, mem)

	mem = NewMemory(make([]byte, fuzzStateMem))
	tr, dev, err := NewNetSlotMMIO(mem, irq, NetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	d = newDriver(t, mem, tr, irq)
	d.negotiate(^uint64(0), 8)
	d.post(netRxQ, false, wseg(2048))
	d.post(netTxQ, false, rseg(make([]byte, NetHdrSize+60)))
	d.kick(netTxQ)
	add(3, tr, mem)
	dev.Close()
}

// FuzzRestoreState restores fuzzed states (registers, queues with ring
// positions, configuration, ring memory) onto a fresh transport of the
// rng, console, blk (a slot, and a disk), net slot and vsock devices.
func FuzzRestoreState(f *testing.F) {
	fuzzSeedStates(f, &testing.T{})
	f.Add(uint8(4), []byte{1, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, []byte{1, 8}, []byte{3}, []byte{})
	blk, vs := fuzzBackends(f)
	ram := make([]byte, fuzzStateMem)
	f.Fuzz(func(t *testing.T, dev uint8, regs, queues, cfg, ring []byte) {
		if len(ring) > fuzzRingBytes || len(cfg) > 300 || len(queues) > 8*fuzzQueueRec {
			return
		}
		clear(ram[:testBufBase])
		copy(ram[testRingBase:], ring)
		mem := NewMemory(ram)
		irq := &countIRQ{}
		newDev := func() (Device, func()) {
			switch dev % 6 {
			case 0:
				return NewRng(), func() {}
			case 1:
				return NewConsole(io.Discard), func() {}
			case 2:
				return NewBlkSlot(), func() {}
			case 3:
				n, err := NewNetSlot(NetConfig{})
				if err != nil {
					t.Fatal(err)
				}
				return n, func() { n.Close() }
			case 4:
				return blk, func() {}
			default:
				return vs, func() {}
			}
		}
		d, done := newDev()
		defer done()
		tr := NewMMIO(d, mem, irq)
		defer tr.Close()
		s := fuzzDecodeState(d.DeviceID(), len(d.QueueMaxSizes()), regs, queues, cfg)
		if err := tr.RestoreState(s); err != nil {
			var b [4]byte
			tr.Read(RegStatus, b[:])
			if st := binary.LittleEndian.Uint32(b[:]); st != 0 || tr.active.Load() {
				t.Fatalf("failed restore (%v) left status %#x", err, st)
			}
			return
		}
		var b [4]byte
		tr.Read(RegStatus, b[:])
		if st := binary.LittleEndian.Uint32(b[:]); st&^StatusDeviceNeedsReset != s.Status {
			t.Fatalf("status %#x after restoring %#x", st, s.Status)
		}
		for q := range tr.NumQueues() + 1 {
			tr.NotifyQueue(q)
		}
		tr.Pause()
		s2, err := tr.SaveState()
		if err != nil {
			if tr.Err() == nil {
				t.Fatalf("SaveState of a restored device: %v", err)
			}
			return // the rings were corrupt: DEVICE_NEEDS_RESET
		}
		tr.Close()
		tr2 := NewMMIO(d, mem, irq)
		defer tr2.Close()
		if err := tr2.RestoreState(s2); err != nil {
			t.Fatalf("restoring a state saved from a restored device: %v\n%+v", err, s2)
		}
	})
}
