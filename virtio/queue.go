package virtio

import (
	"errors"
	"fmt"
	"io"
)

// Split virtqueue layout and flags, virtio v1.2 §2.7.
const (
	descSize      = 16 // struct virtq_desc, §2.7.5
	usedElemSize  = 8  // struct virtq_used_elem, §2.7.8
	ringHeader    = 4  // le16 flags; le16 idx (§2.7.6, §2.7.8)
	descAlign     = 16 // §2.7 alignment table
	availAlign    = 2
	usedAlign     = 4
	MaxQueueSize  = 32768 // §2.7: Queue Size is at most 32768
	DescFNext     = 1     // VIRTQ_DESC_F_NEXT, §2.7.5
	DescFWrite    = 2     // VIRTQ_DESC_F_WRITE, §2.7.5
	DescFIndirect = 4     // VIRTQ_DESC_F_INDIRECT, §2.7.5.3

	// MaxChainBytes bounds the total length of the buffers of one chain so
	// a guest cannot make one request cost unbounded work (descriptors may
	// all alias the same guest memory). Longer chains are malformed.
	MaxChainBytes = 32 << 20

	// AvailFNoInterrupt is VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.6): the driver
	// asks not to be interrupted when buffers are used.
	AvailFNoInterrupt = 1
)

// ErrBadChain is wrapped by every error describing a malformed descriptor
// chain.
var ErrBadChain = errors.New("virtio: malformed descriptor chain")

// ErrBadQueue is wrapped by errors describing an unusable queue layout or a
// corrupt available ring.
var ErrBadQueue = errors.New("virtio: bad virtqueue")

// Queue is the device side of one split virtqueue. Its addresses and size
// are set by the transport from the driver's register writes; the device
// consumes chains with Pop and returns them with Push. A Queue is not safe
// for concurrent use: each device serialises access to its queues.
type Queue struct {
	mem     *Memory
	MaxSize uint16
	Size    uint16
	Ready   bool
	Desc    uint64 // descriptor table GPA
	Avail   uint64 // driver area GPA
	Used    uint64 // device area GPA

	indirect  bool        // VIRTIO_F_INDIRECT_DESC negotiated
	lastAvail uint16      // next avail ring slot to consume
	usedIdx   uint16      // next used ring slot to fill
	pushed    bool        // used entries added since the last interrupt decision
	valid     bool        // layout validated at activation
	broken    error       // set once the queue is found corrupt
	signal    func()      // raises the used-buffer interrupt
	fail      func(error) // reports a corrupt queue to the transport
}

// NewQueue returns an unconfigured queue over mem with the given maximum size.
func NewQueue(mem *Memory, maxSize uint16) *Queue {
	return &Queue{mem: mem, MaxSize: maxSize}
}

// Validate checks the driver-provided layout: size a power of 2 not above
// MaxSize (§2.7, §4.2.2 QueueNum), the three areas aligned (§2.7) and inside
// guest memory.
func (q *Queue) Validate() error {
	n := uint64(q.Size)
	if n == 0 || n&(n-1) != 0 || q.Size > q.MaxSize || n > MaxQueueSize {
		return fmt.Errorf("%w: size %d (max %d) is not a power of 2 within the maximum", ErrBadQueue, q.Size, q.MaxSize)
	}
	areas := []struct {
		name        string
		gpa, len, a uint64
	}{
		{"descriptor table", q.Desc, descSize * n, descAlign},
		{"available ring", q.Avail, ringHeader + 2*n + 2, availAlign},
		{"used ring", q.Used, ringHeader + usedElemSize*n + 2, usedAlign},
	}
	for _, a := range areas {
		if a.gpa%a.a != 0 {
			return fmt.Errorf("%w: %s at %#x not %d-byte aligned", ErrBadQueue, a.name, a.gpa, a.a)
		}
		if err := q.mem.check(a.gpa, a.len); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadQueue, a.name, err)
		}
	}
	return nil
}

// activate validates the queue and prepares it for use.
func (q *Queue) activate(indirect bool) error {
	if err := q.Validate(); err != nil {
		q.broken = err
		return err
	}
	q.indirect = indirect
	q.lastAvail, q.usedIdx, q.pushed, q.broken, q.valid = 0, 0, false, nil, true
	return nil
}

// setPositions puts an activated queue at ring positions saved from another
// device (a snapshot, state.go): lastAvail is the next available slot to
// consume, usedIdx the next used slot to fill. Guest memory must hold the
// rings as they were saved: used.idx (written only by the device, §2.7.8)
// equals usedIdx, and avail.idx is at most Queue Size ahead of lastAvail
// (§2.7.13). Nothing may be in flight: the device kept no record of chains
// popped but not used, so lastAvail must equal usedIdx.
func (q *Queue) setPositions(lastAvail, usedIdx uint16) error {
	if lastAvail != usedIdx {
		return fmt.Errorf("%w: last avail %d != used idx %d: chains in flight", ErrBadQueue, lastAvail, usedIdx)
	}
	v, err := q.mem.LoadU32Acquire(q.Used)
	if err != nil {
		return fmt.Errorf("%w: used ring: %v", ErrBadQueue, err)
	}
	if got := uint16(v >> 16); got != usedIdx {
		return fmt.Errorf("%w: used idx in guest memory is %d, the state says %d", ErrBadQueue, got, usedIdx)
	}
	_, idx, err := q.availHeader()
	if err != nil {
		return fmt.Errorf("%w: available ring: %v", ErrBadQueue, err)
	}
	if pending := idx - lastAvail; pending > q.Size {
		return fmt.Errorf("%w: avail idx %d is %d ahead of %d (size %d)", ErrBadQueue, idx, pending, lastAvail, q.Size)
	}
	q.lastAvail, q.usedIdx = lastAvail, usedIdx
	return nil
}

func (q *Queue) setBroken(err error) error {
	q.broken = err
	if q.fail != nil {
		q.fail(err)
	}
	return err
}

// Err reports why the queue stopped working, if it did.
func (q *Queue) Err() error { return q.broken }

func (q *Queue) availHeader() (flags, idx uint16, err error) {
	v, err := q.mem.LoadU32Acquire(q.Avail)
	if err != nil {
		return 0, 0, err
	}
	return uint16(v), uint16(v >> 16), nil
}

// Buffer is one guest buffer of a chain: a slice aliasing guest memory.
type Buffer []byte

// Chain is one descriptor chain taken from the available ring, split into
// its device-readable buffers followed by its device-writable buffers
// (§2.7.5: readable descriptors come first).
type Chain struct {
	Head     uint16
	Readable []Buffer
	Writable []Buffer
}

// ReadableLen is the total length of the readable buffers.
func (c *Chain) ReadableLen() uint64 { return totalLen(c.Readable) }

// WritableLen is the total length of the writable buffers.
func (c *Chain) WritableLen() uint64 { return totalLen(c.Writable) }

func totalLen(bs []Buffer) uint64 {
	var n uint64
	for _, b := range bs {
		n += uint64(len(b))
	}
	return n
}

// Reader returns an io.Reader over the readable buffers.
func (c *Chain) Reader() *ChainReader { return &ChainReader{bufs: c.Readable} }

// Writer returns an io.Writer over the writable buffers. It counts the bytes
// written, which is what Push reports to the driver.
func (c *Chain) Writer() *ChainWriter { return &ChainWriter{bufs: c.Writable} }

// ChainReader reads sequentially across a chain's readable buffers.
type ChainReader struct {
	bufs []Buffer
	off  int
}

// Read implements io.Reader; it returns io.EOF after the last buffer.
func (r *ChainReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.bufs) > 0 {
		c := copy(p[n:], r.bufs[0][r.off:])
		n += c
		r.off += c
		if r.off == len(r.bufs[0]) {
			r.bufs, r.off = r.bufs[1:], 0
		}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Remaining is the number of bytes not yet read.
func (r *ChainReader) Remaining() uint64 {
	if len(r.bufs) == 0 {
		return 0
	}
	return totalLen(r.bufs) - uint64(r.off)
}

// Next returns up to n bytes as a slice of guest memory from the current
// buffer (without copying) and advances past them.
func (r *ChainReader) Next(n int) []byte {
	for len(r.bufs) > 0 && r.off == len(r.bufs[0]) {
		r.bufs, r.off = r.bufs[1:], 0
	}
	if len(r.bufs) == 0 {
		return nil
	}
	b := r.bufs[0][r.off:]
	if len(b) > n {
		b = b[:n]
	}
	r.off += len(b)
	return b
}

// ChainWriter writes sequentially across a chain's writable buffers.
type ChainWriter struct {
	bufs []Buffer
	off  int
	n    uint64
}

// ErrShortBuffer is returned when a chain's writable space is exhausted.
var ErrShortBuffer = errors.New("virtio: descriptor chain too small")

// Write implements io.Writer; it writes what fits and returns ErrShortBuffer
// if p does not fit entirely.
func (w *ChainWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(w.bufs) > 0 {
		c := copy(w.bufs[0][w.off:], p[n:])
		n += c
		w.off += c
		if w.off == len(w.bufs[0]) {
			w.bufs, w.off = w.bufs[1:], 0
		}
	}
	w.n += uint64(n)
	if n < len(p) {
		return n, ErrShortBuffer
	}
	return n, nil
}

// Next returns up to n bytes of writable guest memory from the current
// buffer and counts them as written.
func (w *ChainWriter) Next(n int) []byte {
	for len(w.bufs) > 0 && w.off == len(w.bufs[0]) {
		w.bufs, w.off = w.bufs[1:], 0
	}
	if len(w.bufs) == 0 {
		return nil
	}
	b := w.bufs[0][w.off:]
	if len(b) > n {
		b = b[:n]
	}
	w.off += len(b)
	w.n += uint64(len(b))
	return b
}

// Written is the number of bytes written so far.
func (w *ChainWriter) Written() uint64 { return w.n }

// Remaining is the writable space left.
func (w *ChainWriter) Remaining() uint64 {
	if len(w.bufs) == 0 {
		return 0
	}
	return totalLen(w.bufs) - uint64(w.off)
}

type desc struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

func (q *Queue) readDesc(table uint64, i uint64) (desc, error) {
	b, err := q.mem.Slice(table+i*descSize, descSize)
	if err != nil {
		return desc{}, err
	}
	return desc{
		addr:  le64(b[0:]),
		len:   le32(b[8:]),
		flags: le16(b[12:]),
		next:  le16(b[14:]),
	}, nil
}

// HasAvailable reports whether the driver has made chains available that
// were not popped yet.
func (q *Queue) HasAvailable() bool {
	if !q.Ready || !q.valid || q.broken != nil {
		return false
	}
	_, idx, err := q.availHeader()
	return err == nil && idx != q.lastAvail
}

// Pop takes the next available descriptor chain. It returns (nil, nil) when
// the ring is empty. A malformed chain is returned to the driver at once as
// used with length 0 and reported as an error wrapping ErrBadChain; the
// caller may simply call Pop again. If the available ring itself is corrupt
// the queue stops (Err) and Pop returns an error wrapping ErrBadQueue.
func (q *Queue) Pop() (*Chain, error) {
	if !q.Ready || !q.valid || q.broken != nil {
		return nil, q.broken
	}
	_, idx, err := q.availHeader()
	if err != nil {
		return nil, q.setBroken(fmt.Errorf("%w: %v", ErrBadQueue, err))
	}
	if idx == q.lastAvail {
		return nil, nil
	}
	if pending := idx - q.lastAvail; pending > q.Size {
		// §2.7.13: the driver can have at most Queue Size chains
		// outstanding; anything else means a corrupt index.
		return nil, q.setBroken(fmt.Errorf("%w: avail idx %d is %d ahead of %d (size %d)", ErrBadQueue, idx, pending, q.lastAvail, q.Size))
	}
	slot := uint64(q.lastAvail % q.Size)
	head, err := q.mem.ReadU16(q.Avail + ringHeader + 2*slot)
	if err != nil {
		return nil, q.setBroken(fmt.Errorf("%w: %v", ErrBadQueue, err))
	}
	q.lastAvail++
	c, err := q.walk(head)
	if err != nil {
		if perr := q.Push(head, 0); perr != nil {
			return nil, perr
		}
		return nil, err
	}
	return c, nil
}

// walk follows the chain starting at head with every bound checked: indices
// below the table size, at most table-size descriptors (so a cycle ends),
// indirect tables inside memory, a multiple of 16 bytes, not nested and not
// combined with NEXT, every buffer inside guest memory, and no readable
// descriptor after a writable one.
func (q *Queue) walk(head uint16) (*Chain, error) {
	c := &Chain{Head: head}
	table, tableLen := q.Desc, uint64(q.Size)
	i := uint64(head)
	if i >= tableLen {
		return nil, fmt.Errorf("%w: head %d >= queue size %d", ErrBadChain, head, q.Size)
	}
	inIndirect := false
	count, total := uint64(0), uint64(0)
	for {
		count++
		if count > tableLen {
			return nil, fmt.Errorf("%w: chain longer than its table (%d), a loop?", ErrBadChain, tableLen)
		}
		d, err := q.readDesc(table, i)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadChain, err)
		}
		if d.flags&DescFIndirect != 0 {
			switch {
			case !q.indirect:
				return nil, fmt.Errorf("%w: INDIRECT without VIRTIO_F_INDIRECT_DESC", ErrBadChain)
			case inIndirect:
				return nil, fmt.Errorf("%w: nested indirect table", ErrBadChain)
			case d.flags&DescFNext != 0:
				return nil, fmt.Errorf("%w: INDIRECT combined with NEXT", ErrBadChain)
			case count != 1:
				// §2.7.5.3: the indirect descriptor is the only
				// one in the chain (no buffers before it either).
				return nil, fmt.Errorf("%w: INDIRECT after other descriptors", ErrBadChain)
			case d.len == 0 || d.len%descSize != 0:
				return nil, fmt.Errorf("%w: indirect table length %d", ErrBadChain, d.len)
			}
			if err := q.mem.check(d.addr, uint64(d.len)); err != nil {
				return nil, fmt.Errorf("%w: indirect table: %v", ErrBadChain, err)
			}
			table, tableLen = d.addr, uint64(d.len)/descSize
			if tableLen > 1<<16 {
				tableLen = 1 << 16 // next is 16 bits; the rest is unreachable
			}
			i, count, inIndirect = 0, 0, true
			continue
		}
		b, err := q.mem.Slice(d.addr, uint64(d.len))
		if err != nil {
			return nil, fmt.Errorf("%w: buffer: %v", ErrBadChain, err)
		}
		if total += uint64(d.len); total > MaxChainBytes {
			return nil, fmt.Errorf("%w: chain longer than %d bytes", ErrBadChain, MaxChainBytes)
		}
		if d.flags&DescFWrite != 0 {
			c.Writable = append(c.Writable, b)
		} else {
			if len(c.Writable) > 0 {
				return nil, fmt.Errorf("%w: readable descriptor after a writable one", ErrBadChain)
			}
			c.Readable = append(c.Readable, b)
		}
		if d.flags&DescFNext == 0 {
			return c, nil
		}
		i = uint64(d.next)
		if i >= tableLen {
			return nil, fmt.Errorf("%w: next %d >= table size %d", ErrBadChain, i, tableLen)
		}
	}
}

// Push returns the chain with the given head to the driver as used, with
// written bytes written into its writable buffers (§2.7.8). It publishes
// the new used index with a release store.
func (q *Queue) Push(head uint16, written uint32) error {
	if !q.Ready || !q.valid {
		return fmt.Errorf("%w: queue not activated", ErrBadQueue)
	}
	slot := uint64(q.usedIdx % q.Size)
	e := q.Used + ringHeader + usedElemSize*slot
	if err := q.mem.WriteU32(e, uint32(head)); err != nil {
		return err
	}
	if err := q.mem.WriteU32(e+4, written); err != nil {
		return err
	}
	q.usedIdx++
	// The device owns used.flags (we never set VIRTQ_USED_F_NO_NOTIFY) and
	// used.idx: publish both in one release store.
	if err := q.mem.StoreU32Release(q.Used, uint32(q.usedIdx)<<16); err != nil {
		return err
	}
	q.pushed = true
	return nil
}

// PushChain is Push(c.Head, written).
func (q *Queue) PushChain(c *Chain, written uint64) error {
	if written > 0xffffffff {
		written = 0xffffffff
	}
	return q.Push(c.Head, uint32(written))
}

// Interrupt raises the used-buffer interrupt if anything was pushed since the
// last call, unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7).
func (q *Queue) Interrupt() {
	if !q.pushed {
		return
	}
	q.pushed = false
	flags, _, err := q.availHeader()
	if err == nil && flags&AvailFNoInterrupt != 0 {
		return
	}
	if q.signal != nil {
		q.signal()
	}
}

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

// Next pops the next well-formed chain, skipping (and returning as used
// with length 0) malformed ones. It returns nil when the ring is empty or
// the queue is broken.
func (q *Queue) Next() *Chain {
	for {
		c, err := q.Pop()
		if c != nil {
			return c
		}
		if err == nil || q.broken != nil {
			return nil
		}
	}
}
