// This file owns the console device (virtio v1.2 §5.3): one port, output
// to an io.Writer, input from Input or ServeInput, and its pause (no input
// reaches the guest while paused).

package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Console device constants, §5.3.
const (
	DeviceIDConsole = 3

	ConsoleFSize       = 1 << 0 // VIRTIO_CONSOLE_F_SIZE (not offered)
	ConsoleFMultiport  = 1 << 1 // VIRTIO_CONSOLE_F_MULTIPORT (not offered)
	ConsoleFEmergWrite = 1 << 2 // VIRTIO_CONSOLE_F_EMERG_WRITE

	consoleRxQ = 0 // receiveq(port0)
	consoleTxQ = 1 // transmitq(port0)

	// struct virtio_console_config: le16 cols; le16 rows;
	// le32 max_nr_ports; le32 emerg_wr (§5.3.4).
	consoleConfigSize  = 12
	consoleEmergWrOffs = 8
)

// Console is a single-port virtio console (§5.3): what the guest transmits
// goes to an io.Writer (the per-VM log file); Input or ServeInput feeds the
// receive queue.
type Console struct {
	base
	out    io.Writer
	rxWait *sync.Cond // on base.mu: receive buffers posted, resume, or Close
	closed bool
	paused bool // no input is delivered (MMIO.Pause)
}

// ErrConsoleClosed is returned by ServeInput after Close.
var ErrConsoleClosed = errors.New("virtio-console: closed")

// NewConsole returns a console writing guest output to out.
func NewConsole(out io.Writer) *Console {
	d := &Console{out: out}
	d.rxWait = sync.NewCond(&d.mu)
	return d
}

// Close makes a running ServeInput return ErrConsoleClosed (pending input is
// dropped). Transmit keeps working.
func (d *Console) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	d.rxWait.Broadcast()
	return nil
}

// NewConsoleMMIO returns a console behind an MMIO transport.
func NewConsoleMMIO(mem *Memory, irq Interrupt, out io.Writer) (*MMIO, *Console) {
	d := NewConsole(out)
	return NewMMIO(d, mem, irq), d
}

func (d *Console) DeviceID() uint32        { return DeviceIDConsole }
func (d *Console) Features() uint64        { return ConsoleFEmergWrite }
func (d *Console) QueueMaxSizes() []uint16 { return []uint16{64, 64} }

func (d *Console) ReadConfig(off uint64, data []byte) {
	var cfg [consoleConfigSize]byte
	binary.LittleEndian.PutUint32(cfg[4:], 1) // max_nr_ports
	readConfigBytes(cfg[:], off, data)
}

// WriteConfig implements emerg_wr: a write there outputs one character,
// even before the driver is ready (§5.3.4).
func (d *Console) WriteConfig(off uint64, data []byte) {
	if off != consoleEmergWrOffs || len(data) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.out.Write(data[:1])
}

func (d *Console) Activate(qs []*Queue, f uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queues, d.features = qs, f
	d.rxWait.Broadcast()
	return nil
}

func (d *Console) Reset() { d.activate(nil, 0) }

// Notify handles the transmit queue, and wakes ServeInput when the driver
// posts receive buffers.
func (d *Console) Notify(qi int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if qi == consoleRxQ {
		d.rxWait.Broadcast()
		return
	}
	if qi != consoleTxQ {
		return
	}
	q := d.queue(qi)
	if q == nil {
		return
	}
	defer q.Interrupt()
	for c := q.Next(); c != nil; c = q.Next() {
		for _, b := range c.Readable {
			if len(b) > 0 {
				d.out.Write(b)
			}
		}
		if q.Push(c.Head, 0) != nil {
			return
		}
	}
}

// Input copies p into the guest's receive buffers and returns how many
// bytes were delivered; it is short when the guest has no buffers posted
// or the device is paused.
func (d *Console) Input(p []byte) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.input(p)
}

// ServeInput copies r into the guest's receive queue, waiting for the
// driver to post buffers (across device resets), until r returns an error
// or Close is called. It returns nil at io.EOF once everything read was
// delivered, ErrConsoleClosed after Close, or r's error. Run it on its own
// goroutine; to stop it, Close the console (and close r if its Read blocks).
func (d *Console) ServeInput(r io.Reader) error {
	buf := make([]byte, 4096)
	for {
		n, rerr := r.Read(buf)
		p := buf[:n]
		d.mu.Lock()
		for len(p) > 0 && !d.closed {
			p = p[d.input(p):]
			if len(p) > 0 {
				d.rxWait.Wait()
			}
		}
		closed := d.closed
		d.mu.Unlock()
		switch {
		case closed:
			return ErrConsoleClosed
		case errors.Is(rerr, io.EOF):
			return nil
		case rerr != nil:
			return fmt.Errorf("virtio-console: input: %w", rerr)
		}
	}
}

// pause stops input reaching the receive queue: Input returns 0 and
// ServeInput waits.
func (d *Console) pause() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = true
}

func (d *Console) resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = false
	d.rxWait.Broadcast()
}

// input delivers what fits of p. Called with d.mu held.
func (d *Console) input(p []byte) int {
	q := d.queue(consoleRxQ)
	if q == nil || d.paused {
		return 0
	}
	defer q.Interrupt()
	n := 0
	for n < len(p) {
		c := q.Next()
		if c == nil {
			break
		}
		w := c.Writer()
		m, _ := w.Write(p[n:])
		n += m
		if q.PushChain(c, w.Written()) != nil {
			break
		}
	}
	return n
}
