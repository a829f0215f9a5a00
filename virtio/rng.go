package virtio

import (
	"crypto/rand"
	"io"
)

// DeviceIDRng is the entropy device type (§5.4).
const DeviceIDRng = 4

// rngMaxPerRequest bounds the entropy produced for one request so a guest
// cannot make the VMM fill all of its memory in one notification.
const rngMaxPerRequest = 64 << 10

// Rng is the virtio entropy device (§5.4): one requestq whose writable
// buffers are filled from crypto/rand.
type Rng struct {
	base
	src io.Reader
}

// NewRng returns an entropy device reading crypto/rand.
func NewRng() *Rng { return &Rng{src: rand.Reader} }

// NewRngMMIO returns an entropy device behind an MMIO transport.
func NewRngMMIO(mem *Memory, irq Interrupt) (*MMIO, *Rng) {
	d := NewRng()
	return NewMMIO(d, mem, irq), d
}

func (d *Rng) DeviceID() uint32                     { return DeviceIDRng }
func (d *Rng) Features() uint64                     { return 0 }
func (d *Rng) QueueMaxSizes() []uint16              { return []uint16{256} }
func (d *Rng) ReadConfig(off uint64, data []byte)   { clear(data) }
func (d *Rng) WriteConfig(off uint64, data []byte)  {}
func (d *Rng) Activate(qs []*Queue, f uint64) error { d.activate(qs, f); return nil }
func (d *Rng) Reset()                               { d.activate(nil, 0) }

// Notify serves every pending request on the requestq.
func (d *Rng) Notify(qi int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.queue(qi)
	if q == nil {
		return
	}
	defer q.Interrupt()
	for {
		c := q.Next()
		if c == nil {
			return
		}
		w := c.Writer()
		for w.Written() < rngMaxPerRequest {
			b := w.Next(int(rngMaxPerRequest - w.Written()))
			if b == nil {
				break
			}
			if _, err := io.ReadFull(d.src, b); err != nil {
				break
			}
		}
		if q.PushChain(c, w.Written()) != nil {
			return
		}
	}
}
