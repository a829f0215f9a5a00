// This file owns the network device's fuzz targets: guest-controlled
// transmit chains (FuzzNetTx), receive buffer layouts and host frames
// (FuzzNetRx), and rings in guest-controlled memory (FuzzNetRings). The
// backend is in memory: frames written are checked, reads block until
// Close, and reception is driven synchronously through deliver so every
// input runs deterministically.

package virtio

import (
	"os"
	"sync"
	"testing"
)

// memBackend records frame writes; Read blocks until Close.
type memBackend struct {
	vnet     bool
	offloads uint64
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex
	writes   [][]byte
}

func newMemBackend(vnet bool, offloads uint64) *memBackend {
	return &memBackend{vnet: vnet, offloads: offloads, done: make(chan struct{})}
}

func (m *memBackend) Read(p []byte) (int, error) { <-m.done; return 0, os.ErrClosed }
func (m *memBackend) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes = append(m.writes, append([]byte(nil), p...))
	return len(p), nil
}
func (m *memBackend) Close() error                    { m.once.Do(func() { close(m.done) }); return nil }
func (m *memBackend) VnetHdr() bool                   { return m.vnet }
func (m *memBackend) GuestOffloads() uint64           { return m.offloads }
func (m *memBackend) SetGuestOffloads(f uint64) error { return nil }

// fuzzNetAccept turns fuzz bits into the features a driver accepts,
// keeping the §5.1.3.1 dependencies (the device refuses the rest).
func fuzzNetAccept(bits uint16) uint64 {
	var f uint64
	for i, b := range []uint64{NetFCsum, NetFGuestCsum, NetFHostTSO4, NetFHostTSO6, NetFGuestTSO4, NetFGuestTSO6, NetFMrgRxbuf} {
		if bits&(1<<i) != 0 {
			f |= b
		}
	}
	if f&NetFCsum == 0 {
		f &^= NetFHostTSO4 | NetFHostTSO6
	}
	if f&NetFGuestCsum == 0 {
		f &^= NetFGuestTSO4 | NetFGuestTSO6
	}
	return f | NetFMAC | NetFMTU | NetFStatus
}

// fuzzNetDevice makes a device over a memBackend and negotiates the
// features bits select. ram is reused across inputs (allocating 8 MiB
// each time would be most of an input's cost): the rings' area is
// cleared, buffers are always written before they are read.
func fuzzNetDevice(t *testing.T, ram []byte, vnet bool, bits uint16) (*Net, *memBackend, *testDriver) {
	be := newMemBackend(vnet, netGuestOffloads)
	clear(ram[:testBufBase])
	mem := NewMemory(ram)
	irq := &countIRQ{}
	tr, dev, err := NewNetMMIO(mem, irq, be, NetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close(); dev.Close() })
	d := newDriver(t, mem, tr, irq)
	d.negotiate(fuzzNetAccept(bits), 16)
	return dev, be, d
}

// FuzzNetTx sends a guest-controlled chain (header and frame split into
// descriptors at a fuzzed point, direct or indirect) under fuzzed
// features: every chain comes back used with length 0, and whatever
// reaches the backend is one bounded frame whose header the negotiated
// features allow, its frame bytes those the guest sent.
func FuzzNetTx(f *testing.F) {
	frame := ethFrame(60, 1)
	for _, h := range []NetHdr{{}, {Flags: NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6},
		{Flags: NetHdrFNeedsCsum, GSOType: NetHdrGSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16},
		{Flags: 0xff, GSOType: 0xff, CsumStart: 0xffff, CsumOffset: 0xffff}, {GSOType: NetHdrGSOTCPv6 | NetHdrGSOECN}} {
		f.Add(cat(hdrBytes(h), frame), uint8(12), uint16(0xffff))
		f.Add(cat(hdrBytes(h), frame), uint8(5), uint16(0x0001))
	}
	f.Add([]byte{1, 2, 3}, uint8(1), uint16(0xfffe))
	ram := make([]byte, testMemSize)
	f.Fuzz(func(t *testing.T, data []byte, split uint8, bits uint16) {
		if len(data) > NetHdrSize+NetMaxFrame+64 {
			return
		}
		vnet := bits&0x8000 == 0
		dev, be, d := fuzzNetDevice(t, ram, vnet, bits)
		s := min(int(split), len(data))
		segs := []seg{rseg(data[:s])}
		if s < len(data) {
			segs = append(segs, rseg(data[s:]))
		}
		for i := 0; i < 2; i++ {
			ch := d.post(netTxQ, split&1 == 1, segs...)
			d.kick(netTxQ)
			if u := d.takeUsed(netTxQ); len(u) != 1 || u[0].id != uint32(ch.head) || u[0].len != 0 {
				t.Fatalf("tx used %v", u)
			}
		}
		st := dev.Stats()
		if st.TxPackets+st.TxDropped != 2 || int(st.TxPackets) != len(be.writes) {
			t.Fatalf("stats %+v, %d writes", st, len(be.writes))
		}
		for _, w := range be.writes {
			fr := w
			if vnet {
				h, err := ParseNetHdr(w)
				if err != nil {
					t.Fatal(err)
				}
				if h.Flags&^NetHdrFNeedsCsum != 0 || h.NumBuffers != 0 || checkTxHdr(&h, dev.features, len(w)-NetHdrSize) != nil {
					t.Fatalf("header %+v passed with features %#x", h, dev.features)
				}
				fr = w[NetHdrSize:]
			}
			if len(fr) < ethHdrLen || len(fr) > NetMaxFrame || string(fr) != string(data[NetHdrSize:]) {
				t.Fatalf("wrote a %d-byte frame for %d bytes of chain", len(fr), len(data))
			}
		}
	})
}

// FuzzNetRx delivers a host frame (header included, as a tap gives it)
// into receive chains whose sizes and directions come from the fuzzer,
// under fuzzed features, then a second frame into what is left: used
// lengths stay within their chains, a delivered frame is whole with
// num_buffers its chain count, and the header obeys the features.
func FuzzNetRx(f *testing.F) {
	frame := ethFrame(1514, 2)
	f.Add(cat(hdrBytes(NetHdr{}), frame), []byte{0x80, 0x10, 0x60}, uint16(0xffff))
	f.Add(cat(hdrBytes(NetHdr{Flags: NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}), frame), []byte{0x7f}, uint16(0x0040))
	f.Add(cat(hdrBytes(NetHdr{Flags: 3, GSOType: NetHdrGSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}), frame), []byte{1, 2, 0x81, 0x7f}, uint16(0x0033))
	f.Add(cat(hdrBytes(NetHdr{Flags: NetHdrFNeedsCsum, CsumStart: 0xfff0, CsumOffset: 0x20}), frame), []byte{0x40}, uint16(0x8000))
	ram := make([]byte, testMemSize)
	f.Fuzz(func(t *testing.T, pkt []byte, layout []byte, bits uint16) {
		if len(pkt) > NetHdrSize+NetMaxFrame || len(pkt) < NetHdrSize+ethHdrLen || len(layout) > 16 {
			return // the receive loop drops these before deliver
		}
		vnet := bits&0x8000 == 0
		if !vnet {
			pkt = cat(make([]byte, NetHdrSize), pkt[NetHdrSize:])
		}
		dev, _, d := fuzzNetDevice(t, ram, vnet, bits)
		sizes := map[uint16]uint32{} // at most 16 chains of one descriptor: heads are unique
		for _, b := range layout {
			n := uint32(b&0x7f) * 24 // up to 3048 bytes
			var ch chainBufs
			if b&0x80 != 0 {
				ch = d.post(netRxQ, false, rseg([]byte{b}))
				n = 0
			} else {
				ch = d.post(netRxQ, b&1 == 1, wseg(max(n, 1)))
				n = max(n, 1)
			}
			sizes[ch.head] = n
		}
		mrg := dev.features&NetFMrgRxbuf != 0
		for i, p := range [][]byte{pkt, cat(hdrBytes(NetHdr{}), ethFrame(100, 3))} {
			before := dev.Stats()
			dev.mu.Lock()
			done := dev.deliver(append([]byte(nil), p...))
			pending := len(dev.pending)
			dev.mu.Unlock()
			after := dev.Stats()
			used := d.takeUsed(netRxQ)
			var total uint64
			var nonEmpty []usedElem
			for _, u := range used {
				if u.len > sizes[uint16(u.id)] {
					t.Fatalf("frame %d: used %v beyond its %d-byte chain", i, u, sizes[uint16(u.id)])
				}
				if u.len > 0 {
					nonEmpty = append(nonEmpty, u)
					total += uint64(u.len)
				}
			}
			delivered := after.RxPackets - before.RxPackets
			switch {
			case delivered == 1:
				if !done || total != uint64(len(p)) || !mrg && len(nonEmpty) != 1 {
					t.Fatalf("frame %d: %d bytes in %v, want %d (mrg %v)", i, total, used, len(p), mrg)
				}
				h := firstHdr(t, d, nonEmpty[0])
				if int(h.NumBuffers) != len(nonEmpty) {
					t.Fatalf("frame %d: num_buffers %d over %d chains", i, h.NumBuffers, len(nonEmpty))
				}
				if dev.features&NetFGuestCsum == 0 && h.Flags != 0 || h.Flags&^(NetHdrFNeedsCsum|NetHdrFDataValid) != 0 {
					t.Fatalf("frame %d: header %+v with features %#x", i, h, dev.features)
				}
			case total != 0:
				t.Fatalf("frame %d: %d bytes used but nothing delivered", i, total)
			case !done && pending > 16:
				t.Fatalf("frame %d: %d chains pending in a 16-entry ring", i, pending)
			}
			if !done {
				break // waiting for buffers: the rest of the ring is taken
			}
		}
	})
}

// firstHdr reads the virtio header at the start of the chain u used.
func firstHdr(t *testing.T, d *testDriver, u usedElem) NetHdr {
	q := d.queues[netRxQ]
	desc := q.desc + 16*uint64(u.id)
	addr, _ := d.mem.ReadU64(desc)
	flags, _ := d.mem.ReadU16(desc + 12)
	if flags&DescFIndirect != 0 { // the table's first entry
		addr, _ = d.mem.ReadU64(addr)
	}
	b, err := d.mem.Slice(addr, NetHdrSize)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := ParseNetHdr(b)
	return h
}

// FuzzNetRings runs both queues over guest-controlled memory (the
// FuzzQueue layout): transmit processing must end, and a frame must be
// delivered, dropped or left waiting without panicking.
func FuzzNetRings(f *testing.F) {
	seedQueueCorpus(f)
	frame := cat(hdrBytes(NetHdr{}), ethFrame(200, 4))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fuzzMemSize {
			return
		}
		dev, err := NewNet(newMemBackend(true, netGuestOffloads), NetConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		_, rx := fuzzQueue(data)
		_, tx := fuzzQueue(data)
		feat := uint64(FeatureVersion1 | FeatureIndirectDesc | NetFCsum | NetFHostTSO4 | NetFGuestCsum)
		if len(data) > 2 && data[2]&1 != 0 {
			feat |= NetFMrgRxbuf
		}
		if err := dev.Activate([]*Queue{rx, tx}, feat); err != nil {
			t.Fatal(err)
		}
		dev.Notify(netTxQ)
		dev.Notify(netRxQ)
		dev.mu.Lock()
		dev.deliver(append([]byte(nil), frame...))
		dev.mu.Unlock()
		dev.Reset()
	})
}
