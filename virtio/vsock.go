// This file owns the socket device (virtio v1.2 §5.10): its configuration,
// connections and their credit, the device interface, and the guest's
// packets on the tx queue and the host's on the rx queue. Packet headers are
// vsock_packet.go's, the host side of connections (unix sockets) is
// vsock_host.go's, pause and snapshot restore vsock_state.go's.

package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// VsockConfig configures a socket device.
type VsockConfig struct {
	// GuestCID is the guest's context ID (>= 3).
	GuestCID uint64
	// UDS is the path of the hybrid unix socket the device listens on for
	// host-initiated connections; guest-initiated connections to host
	// port P are dialled at UDS + "_" + P.
	UDS string
	// ConnectTimeout bounds the CONNECT line and the wait for the guest's
	// RESPONSE (default 5s).
	ConnectTimeout time.Duration
	// DialTimeout bounds dialling <UDS>_<port> (default 2s).
	DialTimeout time.Duration
	// Logf, if set, receives diagnostics.
	Logf func(format string, args ...any)
}

type connState int

const (
	stConnecting  connState = iota // host-initiated, REQUEST sent to guest
	stDialing                      // guest-initiated, dialling the host socket
	stEstablished                  // data flows
)

type connKey struct{ local, peer uint32 } // host port, guest port

type vconn struct {
	key   connKey
	state connState
	uc    net.Conn
	src   io.Reader // host data source (uc, or the bufio.Reader of the CONNECT line)
	cond  *sync.Cond
	timer *time.Timer

	closed bool
	// drain: closed by the guest's RST or the device going away while
	// guest data was still on its way to uc; writeLoop writes it (bounded
	// by vsockDrainTimeout) and then closes uc.
	drain bool

	// guest → host
	preamble    []byte // "OK <port>\n", written before any data
	txBuf       []byte // guest data not yet written to uc
	rxCnt       uint32 // bytes received from the guest
	fwdCnt      uint32 // bytes written to uc (fwd_cnt we advertise)
	lastFwdSent uint32 // fwd_cnt the guest last heard
	guestNoSend bool   // guest sent SHUTDOWN(SEND)
	guestNoRecv bool   // guest sent SHUTDOWN(RECEIVE)
	wroteEOF    bool   // CloseWrite done
	writing     bool   // writeLoop is writing, v.mu released

	// host → guest
	rdData        []byte // host data read, not yet delivered
	rdEOF         bool   // host sent EOF
	shutdownSent  bool
	txCnt         uint32 // bytes sent to the guest
	peerBufAlloc  uint32
	peerFwdCnt    uint32
	creditReqSent bool
	inReady       bool

	creditUpdQueued bool
}

func (c *vconn) peerCredit() uint32 {
	inflight := c.txCnt - c.peerFwdCnt
	if inflight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inflight
}

type ctrlPkt struct {
	c     *vconn // nil for replies to packets of unknown connections
	hdr   VsockHeader
	flags uint32
}

// Vsock is a userspace virtio socket device (§5.10) whose host side is a
// Firecracker-style hybrid unix socket: a host client connects to UDS,
// sends "CONNECT <port>\n", and once the guest accepted gets
// "OK <hostport>\n" followed by the stream; a guest connecting to CID 2
// port P is connected to the unix socket UDS_P.
type Vsock struct {
	base
	cfg VsockConfig
	ln  *net.UnixListener

	conns    map[connKey]*vconn
	ctrl     []ctrlPkt
	ready    []*vconn
	nextPort uint32
	closed   bool
	pending  map[net.Conn]bool // host connections still sending CONNECT
	wg       sync.WaitGroup

	// vsock_state.go: paused stops queue access from host goroutines;
	// after a restore resetPending is the transport reset event not yet
	// sent, and rxHeld keeps host packets back until the driver handled
	// it (releaseTimer bounds that wait).
	paused       bool
	resetPending bool
	rxHeld       bool
	releaseTimer *time.Timer
	restoredAt   time.Time // when the reset event was sent
}

// NewVsock creates the device and starts listening on cfg.UDS.
func NewVsock(cfg VsockConfig) (*Vsock, error) {
	if cfg.GuestCID < 3 || cfg.GuestCID > 0xffffffff-1 {
		return nil, fmt.Errorf("virtio-vsock: invalid guest CID %d", cfg.GuestCID)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.UDS == "" {
		return nil, errors.New("virtio-vsock: no unix socket path")
	}
	if fi, err := os.Lstat(cfg.UDS); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(cfg.UDS) // a stale socket from an earlier run
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.UDS, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("virtio-vsock: %w", err)
	}
	v := &Vsock{cfg: cfg, ln: ln, conns: map[connKey]*vconn{}, pending: map[net.Conn]bool{}, nextPort: firstHostPort()}
	v.wg.Add(1)
	go v.acceptLoop()
	return v, nil
}

// NewVsockMMIO creates a socket device behind an MMIO transport.
func NewVsockMMIO(mem *Memory, irq Interrupt, cfg VsockConfig) (*MMIO, *Vsock, error) {
	v, err := NewVsock(cfg)
	if err != nil {
		return nil, nil, err
	}
	return NewMMIO(v, mem, irq), v, nil
}

func (v *Vsock) logf(format string, args ...any) {
	if v.cfg.Logf != nil {
		v.cfg.Logf("virtio-vsock: "+format, args...)
	}
}

// Close stops listening, drops every connection and removes the socket.
func (v *Vsock) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	v.endRestore()
	v.dropAll()
	for uc := range v.pending {
		uc.Close()
	}
	v.mu.Unlock()
	err := v.ln.Close()
	v.wg.Wait()
	os.Remove(v.cfg.UDS)
	return err
}

func (v *Vsock) DeviceID() uint32 { return DeviceIDVsock }
func (v *Vsock) Features() uint64 { return VsockFStream }
func (v *Vsock) QueueMaxSizes() []uint16 {
	return []uint16{vsockQueueSize, vsockQueueSize, vsockQueueSize}
}

// ReadConfig exposes struct virtio_vsock_config { le64 guest_cid; }.
func (v *Vsock) ReadConfig(off uint64, data []byte) {
	var cfg [8]byte
	binary.LittleEndian.PutUint64(cfg[:], v.cfg.GuestCID)
	readConfigBytes(cfg[:], off, data)
}

func (v *Vsock) WriteConfig(off uint64, data []byte) {}

func (v *Vsock) Activate(qs []*Queue, f uint64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(qs) != 3 || qs[vsockRxQ] == nil || qs[vsockTxQ] == nil {
		return errors.New("virtio-vsock: rx and tx queues are required")
	}
	v.queues, v.features = qs, f
	v.activatedAfterRestore()
	v.processRx()
	return nil
}

// Reset drops every connection (without RST: the driver is gone) and the
// queues; the listener keeps running.
func (v *Vsock) Reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.endRestore()
	v.dropAll()
	v.queues, v.features = nil, 0
}

func (v *Vsock) dropAll() {
	for _, c := range v.conns {
		v.closeConn(c, false)
	}
	v.ctrl, v.ready = nil, nil
}

// TransportReset tells the guest that all connections are gone
// (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, §5.10.6 "Device Events"), as after a migration
// or snapshot restore, and drops them on our side. A restored device sends
// it by itself (vsock_state.go).
func (v *Vsock) TransportReset() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.paused {
		return errors.New("virtio-vsock: transport reset on a paused device")
	}
	return v.sendResetEvent(true)
}

// Notify handles tx (guest packets) and rx (new receive buffers).
func (v *Vsock) Notify(qi int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch qi {
	case vsockTxQ:
		v.processTx()
		v.processRx()
	case vsockRxQ:
		v.processRx()
	case vsockEvQ:
		v.eventNotified()
	}
}

// processTx consumes every packet the guest sent. Called with v.mu held.
func (v *Vsock) processTx() {
	q := v.queue(vsockTxQ)
	if q == nil || v.paused {
		return
	}
	defer q.Interrupt()
	var hb [VsockHeaderSize]byte
	for c := q.Next(); c != nil; c = q.Next() {
		r := c.Reader()
		n, _ := io.ReadFull(r, hb[:])
		if h, err := ParseVsockHeader(hb[:n]); err != nil {
			v.logf("dropping packet: %v", err)
		} else if uint64(h.Len) > r.Remaining() || h.Len > VsockMaxPayload {
			v.logf("dropping packet: len %d, %d bytes follow the header", h.Len, r.Remaining())
		} else {
			v.handlePacket(&h, r)
		}
		if q.Push(c.Head, 0) != nil {
			return
		}
	}
}

// reply queues a control packet answering h (ports swapped).
func (v *Vsock) reply(h *VsockHeader, op uint16) {
	if len(v.ctrl) >= vsockMaxCtrl {
		return // the guest is not reading its rx queue; best effort
	}
	v.ctrl = append(v.ctrl, ctrlPkt{hdr: VsockHeader{
		SrcCID: h.DstCID, DstCID: h.SrcCID, SrcPort: h.DstPort, DstPort: h.SrcPort,
		Type: VsockTypeStream, Op: op,
	}})
}

func (v *Vsock) send(c *vconn, op uint16, flags uint32) {
	if op == VsockOpCreditUpdate {
		if c.creditUpdQueued {
			return // one pending update carries the latest fwd_cnt anyway
		}
		c.creditUpdQueued = true
	}
	v.ctrl = append(v.ctrl, ctrlPkt{c: c, hdr: VsockHeader{Op: op}, flags: flags})
}

// handlePacket acts on one well-formed guest packet whose payload (h.Len
// bytes) is the rest of r. Called with v.mu held.
func (v *Vsock) handlePacket(h *VsockHeader, r *ChainReader) {
	if h.SrcCID != v.cfg.GuestCID {
		v.logf("dropping packet from CID %d", h.SrcCID)
		return
	}
	if h.DstCID != VsockHostCID || h.Type != VsockTypeStream {
		if h.Op != VsockOpRst {
			v.reply(h, VsockOpRst)
		}
		return
	}
	key := connKey{local: h.DstPort, peer: h.SrcPort}
	c := v.conns[key]
	if c == nil {
		switch h.Op {
		case VsockOpRequest:
			v.guestConnect(key, h)
		case VsockOpRst:
		default:
			v.reply(h, VsockOpRst)
		}
		return
	}
	// Every packet carries the peer's credit (§5.10.6 "Buffer Space Management").
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	if c.peerCredit() > 0 {
		c.creditReqSent = false
		if len(c.rdData) > 0 {
			v.markReady(c)
		}
	}
	switch h.Op {
	case VsockOpRequest:
		// A second REQUEST on a live connection: protocol error.
		v.closeConn(c, true)
	case VsockOpResponse:
		if c.state != stConnecting {
			v.closeConn(c, true)
			return
		}
		v.establish(c, []byte("OK "+strconv.FormatUint(uint64(c.key.local), 10)+"\n"))
	case VsockOpRst:
		v.closeConn(c, false)
	case VsockOpShutdown:
		if h.Flags&VsockShutdownRcv != 0 {
			c.guestNoRecv = true
			c.rdData = nil // the guest will not read it
			c.cond.Broadcast()
		}
		if h.Flags&VsockShutdownSend != 0 {
			c.guestNoSend = true
		}
		c.cond.Broadcast() // the writer finishes up (see writeLoop)
	case VsockOpRW:
		if c.state != stEstablished || c.guestNoSend {
			v.closeConn(c, true)
			return
		}
		if buffered := c.rxCnt - c.fwdCnt; h.Len > vsockBufAlloc-buffered {
			v.logf("port %d: guest exceeded its credit", key.local)
			v.closeConn(c, true)
			return
		}
		for n := int(h.Len); n > 0; {
			b := r.Next(n)
			if b == nil {
				break
			}
			c.txBuf = append(c.txBuf, b...)
			n -= len(b)
		}
		c.rxCnt += h.Len
		c.cond.Broadcast()
	case VsockOpCreditUpdate:
		// Credit already taken from the header.
	case VsockOpCreditRequest:
		v.send(c, VsockOpCreditUpdate, 0)
	default:
		v.closeConn(c, true)
	}
}

// guestConnect starts dialling UDS_<port> for a guest REQUEST.
func (v *Vsock) guestConnect(key connKey, h *VsockHeader) {
	if v.closed || len(v.conns) >= vsockMaxConns {
		v.reply(h, VsockOpRst)
		return
	}
	c := v.newConn(key, stDialing)
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	path := v.cfg.UDS + "_" + strconv.FormatUint(uint64(key.local), 10)
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		uc, err := net.DialTimeout("unix", path, v.cfg.DialTimeout)
		v.mu.Lock()
		defer v.mu.Unlock()
		if c.closed {
			if uc != nil {
				uc.Close()
			}
			return
		}
		if err != nil {
			v.logf("guest connect to port %d: %v", key.local, err)
			v.closeConn(c, true)
			v.processRx()
			return
		}
		c.uc, c.src = uc, uc
		v.send(c, VsockOpResponse, 0)
		v.establish(c, nil)
		v.processRx()
	}()
}

func (v *Vsock) newConn(key connKey, st connState) *vconn {
	c := &vconn{key: key, state: st}
	c.cond = sync.NewCond(&v.mu)
	v.conns[key] = c
	return c
}

// establish starts moving data on c. Called with v.mu held.
func (v *Vsock) establish(c *vconn, preamble []byte) {
	c.state = stEstablished
	c.preamble = preamble
	if c.timer != nil {
		c.timer.Stop()
	}
	v.wg.Add(2)
	go v.readLoop(c)
	go v.writeLoop(c)
}

// closeConn forgets c, closes its host socket and wakes its goroutines;
// with rst (an error) the guest is told with a RST and guest data not yet
// written to the host socket is dropped; without (the guest's RST, a
// device reset, Close) that data is still written first (drain). Called
// with v.mu held.
func (v *Vsock) closeConn(c *vconn, rst bool) {
	if c.closed {
		return
	}
	c.closed = true
	if v.conns[c.key] == c {
		delete(v.conns, c.key)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.rdData = nil
	if !rst && c.uc != nil && (c.writing || len(c.preamble) > 0 || len(c.txBuf) > 0) {
		// What the guest sent before it closed (or before the device went
		// away) still reaches the host: writeLoop finishes, then closes uc.
		c.drain = true
	} else {
		if c.uc != nil {
			c.uc.Close()
		}
		c.preamble, c.txBuf = nil, nil
	}
	c.cond.Broadcast()
	if rst && v.queues != nil && len(v.ctrl) < vsockMaxCtrl {
		v.ctrl = append(v.ctrl, ctrlPkt{hdr: VsockHeader{
			SrcCID: VsockHostCID, DstCID: v.cfg.GuestCID, SrcPort: c.key.local, DstPort: c.key.peer,
			Type: VsockTypeStream, Op: VsockOpRst,
		}})
	}
}

func (v *Vsock) markReady(c *vconn) {
	if !c.inReady && !c.closed {
		c.inReady = true
		v.ready = append(v.ready, c)
	}
}

// nextPacket decides the next packet for the rx queue: a control packet or
// data / end-of-stream of a ready connection. Called with v.mu held.
func (v *Vsock) nextPacket() (h VsockHeader, c *vconn, fromCtrl, ok bool) {
	for {
		for len(v.ctrl) > 0 {
			p := v.ctrl[0]
			if p.c == nil {
				return p.hdr, nil, true, true
			}
			if p.c.closed {
				v.ctrl = v.ctrl[1:]
				continue
			}
			return v.hdrFor(p.c, p.hdr.Op, p.flags), p.c, true, true
		}
		if len(v.ready) == 0 {
			return VsockHeader{}, nil, false, false
		}
		c := v.ready[0]
		switch {
		case c.closed:
		case len(c.rdData) > 0 && c.peerCredit() > 0:
			return v.hdrFor(c, VsockOpRW, 0), c, false, true
		case len(c.rdData) > 0:
			// Out of credit: ask once, wait for an update.
			if !c.creditReqSent {
				c.creditReqSent = true
				v.send(c, VsockOpCreditRequest, 0)
			}
		case c.rdEOF && !c.shutdownSent:
			return v.hdrFor(c, VsockOpShutdown, VsockShutdownSend), c, false, true
		}
		c.inReady = false
		v.ready = v.ready[1:]
	}
}

func (v *Vsock) hdrFor(c *vconn, op uint16, flags uint32) VsockHeader {
	return VsockHeader{
		SrcCID: VsockHostCID, DstCID: v.cfg.GuestCID,
		SrcPort: c.key.local, DstPort: c.key.peer,
		Type: VsockTypeStream, Op: op, Flags: flags,
		BufAlloc: vsockBufAlloc, FwdCnt: c.fwdCnt,
	}
}

// processRx fills the guest's receive buffers with pending packets and
// raises the interrupt. Nothing moves while the device is paused, or after
// a restore until the driver handled the transport reset. Called with v.mu
// held.
func (v *Vsock) processRx() {
	q := v.queue(vsockRxQ)
	if q == nil || v.paused || v.rxHeld {
		return
	}
	defer q.Interrupt()
	var hb [VsockHeaderSize]byte
	for {
		h, c, fromCtrl, ok := v.nextPacket()
		if !ok {
			return
		}
		ch := q.Next()
		if ch == nil {
			return
		}
		w := ch.Writer()
		if w.Remaining() < VsockHeaderSize || h.Op == VsockOpRW && w.Remaining() == VsockHeaderSize {
			// Unusable buffer: give it back empty, keep the packet.
			if q.Push(ch.Head, 0) != nil {
				return
			}
			continue
		}
		if h.Op == VsockOpRW {
			n := min(uint64(len(c.rdData)), uint64(c.peerCredit()), w.Remaining()-VsockHeaderSize, VsockMaxPayload)
			h.Len = uint32(n)
		}
		h.Marshal(hb[:])
		w.Write(hb[:])
		switch {
		case fromCtrl:
			v.ctrl = v.ctrl[1:]
			if c != nil && h.Op == VsockOpCreditUpdate {
				c.creditUpdQueued = false
			}
		case h.Op == VsockOpRW:
			w.Write(c.rdData[:h.Len])
			c.rdData = c.rdData[h.Len:]
			c.txCnt += h.Len
			if len(c.rdData) == 0 {
				c.cond.Broadcast() // the reader may read more
			}
		case h.Op == VsockOpShutdown:
			c.shutdownSent = true
		}
		if c != nil {
			c.lastFwdSent = c.fwdCnt
		}
		if q.Push(ch.Head, uint32(w.Written())) != nil {
			return
		}
	}
}
