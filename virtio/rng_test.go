package virtio

import (
	"bytes"
	"testing"
)

func TestRng(t *testing.T) {
	for _, c := range []struct {
		name     string
		indirect bool
		segs     []seg
		wantLen  uint32
	}{
		{"one buffer", false, []seg{wseg(64)}, 64},
		{"two buffers", false, []seg{wseg(16), wseg(48)}, 64},
		{"indirect", true, []seg{wseg(32), wseg(32)}, 64},
		{"readable only", false, []seg{rstr("x")}, 0},
		{"capped", false, []seg{wseg(rngMaxPerRequest + 100)}, rngMaxPerRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := newTestMemory()
			irq := &countIRQ{}
			tr, _ := NewRngMMIO(mem, irq)
			d := newDriver(t, mem, tr, irq)
			d.negotiate(0, 16)
			ch := d.post(0, c.indirect, c.segs...)
			d.kick(0)
			u := d.takeUsed(0)
			if len(u) != 1 || u[0].id != uint32(ch.head) || u[0].len != c.wantLen {
				t.Fatalf("used %v, want head %d len %d", u, ch.head, c.wantLen)
			}
			if irq.n.Load() != 1 || d.ack() != InterruptUsedBuffer {
				t.Fatalf("interrupts %d", irq.n.Load())
			}
			if c.wantLen >= 64 {
				b := d.bytesAt(ch, 0, 16)
				if bytes.Equal(b, make([]byte, 16)) {
					t.Error("buffer not filled")
				}
			}
		})
	}
}

func TestNoInterruptFlag(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, _ := NewRngMMIO(mem, irq)
	d := newDriver(t, mem, tr, irq)
	d.negotiate(0, 16)
	d.setNoInterrupt(0, true)
	d.post(0, false, wseg(8))
	d.kick(0)
	if len(d.takeUsed(0)) != 1 {
		t.Fatal("request not served")
	}
	if n := irq.n.Load(); n != 0 {
		t.Fatalf("%d interrupts despite VIRTQ_AVAIL_F_NO_INTERRUPT", n)
	}
	d.setNoInterrupt(0, false)
	d.post(0, false, wseg(8))
	d.kick(0)
	if n := irq.n.Load(); n != 1 {
		t.Fatalf("%d interrupts, want 1", n)
	}
}
