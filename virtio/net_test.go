// This file tests the network device: feature negotiation, configuration
// space, transmit and receive through the test driver over a socketpair
// backend (back-pressure, malformed and oversize chains, the software
// offload fallback). Real taps are net_tap_test.go's.

package virtio

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pipeBackend is a NetBackend over one end of a SOCK_SEQPACKET socketpair
// (one message per frame); the test holds the other end as the host.
type pipeBackend struct {
	*os.File
	vnet     bool
	offloads uint64
	setErr   error
	mu       sync.Mutex
	sets     []uint64 // SetGuestOffloads calls
}

func (p *pipeBackend) VnetHdr() bool         { return p.vnet }
func (p *pipeBackend) GuestOffloads() uint64 { return p.offloads }
func (p *pipeBackend) SetGuestOffloads(f uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sets = append(p.sets, f)
	return p.setErr
}

func newPipeBackend(t testing.TB, vnet bool, offloads uint64) (*pipeBackend, *os.File) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	host := os.NewFile(uintptr(fds[1]), "host")
	t.Cleanup(func() { host.Close() })
	return &pipeBackend{File: os.NewFile(uintptr(fds[0]), "device"), vnet: vnet, offloads: offloads}, host
}

const allNetFeatures = ^uint64(0)

type netEnv struct {
	t    *testing.T
	dev  *Net
	tr   *MMIO
	be   *pipeBackend
	host *os.File
	d    *testDriver
}

// newNetEnv makes a device over a socketpair and negotiates the features
// in accept (queue size 16).
func newNetEnv(t *testing.T, vnet bool, offloads, accept uint64, setErr error) *netEnv {
	be, host := newPipeBackend(t, vnet, offloads)
	be.setErr = setErr
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, dev, err := NewNetMMIO(mem, irq, be, NetConfig{MAC: net.HardwareAddr{0x52, 0x54, 0, 1, 2, 3}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close(); dev.Close() })
	d := newDriver(t, mem, tr, irq)
	d.negotiate(accept, 16)
	return &netEnv{t: t, dev: dev, tr: tr, be: be, host: host, d: d}
}

// hostRead reads the next frame the device wrote to the backend.
func (e *netEnv) hostRead() []byte {
	e.t.Helper()
	buf := make([]byte, NetHdrSize+NetMaxFrame+16)
	e.host.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := e.host.Read(buf)
	if err != nil {
		e.t.Fatalf("host read: %v", err)
	}
	return buf[:n]
}

func (e *netEnv) hostWrite(b []byte) {
	e.t.Helper()
	if _, err := e.host.Write(b); err != nil {
		e.t.Fatalf("host write: %v", err)
	}
}

// ethFrame is an n-byte Ethernet frame with a recognisable payload.
func ethFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0x52, 0x54, 0, 1, 2, 3, 0x52, 0x54, 0, 9, 9, 9, 0x88, 0xb5})
	for i := ethHdrLen; i < n; i++ {
		f[i] = seed + byte(i)
	}
	return f
}

func hdrBytes(h NetHdr) []byte {
	b := make([]byte, NetHdrSize)
	h.Marshal(b)
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestNetFeatures(t *testing.T) {
	const base = NetFMAC | NetFMTU | NetFStatus | NetFMrgRxbuf
	for _, c := range []struct {
		name     string
		vnet     bool
		offloads uint64
		accept   uint64
		want     uint64   // offered by the device
		wantSets []uint64 // SetGuestOffloads calls at activation
	}{
		{"tap with every offload", true, netGuestOffloads, allNetFeatures, base | netHostOffloads | netGuestOffloads, nil},
		{"tap with checksum only", true, NetFGuestCsum, allNetFeatures, base | netHostOffloads | NetFGuestCsum, nil},
		{"TSO without checksum is not offered", true, NetFGuestTSO4, allNetFeatures, base | netHostOffloads, []uint64{0}},
		{"no vnet header: no offload", false, netGuestOffloads, allNetFeatures, base, nil},
		{"driver declines TSOv6", true, netGuestOffloads, allNetFeatures &^ NetFGuestTSO6, base | netHostOffloads | netGuestOffloads, []uint64{NetFGuestCsum | NetFGuestTSO4}},
		{"driver declines guest offloads", true, netGuestOffloads, allNetFeatures &^ netGuestOffloads, base | netHostOffloads | netGuestOffloads, []uint64{0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newNetEnv(t, c.vnet, c.offloads, c.accept, nil)
			if got := e.dev.Features(); got != c.want {
				t.Errorf("offered %#x, want %#x", got, c.want)
			}
			e.d.wr(RegDeviceFeaturesSel, 1)
			if e.d.rd(RegDeviceFeatures)&1 == 0 {
				t.Error("VIRTIO_F_VERSION_1 not offered")
			}
			if e.dev.features != c.want&c.accept|FeatureVersion1|FeatureIndirectDesc {
				t.Errorf("negotiated %#x", e.dev.features)
			}
			if len(e.be.sets) != len(c.wantSets) || len(c.wantSets) > 0 && e.be.sets[0] != c.wantSets[0] {
				t.Errorf("SetGuestOffloads calls %#x, want %#x", e.be.sets, c.wantSets)
			}
		})
	}
	// Activation refuses what a driver must not negotiate.
	be, _ := newPipeBackend(t, true, netGuestOffloads)
	dev, err := NewNet(be, NetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	mem := newTestMemory()
	qs := []*Queue{NewQueue(mem, 16), NewQueue(mem, 16)}
	for _, c := range []struct {
		name string
		qs   []*Queue
		f    uint64
	}{
		{"legacy (no VERSION_1)", qs, NetFMAC},
		{"HOST_TSO4 without CSUM", qs, FeatureVersion1 | NetFHostTSO4},
		{"GUEST_TSO6 without GUEST_CSUM", qs, FeatureVersion1 | NetFGuestTSO6},
		{"no transmitq", []*Queue{qs[0], nil}, FeatureVersion1},
	} {
		if err := dev.Activate(c.qs, c.f); err == nil {
			t.Errorf("%s: activated", c.name)
		}
	}
}

func TestNetConfig(t *testing.T) {
	e := newNetEnv(t, true, 0, allNetFeatures, nil)
	var cfg [16]byte
	for i := range cfg {
		e.tr.Read(RegConfig+uint64(i), cfg[i:i+1])
	}
	want := []byte{0x52, 0x54, 0, 1, 2, 3, NetSLinkUp, 0, 1, 0, 1500 & 0xff, 1500 >> 8, 0, 0, 0, 0}
	if !bytes.Equal(cfg[:], want) {
		t.Errorf("config % x, want % x", cfg, want)
	}
	var w [4]byte
	e.tr.Read(RegConfig+8, w[:])
	if got := binary.LittleEndian.Uint32(w[:]); got != 1|1500<<16 {
		t.Errorf("32-bit read of max_virtqueue_pairs+mtu: %#x", got)
	}
	e.tr.Write(RegConfig, []byte{1, 2, 3, 4, 5, 6}) // ignored
	if e.tr.Read(RegConfig, w[:]); w[0] != 0x52 {
		t.Error("MAC writable")
	}
	be, _ := newPipeBackend(t, true, 0)
	for _, c := range []NetConfig{
		{MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}, {MAC: net.HardwareAddr{0x52, 0, 0, 0, 0}},
		{MAC: make(net.HardwareAddr, 6)}, {MTU: 67}, {MTU: 65536}, {MTU: -1},
	} {
		if d, err := NewNet(be, c); err == nil {
			d.Close()
			t.Errorf("NewNet(%+v) accepted", c)
		}
	}
	d, err := NewNet(be, NetConfig{MTU: 9000})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if m := d.MAC(); m[0] != 0x52 || m[1] != 0x54 || m[2] != 0 || d.MTU() != 9000 {
		t.Errorf("MAC %v MTU %d", m, d.MTU())
	}
}

func TestNetTx(t *testing.T) {
	frame := ethFrame(100, 1)
	plain := hdrBytes(NetHdr{})
	csum := NetHdr{Flags: NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}
	tso := NetHdr{Flags: NetHdrFNeedsCsum, GSOType: NetHdrGSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	withType := func(h NetHdr, gso uint8) NetHdr { h.GSOType = gso; return h }
	big := ethFrame(NetMaxFrame, 2)
	for _, c := range []struct {
		name     string
		vnet     bool
		accept   uint64
		indirect bool
		segs     []seg
		want     []byte // what the host reads; nil: dropped
	}{
		{"header and frame", true, allNetFeatures, false, []seg{rseg(cat(plain, frame))}, cat(plain, frame)},
		{"separate descriptors", true, allNetFeatures, false, []seg{rseg(plain), rseg(frame[:50]), rseg(frame[50:])}, cat(plain, frame)},
		{"indirect, header split", true, allNetFeatures, true, []seg{rseg(plain[:5]), rseg(cat(plain[5:], frame))}, cat(plain, frame)},
		{"no vnet header on the backend", false, allNetFeatures, false, []seg{rseg(cat(plain, frame))}, frame},
		{"partial checksum", true, allNetFeatures, false, []seg{rseg(cat(hdrBytes(csum), frame))}, cat(hdrBytes(csum), frame)},
		{"DATA_VALID and num_buffers cleared", true, allNetFeatures, false,
			[]seg{rseg(cat(hdrBytes(NetHdr{Flags: NetHdrFDataValid | NetHdrFRscInfo, NumBuffers: 7}), frame))}, cat(plain, frame)},
		{"TSOv4", true, allNetFeatures, false, []seg{rseg(cat(hdrBytes(tso), frame))}, cat(hdrBytes(tso), frame)},
		{"TSOv6", true, allNetFeatures, false, []seg{rseg(cat(hdrBytes(withType(tso, NetHdrGSOTCPv6)), frame))}, cat(hdrBytes(withType(tso, NetHdrGSOTCPv6)), frame)},
		{"largest frame", true, allNetFeatures, false, []seg{rseg(plain), rseg(big)}, cat(plain, big)},
		{"NEEDS_CSUM without CSUM", true, allNetFeatures &^ (NetFCsum | NetFHostTSO4 | NetFHostTSO6), false, []seg{rseg(cat(hdrBytes(csum), frame))}, nil},
		{"NEEDS_CSUM without vnet header", false, allNetFeatures, false, []seg{rseg(cat(hdrBytes(csum), frame))}, nil},
		{"checksum outside the frame", true, allNetFeatures, false, []seg{rseg(cat(hdrBytes(NetHdr{Flags: NetHdrFNeedsCsum, CsumStart: 99}), frame))}, nil},
		{"TSOv4 not negotiated", true, allNetFeatures &^ NetFHostTSO4, false, []seg{rseg(cat(hdrBytes(tso), frame))}, nil},
		{"UFO", true, allNetFeatures, false, []seg{rseg(cat(hdrBytes(withType(tso, NetHdrGSOUDP)), frame))}, nil},
		{"TSO with ECN", true, allNetFeatures, false, []seg{rseg(cat(hdrBytes(withType(tso, NetHdrGSOTCPv4|NetHdrGSOECN)), frame))}, nil},
		{"TSO without gso_size", true, allNetFeatures, false, []seg{rseg(cat(hdrBytes(NetHdr{Flags: 1, GSOType: 1, CsumStart: 34, CsumOffset: 16}), frame))}, nil},
		{"shorter than the header", true, allNetFeatures, false, []seg{rseg(plain[:8])}, nil},
		{"header only", true, allNetFeatures, false, []seg{rseg(plain)}, nil},
		{"runt frame", true, allNetFeatures, false, []seg{rseg(cat(plain, frame[:13]))}, nil},
		{"oversize frame", true, allNetFeatures, false, []seg{rseg(plain), rseg(big), rstr("x")}, nil},
		{"writable only", true, allNetFeatures, false, []seg{wseg(200)}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newNetEnv(t, c.vnet, netGuestOffloads, c.accept, nil)
			ch := e.d.post(netTxQ, c.indirect, c.segs...)
			e.d.kick(netTxQ)
			if u := e.d.takeUsed(netTxQ); len(u) != 1 || u[0].id != uint32(ch.head) || u[0].len != 0 {
				t.Fatalf("used %v, want head %d len 0", u, ch.head)
			}
			if e.d.irq.n.Load() != 1 {
				t.Errorf("%d interrupts", e.d.irq.n.Load())
			}
			// A good frame after it: the host must read c.want, then it.
			sentinel := cat(plain, ethFrame(60, 9))
			e.d.post(netTxQ, false, rseg(sentinel))
			e.d.kick(netTxQ)
			if c.want != nil {
				if got := e.hostRead(); !bytes.Equal(got, c.want) {
					t.Fatalf("host got %d bytes % x..., want %d bytes % x...", len(got), got[:min(len(got), 24)], len(c.want), c.want[:24])
				}
			}
			want := sentinel
			if !c.vnet {
				want = sentinel[NetHdrSize:]
			}
			if got := e.hostRead(); !bytes.Equal(got, want) {
				t.Fatalf("host got % x, want the sentinel", got[:min(len(got), 24)])
			}
			st := e.dev.Stats()
			wantSt := NetStats{TxPackets: 1, TxBytes: 60, TxDropped: 1}
			if c.want != nil {
				frameLen := len(c.want)
				if c.vnet {
					frameLen -= NetHdrSize
				}
				wantSt = NetStats{TxPackets: 2, TxBytes: 60 + uint64(frameLen)}
			}
			if st != wantSt {
				t.Errorf("stats %+v, want %+v", st, wantSt)
			}
		})
	}
}

// rxFrame is what one received frame looked like in guest memory.
type rxFrame struct {
	hdr   NetHdr
	frame []byte
	lens  []uint32 // used lengths of its chains
}

// recvFrames collects at least n frames from the receiveq (every frame
// whose chains are used), following num_buffers across chains; bufs maps
// posted heads to their buffers.
func (e *netEnv) recvFrames(n int, bufs map[uint16]chainBufs) []rxFrame {
	e.t.Helper()
	var out []rxFrame
	var used []usedElem
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n || len(used) > 0 {
		used = append(used, e.d.takeUsed(netRxQ)...)
		if len(used) == 0 {
			if time.Now().After(deadline) {
				e.t.Fatalf("%d frames received, want %d", len(out), n)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		var data []byte
		var lens []uint32
		read := func(u usedElem) {
			cb := bufs[uint16(u.id)]
			left := int(u.len)
			for i, s := range cb.segs {
				k := min(left, s.size())
				data = append(data, e.d.bytesAt(cb, i, k)...)
				left -= k
			}
			lens = append(lens, u.len)
		}
		read(used[0])
		h, err := ParseNetHdr(data)
		if err != nil { // a chain returned empty
			used = used[1:]
			out = append(out, rxFrame{lens: lens})
			continue
		}
		for len(used) < int(h.NumBuffers) && time.Now().Before(deadline) {
			used = append(used, e.d.takeUsed(netRxQ)...)
		}
		if len(used) < int(h.NumBuffers) || h.NumBuffers == 0 {
			e.t.Fatalf("num_buffers %d, %d used", h.NumBuffers, len(used))
		}
		for _, u := range used[1:h.NumBuffers] {
			read(u)
		}
		used = used[h.NumBuffers:]
		out = append(out, rxFrame{hdr: h, frame: data[NetHdrSize:], lens: lens})
	}
	return out
}

func TestNetRx(t *testing.T) {
	small, mtu := ethFrame(60, 3), ethFrame(1514, 4)
	plain := hdrBytes(NetHdr{})
	one := func(f []byte) []byte { return cat(plain, f) }
	csumFrame := ethFrame(80, 5)
	csumFrame[34+6], csumFrame[34+7] = 0x12, 0x34 // pseudo-header sum
	fixed := append([]byte(nil), csumFrame...)
	completeChecksum(fixed, 34, 6)
	for _, c := range []struct {
		name   string
		vnet   bool
		accept uint64
		setErr error
		posts  [][]seg    // chains posted before the frames are written
		frames [][]byte   // written by the host (with header when vnet)
		want   [][]byte   // frames the guest gets (nil: a chain returned empty)
		hdrs   []NetHdr   // their headers (zero: NumBuffers only checked)
		lens   [][]uint32 // used lengths, when checked
		drops  uint64
	}{
		{name: "one frame", vnet: true, accept: allNetFeatures, posts: [][]seg{{wseg(2048)}},
			frames: [][]byte{one(mtu)}, want: [][]byte{mtu}, lens: [][]uint32{{1526}}},
		{name: "merged over three chains", vnet: true, accept: allNetFeatures, posts: [][]seg{{wseg(600)}, {wseg(600)}, {wseg(600)}},
			frames: [][]byte{one(mtu)}, want: [][]byte{mtu}, lens: [][]uint32{{600, 600, 326}}},
		{name: "two frames, two chains", vnet: true, accept: allNetFeatures, posts: [][]seg{{wseg(2048)}, {wseg(100)}},
			frames: [][]byte{one(small), one(small)}, want: [][]byte{small, small}},
		{name: "no MRG_RXBUF: one chain of descriptors", vnet: true, accept: allNetFeatures &^ NetFMrgRxbuf, posts: [][]seg{{wseg(NetHdrSize), wseg(1000), wseg(1000)}},
			frames: [][]byte{one(mtu)}, want: [][]byte{mtu}},
		{name: "no MRG_RXBUF: frame too big for the chain is dropped", vnet: true, accept: allNetFeatures &^ NetFMrgRxbuf, posts: [][]seg{{wseg(100)}},
			frames: [][]byte{one(mtu), one(small)}, want: [][]byte{small}, drops: 1},
		{name: "first chain smaller than the header", vnet: true, accept: allNetFeatures, posts: [][]seg{{wseg(8)}, {wseg(2048)}},
			frames: [][]byte{one(small)}, want: [][]byte{nil, small}},
		{name: "readable chain returned empty", vnet: true, accept: allNetFeatures, posts: [][]seg{{rstr("ro")}, {wseg(2048)}},
			frames: [][]byte{one(small)}, want: [][]byte{nil, small}},
		{name: "no vnet header on the backend", vnet: false, accept: allNetFeatures, posts: [][]seg{{wseg(2048)}},
			frames: [][]byte{small}, want: [][]byte{small}},
		{name: "oversize and runt frames dropped", vnet: true, accept: allNetFeatures, posts: [][]seg{{wseg(2048)}},
			frames: [][]byte{one(ethFrame(NetMaxFrame+1, 0)), one(small[:13]), plain[:5], one(small)}, want: [][]byte{small}, drops: 3},
		{name: "partial checksum passed to a GUEST_CSUM driver", vnet: true, accept: allNetFeatures, posts: [][]seg{{wseg(2048)}},
			frames: [][]byte{cat(hdrBytes(NetHdr{Flags: NetHdrFNeedsCsum | NetHdrFRscInfo, CsumStart: 34, CsumOffset: 6}), csumFrame)},
			want:   [][]byte{csumFrame}, hdrs: []NetHdr{{Flags: NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6, NumBuffers: 1}}},
		{name: "checksum completed when the backend keeps offloads", vnet: true, accept: allNetFeatures &^ netGuestOffloads, setErr: unix.ENOTTY,
			posts: [][]seg{{wseg(2048)}},
			frames: [][]byte{
				cat(hdrBytes(NetHdr{Flags: NetHdrFNeedsCsum, GSOType: NetHdrGSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}), mtu),
				cat(hdrBytes(NetHdr{Flags: NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 200}), csumFrame),
				cat(hdrBytes(NetHdr{Flags: NetHdrFNeedsCsum | NetHdrFDataValid, CsumStart: 34, CsumOffset: 6}), csumFrame)},
			want: [][]byte{fixed}, hdrs: []NetHdr{{NumBuffers: 1}}, drops: 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newNetEnv(t, c.vnet, netGuestOffloads, c.accept, c.setErr)
			bufs := map[uint16]chainBufs{}
			for _, p := range c.posts {
				cb := e.d.post(netRxQ, false, p...)
				bufs[cb.head] = cb
			}
			e.d.kick(netRxQ)
			for _, f := range c.frames {
				e.hostWrite(f)
			}
			got := e.recvFrames(len(c.want), bufs)
			if len(got) != len(c.want) {
				t.Fatalf("%d frames, want %d", len(got), len(c.want))
			}
			for i, g := range got {
				if !bytes.Equal(g.frame, c.want[i]) {
					t.Errorf("frame %d: %d bytes, want %d", i, len(g.frame), len(c.want[i]))
				}
				if c.want[i] != nil && g.hdr.NumBuffers != uint16(len(g.lens)) {
					t.Errorf("frame %d: num_buffers %d over %d chains", i, g.hdr.NumBuffers, len(g.lens))
				}
				if i < len(c.hdrs) && g.hdr != c.hdrs[i] {
					t.Errorf("frame %d: header %+v, want %+v", i, g.hdr, c.hdrs[i])
				}
				if i < len(c.lens) && !equalU32(g.lens, c.lens[i]) {
					t.Errorf("frame %d: used lengths %v, want %v", i, g.lens, c.lens[i])
				}
			}
			var bytes uint64
			var n uint64
			for _, w := range c.want {
				if w != nil {
					n++
					bytes += uint64(len(w))
				}
			}
			if st := e.dev.Stats(); st.RxPackets != n || st.RxBytes != bytes || st.RxDropped != c.drops {
				t.Errorf("stats %+v, want %d packets, %d bytes, %d dropped", st, n, bytes, c.drops)
			}
		})
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestNetRxBackPressure: frames wait, undropped, while the driver has no
// buffers (or not enough for a merged frame), and arrive in order once it
// posts them; Close ends a wait.
func TestNetRxBackPressure(t *testing.T) {
	e := newNetEnv(t, true, 0, allNetFeatures, nil)
	var frames [][]byte
	for i := range 5 {
		frames = append(frames, ethFrame(1000+i, byte(i)))
		e.hostWrite(cat(hdrBytes(NetHdr{}), frames[i]))
	}
	bufs := map[uint16]chainBufs{}
	post := func(n uint32) {
		cb := e.d.post(netRxQ, false, wseg(n))
		bufs[cb.head] = cb
	}
	post(400) // not enough for the first frame
	e.d.kick(netRxQ)
	time.Sleep(50 * time.Millisecond)
	if u := e.d.takeUsed(netRxQ); len(u) != 0 || e.dev.Stats() != (NetStats{}) {
		t.Fatalf("used %v, stats %+v while the driver lacked buffers", u, e.dev.Stats())
	}
	post(400)
	post(400) // now the first frame fits three chains
	for range 4 {
		post(2048)
	}
	e.d.kick(netRxQ)
	got := e.recvFrames(5, bufs)
	for i, g := range got {
		if !bytes.Equal(g.frame, frames[i]) {
			t.Fatalf("frame %d: %d bytes, want %d (out of order?)", i, len(g.frame), len(frames[i]))
		}
	}
	if len(got[0].lens) != 3 {
		t.Errorf("first frame over %d chains, want 3", len(got[0].lens))
	}
	// One more frame with no buffers: Close must not wait for them.
	e.hostWrite(cat(hdrBytes(NetHdr{}), frames[0]))
	time.Sleep(20 * time.Millisecond)
	done := make(chan error)
	go func() { done <- e.dev.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung while the receiver waited for buffers")
	}
	if st := e.dev.Stats(); st.RxPackets != 5 || st.RxDropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestNetResetKeepsFrame: a frame read before the driver (re)activated is
// delivered to the next driver.
func TestNetResetKeepsFrame(t *testing.T) {
	e := newNetEnv(t, true, 0, allNetFeatures, nil)
	e.d.wr(RegStatus, 0) // reset: the device has no queues
	f := ethFrame(70, 7)
	e.hostWrite(cat(hdrBytes(NetHdr{}), f))
	time.Sleep(20 * time.Millisecond)
	e.d.negotiate(allNetFeatures, 16)
	cb := e.d.post(netRxQ, false, wseg(2048))
	e.d.kick(netRxQ)
	if got := e.recvFrames(1, map[uint16]chainBufs{cb.head: cb}); !bytes.Equal(got[0].frame, f) {
		t.Fatal("frame lost across the reset")
	}
}
