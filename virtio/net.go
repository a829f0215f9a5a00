// This file owns the network device (virtio v1.2 §5.1): its feature
// negotiation, configuration space, the transmitq (guest frames written
// to the backend, one write per frame) and the receiveq (a goroutine
// reading frames from the backend into the guest's buffers, with
// back-pressure). The wire format (feature bits, virtio_net_hdr and its
// checks) is net_hdr.go's; opening and configuring a tap as the backend
// is net_tap.go's; slots (a device whose backend is attached later) and
// pausing are net_slot.go's.

package virtio

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// NetBackend carries Ethernet frames between the device and the host. Each
// Read returns one frame, each Write sends one; Close must make a blocked
// Read return (an *os.File over a non-blocking fd does). *Tap implements
// it; tests use a socketpair.
type NetBackend interface {
	io.ReadWriteCloser
	// VnetHdr reports whether every frame read or written is preceded by
	// a 12-byte virtio_net_hdr (a tap with IFF_VNET_HDR and
	// TUNSETVNETHDRSZ 12). Without it no offload is offered and frames
	// go through without a header.
	VnetHdr() bool
	// GuestOffloads is the subset of NetFGuestCsum|NetFGuestTSO4|
	// NetFGuestTSO6 the backend can deliver (what TUNSETOFFLOAD
	// accepted); the backend delivers all of them until told otherwise.
	GuestOffloads() uint64
	// SetGuestOffloads restricts what the backend delivers to the
	// offloads the driver negotiated.
	SetGuestOffloads(features uint64) error
}

// NetConfig configures a network device.
type NetConfig struct {
	// MAC is the guest's address (VIRTIO_NET_F_MAC); nil: a random
	// 52:54:00:xx:xx:xx. It must be a unicast address.
	MAC net.HardwareAddr
	// MTU is offered with VIRTIO_NET_F_MTU (NetMinMTU..65535); 0:
	// NetDefaultMTU. The host side of the backend should match it.
	MTU int
	// Logf, if set, receives diagnostics (each kind once).
	Logf func(format string, args ...any)
}

// NetStats are a network device's counters; bytes count frames without
// their virtio header. Dropped frames are counted once, not as packets.
type NetStats struct {
	RxPackets, RxBytes, RxDropped uint64 // host → guest
	TxPackets, TxBytes, TxDropped uint64 // guest → host
}

// Net is a userspace virtio network device (§5.1) with one receiveq and
// one transmitq over a NetBackend (a tap). A goroutine reads frames from
// the backend and waits, holding the frame, while the guest has no
// receive buffers; guest frames are written from Notify.
type Net struct {
	be      NetBackend // nil: a slot not attached yet (set under txMu and mu)
	vnet    bool
	slot    bool
	mac     [6]byte
	mtu     uint16
	offered uint64
	logf    func(format string, args ...any)
	logged  sync.Map // diagnostics already logged

	// mu guards the receive side and the device's lifecycle; txMu the
	// transmit side. Activate and Reset take txMu then mu.
	mu          sync.Mutex
	cond        *sync.Cond // rx buffers posted, activation, reset, Close
	rxq         *Queue
	features    uint64   // negotiated; written under both locks
	curOffloads uint64   // what the backend delivers now
	pending     []*Chain // rx chains taken for the frame being delivered
	pendingLen  uint64   // their writable bytes
	pendingFrom uint16   // the avail ring position of pending[0]
	closed      bool
	paused      bool // no frame is delivered (MMIO.Pause)

	txMu  sync.Mutex
	txq   *Queue
	txBuf []byte

	rxPackets, rxBytes, rxDropped atomic.Uint64
	txPackets, txBytes, txDropped atomic.Uint64
	wg                            sync.WaitGroup
}

// NewNet creates a network device over be and starts its receive
// goroutine. The device owns be: Close closes it.
func NewNet(be NetBackend, cfg NetConfig) (*Net, error) {
	d, err := newNet(cfg)
	if err != nil {
		return nil, err
	}
	d.be, d.vnet = be, be.VnetHdr()
	d.offered = NetFMAC | NetFMTU | NetFStatus | NetFMrgRxbuf
	if d.vnet {
		d.offered |= netHostOffloads
		g := be.GuestOffloads() & netGuestOffloads
		if g&NetFGuestCsum == 0 {
			g = 0 // §5.1.3.1: GUEST_TSO4/6 require GUEST_CSUM
		}
		d.offered |= g
		d.curOffloads = be.GuestOffloads() & netGuestOffloads
	}
	d.wg.Add(1)
	go d.rxLoop(be, d.vnet)
	return d, nil
}

// newNet checks cfg and returns a device without a backend.
func newNet(cfg NetConfig) (*Net, error) {
	d := &Net{logf: cfg.Logf}
	switch {
	case cfg.MAC == nil:
		d.mac = RandomMAC()
	case len(cfg.MAC) != 6:
		return nil, fmt.Errorf("virtio-net: MAC %v is not 6 bytes", cfg.MAC)
	case cfg.MAC[0]&1 != 0:
		return nil, fmt.Errorf("virtio-net: MAC %v is a multicast address", cfg.MAC)
	case [6]byte(cfg.MAC) == [6]byte{}:
		return nil, errors.New("virtio-net: MAC 00:00:00:00:00:00")
	default:
		d.mac = [6]byte(cfg.MAC)
	}
	switch mtu := cfg.MTU; {
	case mtu == 0:
		d.mtu = NetDefaultMTU
	case mtu < NetMinMTU || mtu > 0xffff:
		return nil, fmt.Errorf("virtio-net: MTU %d not in %d..65535", mtu, NetMinMTU)
	default:
		d.mtu = uint16(mtu)
	}
	d.cond = sync.NewCond(&d.mu)
	d.txBuf = make([]byte, NetHdrSize+NetMaxFrame)
	return d, nil
}

// NewNetMMIO creates a network device behind an MMIO transport.
func NewNetMMIO(mem *Memory, irq Interrupt, be NetBackend, cfg NetConfig) (*MMIO, *Net, error) {
	d, err := NewNet(be, cfg)
	if err != nil {
		return nil, nil, err
	}
	return NewMMIO(d, mem, irq), d, nil
}

// RandomMAC returns a random address in QEMU's 52:54:00 locally
// administered unicast range.
func RandomMAC() [6]byte {
	m := [6]byte{0x52, 0x54, 0x00}
	rand.Read(m[3:])
	return m
}

// MAC is the guest's address.
func (d *Net) MAC() net.HardwareAddr { return net.HardwareAddr(d.mac[:]) }

// MTU is the MTU offered to the guest.
func (d *Net) MTU() int { return int(d.mtu) }

// Stats returns the device's counters.
func (d *Net) Stats() NetStats {
	return NetStats{
		RxPackets: d.rxPackets.Load(), RxBytes: d.rxBytes.Load(), RxDropped: d.rxDropped.Load(),
		TxPackets: d.txPackets.Load(), TxBytes: d.txBytes.Load(), TxDropped: d.txDropped.Load(),
	}
}

// Close stops the receive goroutine and closes the backend (if any).
func (d *Net) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.cond.Broadcast()
	be := d.be
	d.mu.Unlock()
	var err error
	if be != nil {
		err = be.Close()
	}
	d.wg.Wait()
	return err
}

// logOnce logs a diagnostic the first time key comes up.
func (d *Net) logOnce(key, format string, args ...any) {
	if d.logf == nil {
		return
	}
	if _, dup := d.logged.LoadOrStore(key, true); !dup {
		d.logf("virtio-net: "+format, args...)
	}
}

func (d *Net) DeviceID() uint32        { return DeviceIDNet }
func (d *Net) Features() uint64        { return d.offered }
func (d *Net) QueueMaxSizes() []uint16 { return []uint16{netQueueSize, netQueueSize} }

// ReadConfig exposes struct virtio_net_config up to mtu (§5.1.4): the MAC,
// the link always up, one queue pair, the MTU.
func (d *Net) ReadConfig(off uint64, data []byte) {
	var cfg [netConfigSize]byte
	copy(cfg[netCfgMAC:], d.mac[:])
	binary.LittleEndian.PutUint16(cfg[netCfgStatus:], NetSLinkUp)
	binary.LittleEndian.PutUint16(cfg[netCfgMaxVQPairs:], 1)
	binary.LittleEndian.PutUint16(cfg[netCfgMTU:], d.mtu)
	readConfigBytes(cfg[:], off, data)
}

// WriteConfig ignores writes: the configuration space is read-only for a
// non-legacy driver (§5.1.4.2; changing the MAC needs CTRL_MAC_ADDR).
func (d *Net) WriteConfig(off uint64, data []byte) {}

// Activate takes the queues and tells the backend which offloads the
// driver accepts.
func (d *Net) Activate(qs []*Queue, f uint64) error {
	if len(qs) != 2 || qs[netRxQ] == nil || qs[netTxQ] == nil {
		return errors.New("virtio-net: receiveq1 and transmitq1 are required")
	}
	if f&FeatureVersion1 == 0 {
		return errors.New("virtio-net: VIRTIO_F_VERSION_1 not negotiated (no legacy interface)")
	}
	// §5.1.3.1 "Feature bit requirements".
	for _, dep := range []struct{ f, needs uint64 }{
		{NetFGuestTSO4, NetFGuestCsum}, {NetFGuestTSO6, NetFGuestCsum},
		{NetFHostTSO4, NetFCsum}, {NetFHostTSO6, NetFCsum},
	} {
		if f&dep.f != 0 && f&dep.needs == 0 {
			return fmt.Errorf("virtio-net: feature %#x negotiated without %#x it requires (§5.1.3.1)", dep.f, dep.needs)
		}
	}
	d.txMu.Lock()
	defer d.txMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.backendTakes(d.be, f); err != nil {
		return err
	}
	d.narrowOffloads(f)
	d.rxq, d.txq, d.features = qs[netRxQ], qs[netTxQ], f
	d.pending, d.pendingLen = nil, 0
	d.cond.Broadcast()
	return nil
}

// narrowOffloads tells the backend which offloads the driver accepted (f
// are the negotiated features). Called with txMu and mu held.
func (d *Net) narrowOffloads(f uint64) {
	if want := f & netGuestOffloads; d.be != nil && d.vnet && want != d.curOffloads {
		if err := d.be.SetGuestOffloads(want); err != nil {
			// A jailed VMM cannot ioctl: received frames are fixed
			// up in software (fixRxHdr), TSO ones dropped.
			d.logOnce("offload", "backend offloads stay %#x, driver accepts %#x (%v): completing checksums in software, dropping TSO frames", d.curOffloads, want, err)
		} else {
			d.curOffloads = want
		}
	}
}

// Reset forgets the queues; a frame the receive goroutine holds waits for
// the next activation.
func (d *Net) Reset() {
	d.txMu.Lock()
	defer d.txMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rxq, d.txq, d.features = nil, nil, 0
	d.pending, d.pendingLen = nil, 0
	d.cond.Broadcast()
}

// Notify transmits the guest's frames (transmitq) or wakes the receive
// goroutine (new receive buffers).
func (d *Net) Notify(qi int) {
	switch qi {
	case netRxQ:
		d.mu.Lock()
		d.cond.Broadcast()
		d.mu.Unlock()
	case netTxQ:
		d.processTx()
	}
}

// processTx writes every frame on the transmitq to the backend and returns
// the chains as used with length 0 (§5.1.6.2: the device only reads them).
func (d *Net) processTx() {
	d.txMu.Lock()
	defer d.txMu.Unlock()
	q := d.txq
	if q == nil || d.paused {
		return
	}
	defer q.Interrupt()
	for c := q.Next(); c != nil; c = q.Next() {
		if d.be == nil {
			d.txDropped.Add(1) // a slot without a backend yet
		} else if n, ok := d.transmit(c); ok {
			d.txPackets.Add(1)
			d.txBytes.Add(uint64(n))
		} else {
			d.txDropped.Add(1)
		}
		if q.Push(c.Head, 0) != nil {
			return
		}
	}
}

// transmit sends one chain's frame (§5.1.6.2 "Packet Transmission") and
// returns its length without the header. The chain is copied first, then
// checked: the guest may change its buffers meanwhile. Called with txMu
// held.
func (d *Net) transmit(c *Chain) (int, bool) {
	n := c.ReadableLen()
	if n < NetHdrSize+ethHdrLen || n > NetHdrSize+NetMaxFrame {
		d.logOnce("txlen", "dropping a %d-byte transmit chain (header %d, frame %d..%d)", n, NetHdrSize, ethHdrLen, NetMaxFrame)
		return 0, false
	}
	buf := d.txBuf[:n]
	if _, err := io.ReadFull(c.Reader(), buf); err != nil {
		return 0, false
	}
	h, _ := ParseNetHdr(buf)
	frame := len(buf) - NetHdrSize
	if err := checkTxHdr(&h, d.features, frame); err != nil {
		d.logOnce("txhdr:"+err.Error(), "dropping a frame: %v", err)
		return 0, false
	}
	out := buf[NetHdrSize:]
	if d.vnet {
		h.NumBuffers = 0 // unused on transmit
		h.Marshal(buf)
		out = buf
	}
	if _, err := d.be.Write(out); err != nil {
		d.logOnce("txwrite", "writing to the backend: %v", err)
		return 0, false
	}
	return frame, true
}

// rxLoop reads frames from the backend be and delivers them, waiting
// while the driver has no buffers (or no driver is active, or the device
// is paused) until Close.
func (d *Net) rxLoop(be NetBackend, vnet bool) {
	defer d.wg.Done()
	buf := make([]byte, NetHdrSize+NetMaxFrame+1) // +1: detects oversize frames
	for {
		var n int
		var err error
		if vnet {
			n, err = be.Read(buf)
		} else {
			clear(buf[:NetHdrSize])
			n, err = be.Read(buf[NetHdrSize:])
			n += NetHdrSize
		}
		if err != nil {
			d.mu.Lock()
			closed := d.closed
			d.mu.Unlock()
			if !closed {
				d.logOnce("rxread", "reading from the backend: %v; receiving stops", err)
			}
			return
		}
		if n < NetHdrSize+ethHdrLen || n > NetHdrSize+NetMaxFrame {
			d.rxDropped.Add(1)
			d.logOnce("rxlen", "dropping a %d-byte frame from the backend", n-NetHdrSize)
			continue
		}
		d.mu.Lock()
		for !d.closed && !d.deliver(buf[:n]) {
			d.cond.Wait()
		}
		closed := d.closed
		d.mu.Unlock()
		if closed {
			return
		}
	}
}

// deliver puts pkt (virtio header and frame) into the receiveq (§5.1.6.4
// "Processing of Incoming Packets"). It returns false when it must wait
// for buffers or an active driver, true once the frame is delivered or
// dropped. Chains taken for a frame are kept across waits. Called with
// d.mu held.
func (d *Net) deliver(pkt []byte) bool {
	q := d.rxq
	if q == nil || d.paused {
		return false
	}
	defer q.Interrupt()
	if !fixRxHdr(pkt, d.features) {
		d.rxDropped.Add(1)
		return true
	}
	mrg := d.features&NetFMrgRxbuf != 0
	need := uint64(len(pkt))
	for {
		if !mrg && len(d.pending) == 1 {
			if d.pendingLen < need {
				// §5.1.6.3.1: without MRG_RXBUF the frame must fit
				// one chain. Drop it; the chain waits for a smaller one.
				d.rxDropped.Add(1)
				d.logOnce("rxsmall", "dropping a %d-byte frame: receive buffer of %d bytes (no MRG_RXBUF)", need, d.pendingLen)
				return true
			}
			d.fill(q, pkt)
			return true
		}
		if mrg && len(d.pending) > 0 && d.pendingLen >= need {
			d.fill(q, pkt)
			return true
		}
		if len(d.pending) >= int(q.Size) {
			// Every buffer the driver can post is taken and the frame
			// still does not fit: it never will.
			d.rxDropped.Add(1)
			d.logOnce("rxtiny", "dropping a %d-byte frame: the whole receiveq holds %d bytes", need, d.pendingLen)
			return true
		}
		c := q.Next()
		if c == nil {
			return false
		}
		w := c.WritableLen()
		if w == 0 || len(d.pending) == 0 && w < NetHdrSize {
			// No room for the header (§5.1.6.3.1: at least the
			// header must fit the first buffer): malformed.
			if q.Push(c.Head, 0) != nil {
				return false
			}
			continue
		}
		if len(d.pending) == 0 {
			d.pendingFrom = q.lastAvail - 1 // c's slot: Next just consumed it
		}
		d.pending = append(d.pending, c)
		d.pendingLen += w
	}
}

// fill writes pkt across the pending chains, sets num_buffers to their
// count (§5.1.6.4: 1 without MRG_RXBUF) and returns them as used.
func (d *Net) fill(q *Queue, pkt []byte) {
	binary.LittleEndian.PutUint16(pkt[10:], uint16(len(d.pending)))
	rest := pkt
	for _, c := range d.pending {
		w := c.Writer()
		n, _ := w.Write(rest)
		rest = rest[n:]
		if q.Push(c.Head, uint32(n)) != nil {
			break
		}
	}
	d.pending, d.pendingLen = nil, 0
	d.rxPackets.Add(1)
	d.rxBytes.Add(uint64(len(pkt) - NetHdrSize))
}
