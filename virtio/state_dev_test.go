// This file tests the vsock and network devices' pause and snapshot
// restore with the test driver: vsock's transport reset and held host
// packets, net slots attached at restore, and the receive chains net holds
// for a frame in progress.

package virtio

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func dialConnect(t *testing.T, uds string, port uint32) (net.Conn, *bufio.Reader) {
	t.Helper()
	uc, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	fmt.Fprintf(uc, "CONNECT %d\n", port)
	return uc, bufio.NewReader(uc)
}

// TestRestoreVsock: a paused vsock keeps host traffic out of guest memory
// (and delivers it on Resume); a restored one on a new socket sends the
// transport reset event, holds host packets until the driver re-posted its
// event buffer, then accepts new host connections; packets of connections
// from before the snapshot are answered with RST.
func TestRestoreVsock(t *testing.T) {
	g := newGuestVsock(t, 0)
	ev := map[uint16]chainBufs{}
	for range 4 { // Linux posts its event buffers at probe
		c := g.d.post(vsockEvQ, false, wseg(4))
		ev[c.head] = c
	}
	g.d.kick(vsockEvQ)
	uc, br, req := g.hostConnect(11)
	g.send(g.hdr(VsockOpResponse, 11, req.h.SrcPort), nil)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "OK ") {
		t.Fatalf("CONNECT answer %q", line)
	}

	g.tr.Pause()
	dialConnect(t, g.uds, 12)
	uc.Write([]byte("x"))
	g.expectNothing()
	s, snapMem := snapshot(t, g.tr, g.d.mem)
	if len(s.Device) != vsockStateSize || binary.LittleEndian.Uint32(s.Device) <= req.h.SrcPort {
		t.Fatalf("vsock saved device state %x: want the next host port, after %d", s.Device, req.h.SrcPort)
	}
	rx := maps.Clone(g.rx)
	frozen := g.d.restoredDriver(nil, nil, nil) // the driver as snapshotted

	// The snapshotted VM itself goes on: what queued while paused arrives.
	g.tr.Resume()
	ops := map[uint16]bool{g.recv().h.Op: true, g.recv().h.Op: true}
	if !ops[VsockOpRequest] || !ops[VsockOpRW] {
		t.Fatalf("after Resume got ops %v, want REQUEST and RW", ops)
	}

	t.Run("new CID", func(t *testing.T) {
		mem := NewMemory(append([]byte(nil), snapMem.b...))
		irq := &countIRQ{}
		tr, v, err := NewVsockMMIO(mem, irq, VsockConfig{GuestCID: 7, UDS: filepath.Join(t.TempDir(), "c.sock")})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { tr.Close(); v.Close() }()
		if err := tr.RestoreState(s); err != nil {
			t.Fatal(err)
		}
		d := frozen.restoredDriver(mem, tr, irq)
		if isr := d.ack(); isr&InterruptConfigChange == 0 {
			t.Errorf("no configuration change interrupt for the new CID (ISR %#x)", isr)
		}
		var cfg [8]byte
		tr.Read(RegConfig, cfg[:])
		if cid := binary.LittleEndian.Uint64(cfg[:]); cid != 7 {
			t.Errorf("guest_cid %d", cid)
		}
	})

	irq2 := &countIRQ{}
	uds2 := filepath.Join(t.TempDir(), "v2.sock")
	tr2, v2, err := NewVsockMMIO(snapMem, irq2, VsockConfig{GuestCID: testGuestCID, UDS: uds2, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr2.Close(); v2.Close() })
	// A host connection racing the restore (made before it).
	uc3, br3 := dialConnect(t, uds2, 13)
	time.Sleep(20 * time.Millisecond)
	if err := tr2.RestoreState(s); err != nil {
		t.Fatal(err)
	}
	d2 := frozen.restoredDriver(snapMem, tr2, irq2)
	g2 := &guestVsock{t: t, d: d2, v: v2, tr: tr2, uds: uds2, rx: rx}
	u := d2.takeUsed(vsockEvQ)
	if len(u) != 1 || u[0].len != 4 {
		t.Fatalf("event queue after restore: %v", u)
	}
	if id := binary.LittleEndian.Uint32(d2.bytesAt(ev[uint16(u[0].id)], 0, 4)); id != VsockEventTransportReset {
		t.Fatalf("event id %d, want TRANSPORT_RESET", id)
	}
	if isr := d2.ack(); isr&InterruptConfigChange != 0 {
		t.Errorf("config change interrupt with the same CID (ISR %#x)", isr)
	}
	g2.expectNothing() // held until the driver handled the reset
	d2.post(vsockEvQ, false, wseg(4))
	d2.kick(vsockEvQ)
	req3 := g2.expect(VsockOpRequest)
	if req3.h.DstPort != 13 {
		t.Fatalf("REQUEST %+v", req3.h)
	}
	g2.send(g2.hdr(VsockOpResponse, 13, req3.h.SrcPort), nil)
	uc3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := br3.ReadString('\n'); !strings.HasPrefix(line, "OK ") {
		t.Fatalf("CONNECT answer after restore %q", line)
	}
	g2.send(g2.hdr(VsockOpRW, 13, req3.h.SrcPort), []byte("ping"))
	if got := readN(t, br3, 4); string(got) != "ping" {
		t.Fatalf("host read %q", got)
	}
	// The connection from before the snapshot is gone.
	g2.send(g2.hdr(VsockOpRW, 11, req.h.SrcPort), []byte("old"))
	if p := g2.expect(VsockOpRst); p.h.DstPort != 11 {
		t.Fatalf("RST %+v", p.h)
	}
}

// TestVsockRestoreReleaseTimeout: a driver that never re-posts its event
// buffer still gets host packets, after half ConnectTimeout (before the
// connections waiting time out).
func TestVsockRestoreReleaseTimeout(t *testing.T) {
	g := newGuestVsock(t, 0)
	g.d.post(vsockEvQ, false, wseg(4))
	s, mem := snapshot(t, g.tr, g.d.mem)
	irq := &countIRQ{}
	uds := filepath.Join(t.TempDir(), "r.sock")
	tr, v, err := NewVsockMMIO(mem, irq, VsockConfig{GuestCID: testGuestCID, UDS: uds, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close(); v.Close() })
	if err := tr.RestoreState(s); err != nil {
		t.Fatal(err)
	}
	g2 := &guestVsock{t: t, d: g.d.restoredDriver(mem, tr, irq), v: v, tr: tr, uds: uds, rx: maps.Clone(g.rx)}
	if u := g2.d.takeUsed(vsockEvQ); len(u) != 1 {
		t.Fatalf("event queue %v", u)
	}
	dialConnect(t, uds, 5)
	if p := g2.expect(VsockOpRequest); p.h.DstPort != 5 {
		t.Fatalf("REQUEST %+v", p.h)
	}
}

func netSlotEnv(t *testing.T, accept uint64) (*netEnv, map[uint16]chainBufs) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, dev, err := NewNetSlotMMIO(mem, irq, NetConfig{MAC: net.HardwareAddr{0x52, 0x54, 0, 1, 2, 3}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close(); dev.Close() })
	d := newDriver(t, mem, tr, irq)
	d.negotiate(accept, 16)
	bufs := map[uint16]chainBufs{}
	for range 4 {
		c := d.post(netRxQ, false, wseg(2048))
		bufs[c.head] = c
	}
	d.kick(netRxQ)
	return &netEnv{t: t, dev: dev, tr: tr, d: d}, bufs
}

// TestRestoreNetSlot: an unbacked slot drops what the guest sends; the
// restored slot with a tap-like backend attached carries frames both ways
// at the saved ring positions.
func TestRestoreNetSlot(t *testing.T) {
	e, bufs := netSlotEnv(t, allNetFeatures)
	e.d.wr(RegDeviceFeaturesSel, 0)
	if f := e.d.rd(RegDeviceFeatures); uint64(f) != netSlotFeatures|FeatureIndirectDesc {
		t.Fatalf("slot offers %#x, want %#x", f, netSlotFeatures|FeatureIndirectDesc)
	}
	frame := ethFrame(100, 1)
	e.d.post(netTxQ, false, rseg(hdrBytes(NetHdr{})), rseg(frame))
	e.d.kick(netTxQ)
	if u := e.d.takeUsed(netTxQ); len(u) != 1 || u[0].len != 0 || e.dev.Stats().TxDropped != 1 || e.dev.Backed() {
		t.Fatalf("unbacked tx: used %v, stats %+v", u, e.dev.Stats())
	}
	plain, _ := newPipeBackend(t, false, 0)
	if err := e.dev.Attach(plain); err == nil || !strings.Contains(err.Error(), "virtio_net_hdr") {
		t.Fatalf("Attach of a backend without virtio_net_hdr after CSUM was negotiated: %v", err)
	}
	s, mem2 := snapshot(t, e.tr, e.d.mem)

	slot2, err := NewNetSlot(NetConfig{MAC: net.HardwareAddr{0x52, 0x54, 0, 9, 9, 9}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	be, host := newPipeBackend(t, true, netGuestOffloads)
	if err := slot2.Attach(be); err != nil {
		t.Fatal(err)
	}
	if err := slot2.Attach(be); err == nil {
		t.Fatal("second Attach succeeded")
	}
	irq2 := &countIRQ{}
	tr2 := NewMMIO(slot2, mem2, irq2)
	t.Cleanup(func() { tr2.Close(); slot2.Close() })
	if err := tr2.RestoreState(s); err != nil {
		t.Fatal(err)
	}
	e2 := &netEnv{t: t, dev: slot2, tr: tr2, be: be, host: host, d: e.d.restoredDriver(mem2, tr2, irq2)}
	if isr := e2.d.ack(); isr&InterruptConfigChange == 0 {
		t.Errorf("no configuration change interrupt for the new MAC (ISR %#x)", isr)
	}
	e2.d.post(netTxQ, false, rseg(hdrBytes(NetHdr{})), rseg(frame))
	e2.d.kick(netTxQ)
	if got := e2.hostRead(); !bytes.Equal(got, cat(hdrBytes(NetHdr{}), frame)) {
		t.Fatalf("backend got %x", got)
	}
	in := ethFrame(200, 7)
	e2.hostWrite(cat(hdrBytes(NetHdr{}), in))
	fr := e2.recvFrames(1, bufs)
	if len(fr) != 1 || !bytes.Equal(fr[0].frame, in) || fr[0].hdr.NumBuffers != 1 {
		t.Fatalf("received %+v", fr)
	}
	if st := slot2.Stats(); st.TxPackets != 1 || st.RxPackets != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestNetSlotAttach(t *testing.T) {
	t.Run("plain backend without offloads negotiated", func(t *testing.T) {
		e, bufs := netSlotEnv(t, NetFMAC|NetFMrgRxbuf)
		be, host := newPipeBackend(t, false, 0)
		if err := e.dev.Attach(be); err != nil {
			t.Fatal(err)
		}
		e.be, e.host = be, host
		in := ethFrame(80, 3)
		e.hostWrite(in)
		if fr := e.recvFrames(1, bufs); len(fr) != 1 || !bytes.Equal(fr[0].frame, in) {
			t.Fatalf("received %+v", fr)
		}
	})
	t.Run("restore rejects a plain backend for CSUM", func(t *testing.T) {
		e, _ := netSlotEnv(t, allNetFeatures)
		s, mem2 := snapshot(t, e.tr, e.d.mem)
		slot, _ := NewNetSlot(NetConfig{})
		be, _ := newPipeBackend(t, false, 0)
		if err := slot.Attach(be); err != nil {
			t.Fatal(err)
		}
		tr := NewMMIO(slot, mem2, &countIRQ{})
		t.Cleanup(func() { tr.Close(); slot.Close() })
		if err := tr.RestoreState(s); err == nil || !strings.Contains(err.Error(), "virtio_net_hdr") {
			t.Fatalf("RestoreState: %v", err)
		}
	})
	t.Run("not a slot", func(t *testing.T) {
		e := newNetEnv(t, true, netGuestOffloads, allNetFeatures, nil)
		be, _ := newPipeBackend(t, true, 0)
		if err := e.dev.Attach(be); err == nil {
			t.Fatal("Attach on a NewNet device succeeded")
		}
	})
}

// waitHeld waits until the receive goroutine holds n chains for a frame.
func waitHeld(t *testing.T, dev *Net, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		dev.mu.Lock()
		got := len(dev.pending)
		dev.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device holds %d chains, want %d", got, n)
		}
	}
}

// TestRestoreNetHeldChains: chains the device took for a frame that did
// not fit yet are not lost in a snapshot: the saved position rewinds over
// them and the restored device takes them again. When they are not the
// last chains taken (a malformed one was returned after them), Pause
// returns them empty instead.
func TestRestoreNetHeldChains(t *testing.T) {
	for _, malformed := range []bool{false, true} {
		t.Run(fmt.Sprintf("malformed=%v", malformed), func(t *testing.T) {
			e := newNetEnv(t, true, netGuestOffloads, allNetFeatures, nil)
			bufs := map[uint16]chainBufs{}
			small := e.d.post(netRxQ, false, wseg(100))
			bufs[small.head] = small
			e.d.kick(netRxQ)
			big := ethFrame(1000, 5)
			e.hostWrite(cat(hdrBytes(NetHdr{}), big))
			waitHeld(t, e.dev, 1)
			want := uint16(0)
			if malformed {
				e.d.post(netRxQ, false, rseg(make([]byte, 8))) // no writable buffer
				e.d.kick(netRxQ)
				if u := e.d.waitUsed(netRxQ, 1, 5*time.Second); u[0].len != 0 {
					t.Fatalf("malformed chain used %v", u)
				}
				want = 2
			}
			s, mem2 := snapshot(t, e.tr, e.d.mem)
			if q := s.Queues[netRxQ]; q.LastAvail != want || q.UsedIdx != want {
				t.Fatalf("saved rx queue %+v, want positions %d", q, want)
			}
			if malformed {
				if u := e.d.takeUsed(netRxQ); len(u) != 1 || u[0].id != uint32(small.head) || u[0].len != 0 {
					t.Fatalf("held chain not returned at Pause: %v", u)
				}
			}

			be2, host2 := newPipeBackend(t, true, netGuestOffloads)
			irq2 := &countIRQ{}
			tr2, dev2, err := NewNetMMIO(mem2, irq2, be2, NetConfig{MAC: net.HardwareAddr{0x52, 0x54, 0, 1, 2, 3}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tr2.Close(); dev2.Close() })
			if err := tr2.RestoreState(s); err != nil {
				t.Fatal(err)
			}
			e2 := &netEnv{t: t, dev: dev2, tr: tr2, be: be2, host: host2, d: e.d.restoredDriver(mem2, tr2, irq2)}
			e2.d.takeUsed(netRxQ)
			large := e2.d.post(netRxQ, false, wseg(2048))
			bufs[large.head] = large
			e2.d.kick(netRxQ)
			in := ethFrame(1000, 9)
			e2.hostWrite(cat(hdrBytes(NetHdr{}), in))
			fr := e2.recvFrames(1, bufs)
			wantBufs := uint16(2) // the held 100-byte chain again, then the new one
			if malformed {
				wantBufs = 1
			}
			if len(fr) != 1 || !bytes.Equal(fr[0].frame, in) || fr[0].hdr.NumBuffers != wantBufs {
				t.Fatalf("received %d frames, num_buffers %d", len(fr), fr[0].hdr.NumBuffers)
			}

			// The original device, resumed, still delivers the frame it held.
			e.tr.Resume()
			more := e.d.post(netRxQ, false, wseg(2048))
			bufs[more.head] = more
			e.d.kick(netRxQ)
			if fr := e.recvFrames(1, bufs); len(fr) != 1 || !bytes.Equal(fr[0].frame, big) {
				t.Fatalf("original device after Resume: %+v", fr)
			}
		})
	}
}

// TestVsockDeviceState: a restored vsock hands out host ports after the
// saved device's (the guest may still hold sockets of its connections),
// unless a connection raced the restore; bad state bytes are refused.
func TestVsockDeviceState(t *testing.T) {
	newV := func() *Vsock {
		v, err := NewVsock(VsockConfig{GuestCID: testGuestCID, UDS: filepath.Join(t.TempDir(), "v.sock")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		return v
	}
	a, b := newV(), newV()
	if a.nextPort < vsockFirstHostPort || b.nextPort < vsockFirstHostPort {
		t.Fatalf("first host ports %d, %d below %d", a.nextPort, b.nextPort, vsockFirstHostPort)
	}
	a.nextPort += 5
	st := a.saveDevice()
	if err := b.checkDevice(st); err != nil {
		t.Fatal(err)
	}
	b.loadDevice(st)
	if b.nextPort != a.nextPort {
		t.Errorf("restored next port %d, want the saved %d", b.nextPort, a.nextPort)
	}
	c := newV()
	key := connKey{c.nextPort, 9}
	c.conns[key] = &vconn{} // a connection that raced the restore
	before := c.nextPort
	c.loadDevice(st)
	delete(c.conns, key)
	if c.nextPort != before {
		t.Errorf("a device with a connection moved its ports to %d", c.nextPort)
	}
	for _, bad := range [][]byte{{1}, make([]byte, 5)} {
		if err := b.checkDevice(bad); err == nil {
			t.Errorf("state %x accepted", bad)
		}
	}
}
