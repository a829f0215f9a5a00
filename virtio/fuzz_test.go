package virtio

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// Fuzz layout: guest memory is the fuzz input (padded to fuzzMemSize), so
// the descriptor table, the rings, indirect tables and buffers are all
// attacker-controlled.
const (
	fuzzMemSize = 16 << 10
	fuzzDesc    = 0x0000
	fuzzAvail   = 0x1000
	fuzzUsed    = 0x2000
)

// fuzzImage builds a memory image with the given descriptors at fuzzDesc,
// the given heads in the avail ring and the avail index.
func fuzzImage(size uint16, indirect bool, descs []desc, heads []uint16) []byte {
	b := make([]byte, 0x3000)
	b[0] = byte(size)
	if indirect {
		b[1] = 1
	}
	for i, d := range descs {
		e := b[fuzzDesc+16*i:]
		binary.LittleEndian.PutUint64(e, d.addr)
		binary.LittleEndian.PutUint32(e[8:], d.len)
		binary.LittleEndian.PutUint16(e[12:], d.flags)
		binary.LittleEndian.PutUint16(e[14:], d.next)
	}
	binary.LittleEndian.PutUint16(b[fuzzAvail+2:], uint16(len(heads)))
	for i, h := range heads {
		binary.LittleEndian.PutUint16(b[fuzzAvail+4+2*i:], h)
	}
	return b
}

// fuzzQueue turns a memory image into an activated queue. Bytes 0 and 1
// (inside descriptor 0's address, which the fuzzer controls anyway) choose
// the queue size and whether INDIRECT_DESC was negotiated.
func fuzzQueue(data []byte) (*Memory, *Queue) {
	img := make([]byte, fuzzMemSize)
	copy(img, data)
	mem := NewMemory(img)
	q := NewQueue(mem, 256)
	if len(data) > 0 {
		q.Size = uint16(1) << (data[0] % 9) // 1..256
	} else {
		q.Size = 8
	}
	q.Desc, q.Avail, q.Used, q.Ready = fuzzDesc, fuzzAvail, fuzzUsed, true
	indirect := len(data) > 1 && data[1]&1 != 0
	if err := q.activate(indirect); err != nil {
		panic(err) // the layout above is always valid
	}
	return mem, q
}

func seedQueueCorpus(f *testing.F) {
	W, N, I := uint16(DescFWrite), uint16(DescFNext), uint16(DescFIndirect)
	f.Add(fuzzImage(8, false, []desc{{addr: 0x3000, len: 16}}, []uint16{0}))
	f.Add(fuzzImage(8, false, []desc{{0x3000, 16, N, 1}, {0x3400, 512, N | W, 2}, {0x3800, 1, W, 0}}, []uint16{0}))
	f.Add(fuzzImage(8, false, []desc{{0x3000, 16, N, 1}, {0x3400, 16, N, 0}}, []uint16{0}))       // loop
	f.Add(fuzzImage(8, false, []desc{{0x3000, 16, N | W, 1}, {0x3400, 16, 0, 0}}, []uint16{0}))   // readable after writable
	f.Add(fuzzImage(8, false, []desc{{0x3ff0, 0x20, 0, 0}}, []uint16{0, 9, 0xffff}))              // out of memory, bad heads
	f.Add(fuzzImage(8, true, []desc{{0x3000, 48, I, 0}}, []uint16{0, 0}))                         // indirect
	f.Add(fuzzImage(8, true, []desc{{0x3000, 48, I | N, 1}, {0x3000, 16, I, 0}}, []uint16{0, 1})) // indirect + next
	f.Add(fuzzImage(8, true, []desc{{0x0000, 0x1000, I, 0}}, []uint16{0}))                        // table = ring itself (nested)
	f.Add(fuzzImage(8, true, []desc{{0xffffffffffff0000, 0x20000, I, 0}, {0x3000, 17, I, 0}}, []uint16{0, 1}))
	f.Add(fuzzImage(8, false, []desc{{0x3000, 0xffffffff, 0, 0}}, append(make([]uint16, 9), 0))) // too many available
	f.Add(fuzzImage(1, false, []desc{{0x3000, 0, 0, 0}}, []uint16{0, 0, 0}))
}

// FuzzQueue pops every chain from a guest-controlled ring: nothing may
// panic, every Pop must end, buffers must lie inside memory and follow
// the readable-then-writable order.
func FuzzQueue(f *testing.F) {
	seedQueueCorpus(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fuzzMemSize {
			return // bytes past guest memory add nothing
		}
		mem, q := fuzzQueue(data)
		for i := 0; ; i++ {
			if i > int(q.Size)+1 {
				t.Fatalf("Pop did not run dry after %d calls", i)
			}
			c, err := q.Pop()
			if c == nil && (err == nil || q.Err() != nil) {
				break
			}
			if c == nil {
				continue
			}
			if n := len(c.Readable) + len(c.Writable); n > 1<<16 {
				t.Fatalf("chain of %d buffers", n)
			}
			checkInside(t, mem, c.Readable)
			checkInside(t, mem, c.Writable)
			// Exercise the readers/writers over whatever came back.
			io.CopyN(io.Discard, c.Reader(), 4096)
			w := c.Writer()
			w.Write(make([]byte, 100))
			q.PushChain(c, w.Written())
		}
		q.Interrupt()
	})
}

func checkInside(t *testing.T, mem *Memory, bs []Buffer) {
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(mem.b)))
	hi := lo + uintptr(len(mem.b))
	for _, b := range bs {
		if cap(b) != len(b) {
			t.Fatalf("buffer capacity %d beyond length %d", cap(b), len(b))
		}
		if len(b) == 0 {
			continue
		}
		p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		if p < lo || p+uintptr(len(b)) > hi {
			t.Fatalf("buffer [%#x,+%#x) outside guest memory", p-lo, len(b))
		}
	}
}

// fuzzBackends makes the devices with host state, living across fuzz
// inputs: a blk over an 8-sector disk file and a vsock listening on a unix
// socket, both removed when f ends.
func fuzzBackends(f *testing.F) (*Blk, *Vsock) {
	dir, err := os.MkdirTemp("", "virtio-fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 8*SectorSize), 0o600); err != nil {
		f.Fatal(err)
	}
	blk, err := OpenBlk(img, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { blk.Close() })
	vs, err := NewVsock(VsockConfig{GuestCID: testGuestCID, UDS: filepath.Join(dir, fmt.Sprintf("v%d.sock", os.Getpid())),
		ConnectTimeout: 50 * time.Millisecond, DialTimeout: 50 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { vs.Close() })
	return blk, vs
}

// FuzzDevices runs every device's queue handler (rng, console, blk,
// vsock) over guest-controlled memory (requests, headers, descriptors).
func FuzzDevices(f *testing.F) {
	seedQueueCorpus(f)
	blk, vs := fuzzBackends(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fuzzMemSize {
			return
		}
		for _, dev := range []Device{NewRng(), NewConsole(io.Discard), blk, vs} {
			_, q := fuzzQueue(data)
			qs := make([]*Queue, len(dev.QueueMaxSizes()))
			for i := range qs {
				qs[i] = q // every queue of the device sees the same ring
			}
			dev.Activate(qs, FeatureVersion1|FeatureIndirectDesc)
			for i := range qs {
				dev.Notify(i)
			}
			if c, ok := dev.(*Console); ok {
				c.Input(data)
			}
			dev.Reset()
		}
	})
}

// FuzzMMIO drives the transport of every device (rng, console, blk,
// vsock) with arbitrary register accesses (offset, width, value triples).
// The blk and vsock devices live across inputs (a disk file, a listening
// socket); each input gets a fresh transport over them, closed (reset)
// at its end.
func FuzzMMIO(f *testing.F) {
	blk, vs := fuzzBackends(f)
	enc := func(ops ...[3]uint32) []byte {
		var b []byte
		for _, o := range ops {
			b = binary.LittleEndian.AppendUint16(b, uint16(o[0]))
			b = append(b, byte(o[1]))
			b = binary.LittleEndian.AppendUint32(b, o[2])
		}
		return b
	}
	f.Add(enc([3]uint32{RegStatus, 4, 3}, [3]uint32{RegDriverFeaturesSel, 4, 1}, [3]uint32{RegDriverFeatures, 4, 1},
		[3]uint32{RegStatus, 4, 11}, [3]uint32{RegQueueNum, 4, 8}, [3]uint32{RegQueueDescLow, 4, 0x1000},
		[3]uint32{RegQueueDriverLow, 4, 0x2000}, [3]uint32{RegQueueDeviceLow, 4, 0x3000}, [3]uint32{RegQueueReady, 4, 1},
		[3]uint32{RegStatus, 4, 15}, [3]uint32{RegQueueNotify, 4, 0}, [3]uint32{RegConfig, 1, 0}, [3]uint32{RegStatus, 4, 0}))
	// Three queues ready (vsock needs rx and tx to activate), then kicks.
	three := [][3]uint32{{RegStatus, 4, 3}, {RegDriverFeaturesSel, 4, 1}, {RegDriverFeatures, 4, 1}, {RegStatus, 4, 11}}
	for q := uint32(0); q < 3; q++ {
		three = append(three, [3]uint32{RegQueueSel, 4, q}, [3]uint32{RegQueueNum, 4, 8},
			[3]uint32{RegQueueDescLow, 4, 0x1000 + 0x3000*q}, [3]uint32{RegQueueDriverLow, 4, 0x2000 + 0x3000*q},
			[3]uint32{RegQueueDeviceLow, 4, 0x3000 + 0x3000*q}, [3]uint32{RegQueueReady, 4, 1})
	}
	three = append(three, [3]uint32{RegStatus, 4, 15}, [3]uint32{RegQueueNotify, 4, 1}, [3]uint32{RegQueueNotify, 4, 0},
		[3]uint32{RegConfig, 4, 0}, [3]uint32{RegInterruptACK, 4, 1}, [3]uint32{RegStatus, 4, 0})
	f.Add(enc(three...))
	f.Add(enc([3]uint32{RegConfig + 0xf8, 8, 0}, [3]uint32{0x1ff, 2, 1}, [3]uint32{RegQueueSel, 4, 0xffffffff}, [3]uint32{RegQueueNumMax, 4, 0}))
	f.Fuzz(func(t *testing.T, ops []byte) {
		mem := NewMemory(make([]byte, 64<<10))
		irq := &countIRQ{}
		devs := []*MMIO{}
		tr, _ := NewRngMMIO(mem, irq)
		devs = append(devs, tr)
		tr, _ = NewConsoleMMIO(mem, irq, io.Discard)
		devs = append(devs, tr, NewMMIO(blk, mem, irq), NewMMIO(vs, mem, irq))
		for _, tr := range devs {
			for o := ops; len(o) >= 7; o = o[7:] {
				off := uint64(binary.LittleEndian.Uint16(o)) % 0x400
				w := int(o[2]&0x0f) % 9 // 0..8 bytes wide
				v := binary.LittleEndian.Uint32(o[3:])
				buf := make([]byte, w)
				for i := 0; i < w && i < 4; i++ {
					buf[i] = byte(v >> (8 * i))
				}
				if o[2]&0x80 != 0 {
					tr.Read(off, buf)
				} else {
					tr.Write(off, buf)
				}
			}
			tr.Close()
		}
	})
}

// FuzzVsockTx sends a guest-controlled packet (header and payload split
// into descriptors at a fuzzed point) through an active vsock device.
func FuzzVsockTx(f *testing.F) {
	pkt := func(h VsockHeader, payload string) []byte {
		b := make([]byte, VsockHeaderSize)
		h.Len = uint32(len(payload))
		h.Marshal(b)
		return append(b, payload...)
	}
	g := func(op uint16) VsockHeader {
		return VsockHeader{SrcCID: testGuestCID, DstCID: 2, SrcPort: 1000, DstPort: 2000, Type: 1, Op: op, BufAlloc: 4096}
	}
	for op := uint16(0); op < 9; op++ {
		f.Add(pkt(g(op), ""), uint8(44))
		f.Add(pkt(g(op), "payload"), uint8(50))
	}
	bad := g(VsockOpRW)
	bad.Len = 0xffffffff
	b := make([]byte, VsockHeaderSize)
	bad.Marshal(b)
	f.Add(b, uint8(10))
	dir, err := os.MkdirTemp("", "vsock-fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	var iter atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		uds := filepath.Join(dir, fmt.Sprintf("%d-%d.sock", os.Getpid(), iter.Add(1)))
		mem := NewMemory(make([]byte, testMemSize))
		irq := &countIRQ{}
		tr, v, err := NewVsockMMIO(mem, irq, VsockConfig{GuestCID: testGuestCID, UDS: uds})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		defer tr.Close()
		d := newDriver(t, mem, tr, irq)
		d.negotiate(^uint64(0), 16)
		for i := 0; i < 4; i++ {
			d.post(vsockRxQ, false, wseg(VsockHeaderSize), wseg(64))
		}
		d.post(vsockRxQ, false, wseg(10)) // too small for a header
		d.kick(vsockRxQ)
		s := min(int(split), len(data))
		segs := []seg{rseg(data[:s])}
		if s < len(data) {
			segs = append(segs, rseg(data[s:]))
		}
		// Twice: the second packet meets the state the first created.
		for i := 0; i < 2; i++ {
			d.post(vsockTxQ, split&1 == 1, segs...)
			d.kick(vsockTxQ)
			if u := d.takeUsed(vsockTxQ); len(u) != 1 {
				t.Fatalf("tx used %v", u)
			}
		}
		if h, err := ParseVsockHeader(data); err == nil {
			var out [VsockHeaderSize]byte
			h.Marshal(out[:])
			if string(out[:]) != string(data[:VsockHeaderSize]) {
				t.Fatal("header does not round-trip")
			}
		}
	})
}

// FuzzVsockSequence feeds a sequence of packets whose CIDs, type and ports
// are steered towards live connections (a host listener on port 2000 and
// a host client connecting to guest port 1000 exist), so the connection
// state machine and the credit accounting see guest-controlled input.
func FuzzVsockSequence(f *testing.F) {
	pkt := func(op uint16, sport, dport uint32, flags, alloc, fwd uint32, payload string) []byte {
		b := make([]byte, VsockHeaderSize)
		h := VsockHeader{SrcPort: sport, DstPort: dport, Op: op, Flags: flags, BufAlloc: alloc, FwdCnt: fwd, Len: uint32(len(payload))}
		h.Marshal(b)
		return append(b, payload...)
	}
	cat := func(ps ...[]byte) []byte {
		var b []byte
		for _, p := range ps {
			b = append(b, p...)
		}
		return b
	}
	f.Add(cat(pkt(VsockOpRequest, 0, 0, 0, 4096, 0, ""), pkt(VsockOpRW, 0, 0, 0, 4096, 0, "hello"),
		pkt(VsockOpCreditRequest, 0, 0, 0, 4096, 0, ""), pkt(VsockOpShutdown, 0, 0, 3, 4096, 0, "")))
	f.Add(cat(pkt(VsockOpResponse, 1, 1, 0, 16, 0, ""), pkt(VsockOpRW, 1, 1, 0, 16, 0, "x"),
		pkt(VsockOpCreditUpdate, 1, 1, 0, 0, 0, ""), pkt(VsockOpShutdown, 1, 1, 1, 16, 0, ""), pkt(VsockOpRst, 1, 1, 0, 0, 0, "")))
	f.Add(cat(pkt(VsockOpRW, 0, 0, 0, 0xffffffff, 0xffffffff, "zz"), pkt(9, 2, 3, 0, 0, 0, "")))
	dir, err := os.MkdirTemp("", "vsock-seq")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	var iter atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 8<<10 {
			return
		}
		uds := filepath.Join(dir, fmt.Sprintf("%d-%d.sock", os.Getpid(), iter.Add(1)))
		ln, err := net.Listen("unix", uds+"_2000")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() { // host service: echo
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
		mem := NewMemory(make([]byte, testMemSize))
		irq := &countIRQ{}
		tr, v, err := NewVsockMMIO(mem, irq, VsockConfig{GuestCID: testGuestCID, UDS: uds, ConnectTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		defer tr.Close()
		d := newDriver(t, mem, tr, irq)
		d.negotiate(^uint64(0), 32)
		if hc, err := net.Dial("unix", uds); err == nil {
			defer hc.Close()
			fmt.Fprintf(hc, "CONNECT 1000\n")
			go io.Copy(io.Discard, hc)
		}
		for i := 0; i < 8; i++ {
			d.post(vsockRxQ, false, wseg(VsockHeaderSize), wseg(256))
		}
		d.kick(vsockRxQ)
		for n := 0; len(data) >= VsockHeaderSize && n < 16; n++ {
			h, _ := ParseVsockHeader(data)
			if h.SrcCID&0xff != 0xff {
				h.SrcCID = testGuestCID
			}
			if h.DstCID&0xff != 0xff {
				h.DstCID = VsockHostCID
			}
			if h.Type&0xff != 0xff {
				h.Type = VsockTypeStream
			}
			if h.SrcPort&0xff != 0xff {
				h.SrcPort = 1000 + h.SrcPort%2 // 1000: the host client's guest port
			}
			if h.DstPort&0xff != 0xff {
				// 2000: the echo service; otherwise the host port
				// of the host client's connection.
				h.DstPort = []uint32{2000, vsockFirstHostPort}[h.DstPort%2]
			}
			rest := data[VsockHeaderSize:]
			plen := min(int(h.Len%512), len(rest))
			if h.Len&0x10000 == 0 {
				h.Len = uint32(plen)
			}
			var hb [VsockHeaderSize]byte
			h.Marshal(hb[:])
			segs := []seg{rseg(hb[:])}
			if plen > 0 {
				segs = append(segs, rseg(rest[:plen]))
			}
			data = rest[plen:]
			d.post(vsockTxQ, n%2 == 1, segs...)
			d.kick(vsockTxQ)
			d.takeUsed(vsockTxQ)
			// Recycle whatever rx buffers were used.
			for range d.takeUsed(vsockRxQ) {
				d.post(vsockRxQ, false, wseg(VsockHeaderSize), wseg(256))
			}
			d.kick(vsockRxQ)
		}
	})
}
