// vsock_guest_test.go owns guestVsock, the tests' stand-in for the guest's
// virtio_transport: it posts receive buffers as Linux does, sends packets
// on the tx queue, reads what the device put on the rx queue, and opens
// connections both ways through the hybrid socket.
package virtio

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

const testGuestCID = 3

// guestVsock plays the guest's virtio_transport on top of testDriver.
type guestVsock struct {
	t       *testing.T
	d       *testDriver
	v       *Vsock
	tr      *MMIO
	uds     string
	rx      map[uint16]chainBufs
	pending []usedElem
}

type rxPkt struct {
	h    VsockHeader
	data []byte
}

func newGuestVsock(t *testing.T, timeout time.Duration) *guestVsock {
	t.Helper()
	uds := filepath.Join(t.TempDir(), "v.sock")
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, v, err := NewVsockMMIO(mem, irq, VsockConfig{GuestCID: testGuestCID, UDS: uds, ConnectTimeout: timeout, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close(); v.Close() })
	d := newDriver(t, mem, tr, irq)
	var cfg [8]byte
	tr.Read(RegConfig, cfg[:])
	if cfg[0] != testGuestCID {
		t.Fatalf("guest_cid config %x", cfg)
	}
	d.negotiate(^uint64(0), 128)
	g := &guestVsock{t: t, d: d, v: v, tr: tr, uds: uds, rx: map[uint16]chainBufs{}}
	for i := 0; i < 32; i++ {
		g.postRx()
	}
	return g
}

// postRx posts one receive buffer the way Linux 6.1 does: a 44-byte
// header buffer and a 4 KiB payload buffer.
func (g *guestVsock) postRx() {
	c := g.d.post(vsockRxQ, false, wseg(VsockHeaderSize), wseg(4096))
	g.rx[c.head] = c
	g.d.kick(vsockRxQ)
}

func (g *guestVsock) hdr(op uint16, srcPort, dstPort uint32) VsockHeader {
	return VsockHeader{SrcCID: testGuestCID, DstCID: VsockHostCID, SrcPort: srcPort, DstPort: dstPort,
		Type: VsockTypeStream, Op: op, BufAlloc: 64 << 10}
}

// send transmits one packet on the tx queue.
func (g *guestVsock) send(h VsockHeader, payload []byte) {
	g.t.Helper()
	g.sendBatch(rxPkt{h: h, data: payload})
}

// sendBatch transmits packets with one kick: the device handles them all
// under one hold of its lock, before any of its goroutines can run, and
// checks that the device used each chain, in order, writing nothing.
func (g *guestVsock) sendBatch(pkts ...rxPkt) {
	g.t.Helper()
	var heads []uint16
	for _, p := range pkts {
		h := p.h
		h.Len = uint32(len(p.data))
		var b [VsockHeaderSize]byte
		h.Marshal(b[:])
		segs := []seg{rseg(b[:])}
		if len(p.data) > 0 {
			segs = append(segs, rseg(p.data))
		}
		heads = append(heads, g.d.post(vsockTxQ, false, segs...).head)
	}
	g.d.kick(vsockTxQ)
	u := g.d.takeUsed(vsockTxQ)
	if len(u) != len(heads) {
		g.t.Fatalf("tx used %v, want %d", u, len(heads))
	}
	for i, e := range u {
		if e.id != uint32(heads[i]) || e.len != 0 {
			g.t.Fatalf("tx used %v, want heads %v with nothing written", u, heads)
		}
	}
}

// recv returns the next packet the device put on the rx queue.
func (g *guestVsock) recv() rxPkt {
	g.t.Helper()
	if len(g.pending) == 0 {
		g.pending = g.d.waitUsed(vsockRxQ, 1, 5*time.Second)
	}
	u := g.pending[0]
	g.pending = g.pending[1:]
	c, ok := g.rx[uint16(u.id)]
	if !ok {
		g.t.Fatalf("used unknown rx head %d", u.id)
	}
	delete(g.rx, uint16(u.id))
	if u.len < VsockHeaderSize {
		g.t.Fatalf("rx used len %d", u.len)
	}
	h, err := ParseVsockHeader(g.d.bytesAt(c, 0, VsockHeaderSize))
	if err != nil {
		g.t.Fatal(err)
	}
	if u.len != VsockHeaderSize+h.Len {
		g.t.Fatalf("used len %d for payload %d", u.len, h.Len)
	}
	p := rxPkt{h: h}
	if h.Len > 0 {
		p.data = g.d.bytesAt(c, 1, int(h.Len))
	}
	g.postRx()
	return p
}

func (g *guestVsock) expect(op uint16) rxPkt {
	g.t.Helper()
	p := g.recv()
	if p.h.Op != op {
		g.t.Fatalf("got op %d (%+v), want %d", p.h.Op, p.h, op)
	}
	if p.h.SrcCID != VsockHostCID || p.h.DstCID != testGuestCID || p.h.Type != VsockTypeStream {
		g.t.Fatalf("bad header %+v", p.h)
	}
	return p
}

func (g *guestVsock) expectNothing() {
	g.t.Helper()
	time.Sleep(50 * time.Millisecond)
	if u := g.d.takeUsed(vsockRxQ); len(u) > 0 || len(g.pending) > 0 {
		g.t.Fatalf("unexpected rx packets %v", u)
	}
}

// hostConnect dials the hybrid socket and sends CONNECT; the guest side
// sees the REQUEST.
func (g *guestVsock) hostConnect(port uint32) (net.Conn, *bufio.Reader, rxPkt) {
	g.t.Helper()
	uc, err := net.Dial("unix", g.uds)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { uc.Close() })
	fmt.Fprintf(uc, "CONNECT %d\n", port)
	req := g.expect(VsockOpRequest)
	if req.h.DstPort != port || req.h.SrcPort < vsockFirstHostPort {
		g.t.Fatalf("REQUEST %+v", req.h)
	}
	return uc, bufio.NewReader(uc), req
}

func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if c, ok := r.(net.Conn); ok {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// guestConnect has guest port 40000 connect to host port 5000 and returns
// the host's end, once the device answered the guest.
func (g *guestVsock) guestConnect() net.Conn {
	g.t.Helper()
	ln, err := net.Listen("unix", g.uds+"_5000")
	if err != nil {
		g.t.Fatal(err)
	}
	defer ln.Close()
	g.send(g.hdr(VsockOpRequest, 40000, 5000), nil)
	uc, err := ln.Accept()
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { uc.Close() })
	if r := g.expect(VsockOpResponse); r.h.SrcPort != 5000 || r.h.DstPort != 40000 {
		g.t.Fatalf("RESPONSE %+v", r.h)
	}
	return uc
}
