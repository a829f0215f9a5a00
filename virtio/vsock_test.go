// vsock_test.go tests the socket device through the guest driver of
// vsock_guest_test.go: connections both ways, credit, bad packets, events
// and reset, bulk data, many connections, and how connections end.
package virtio

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestVsockHostInitiated(t *testing.T) {
	g := newGuestVsock(t, 0)
	uc, br, req := g.hostConnect(1234)
	hp := req.h.SrcPort
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	// No OK before the guest answers.
	g.send(g.hdr(VsockOpResponse, 1234, hp), nil)
	line, err := br.ReadString('\n')
	if err != nil || line != fmt.Sprintf("OK %d\n", hp) {
		t.Fatalf("handshake line %q, %v", line, err)
	}
	// host → guest
	uc.Write([]byte("ping"))
	p := g.expect(VsockOpRW)
	if string(p.data) != "ping" || p.h.SrcPort != hp || p.h.DstPort != 1234 || p.h.BufAlloc != vsockBufAlloc {
		t.Fatalf("RW %+v %q", p.h, p.data)
	}
	// guest → host
	h := g.hdr(VsockOpRW, 1234, hp)
	h.FwdCnt = 4
	g.send(h, []byte("pong"))
	if got := readN(t, br, 4); string(got) != "pong" {
		t.Fatalf("host read %q", got)
	}
	// Guest credit request is answered with an update carrying fwd_cnt.
	// (The writer counts the bytes just after the host read them: retry.)
	for i := 0; ; i++ {
		g.send(g.hdr(VsockOpCreditRequest, 1234, hp), nil)
		u := g.expect(VsockOpCreditUpdate)
		if u.h.FwdCnt == 4 && u.h.BufAlloc == vsockBufAlloc {
			break
		}
		if i == 100 {
			t.Fatalf("credit update %+v", u.h)
		}
		time.Sleep(time.Millisecond)
	}
	// Host half-closes: the guest sees SHUTDOWN(SEND) and can still send.
	uc.(*net.UnixConn).CloseWrite()
	if s := g.expect(VsockOpShutdown); s.h.Flags != VsockShutdownSend {
		t.Fatalf("shutdown flags %d", s.h.Flags)
	}
	h = g.hdr(VsockOpRW, 1234, hp)
	g.send(h, []byte("after"))
	if got := readN(t, br, 5); string(got) != "after" {
		t.Fatalf("host read %q", got)
	}
	// Guest closes: SHUTDOWN both → the device answers RST, the host sees EOF.
	sh := g.hdr(VsockOpShutdown, 1234, hp)
	sh.Flags = VsockShutdownRcv | VsockShutdownSend
	g.send(sh, nil)
	g.expect(VsockOpRst)
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("host read %v %v after close, want EOF", b, err)
	}
	// The connection is gone: further packets get a RST.
	g.send(g.hdr(VsockOpRW, 1234, hp), []byte("x"))
	g.expect(VsockOpRst)
}

func TestVsockGuestInitiated(t *testing.T) {
	g := newGuestVsock(t, 0)
	uc := g.guestConnect()
	g.send(g.hdr(VsockOpRW, 40000, 5000), []byte("hello host"))
	if got := readN(t, uc, 10); string(got) != "hello host" {
		t.Fatalf("host read %q", got)
	}
	uc.Write([]byte("hello guest"))
	if p := g.expect(VsockOpRW); string(p.data) != "hello guest" {
		t.Fatalf("guest read %q", p.data)
	}
	// RST from the guest closes the host connection, no reply.
	g.send(g.hdr(VsockOpRst, 40000, 5000), nil)
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := uc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("host read %d %v, want EOF", n, err)
	}
	g.expectNothing()
	// Nobody listening on port 5001: RST.
	g.send(g.hdr(VsockOpRequest, 40001, 5001), nil)
	if r := g.expect(VsockOpRst); r.h.SrcPort != 5001 || r.h.DstPort != 40001 {
		t.Fatalf("RST %+v", r.h)
	}
}

// TestVsockDataBeforeClose: what the guest sent just before its
// connection ended reaches the host socket, then EOF. The guest's RST comes
// in the same batch as its data, before the device's writer could run (a
// guest that writes, closes and powers off); Close is the VMM stopping.
func TestVsockDataBeforeClose(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(g *guestVsock, rw rxPkt)
	}{
		{"guest RST", func(g *guestVsock, rw rxPkt) {
			g.sendBatch(rw, rxPkt{h: g.hdr(VsockOpRst, 40000, 5000)})
		}},
		{"guest SHUTDOWN and RST", func(g *guestVsock, rw rxPkt) {
			sh := g.hdr(VsockOpShutdown, 40000, 5000)
			sh.Flags = VsockShutdownRcv | VsockShutdownSend
			g.sendBatch(rw, rxPkt{h: sh}, rxPkt{h: g.hdr(VsockOpRst, 40000, 5000)})
		}},
		{"device closed", func(g *guestVsock, rw rxPkt) {
			g.sendBatch(rw)
			g.v.Close()
		}},
		{"device reset", func(g *guestVsock, rw rxPkt) {
			g.sendBatch(rw)
			g.v.Reset()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuestVsock(t, 0)
			uc := g.guestConnect()
			last := bytes.Repeat([]byte("last words "), 300)
			tc.close(g, rxPkt{h: g.hdr(VsockOpRW, 40000, 5000), data: last})
			uc.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(uc)
			if err != nil || !bytes.Equal(got, last) {
				t.Fatalf("host read %d bytes (%v), want the guest's %d then EOF", len(got), err, len(last))
			}
		})
	}
}

// TestVsockCreditHostToGuest: the device never sends more than the guest's
// advertised buffer space and asks for credit when it runs out.
func TestVsockCreditHostToGuest(t *testing.T) {
	g := newGuestVsock(t, 0)
	uc, br, req := g.hostConnect(77)
	hp := req.h.SrcPort
	resp := g.hdr(VsockOpResponse, 77, hp)
	resp.BufAlloc = 8
	g.send(resp, nil)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "OK ") {
		t.Fatalf("line %q", line)
	}
	uc.Write([]byte("0123456789abcdefghij"))
	var got []byte
	p := g.expect(VsockOpRW)
	got = append(got, p.data...)
	if len(p.data) != 8 {
		t.Fatalf("sent %d bytes with 8 bytes of credit", len(p.data))
	}
	g.expect(VsockOpCreditRequest)
	g.expectNothing()
	fwd := uint32(0)
	for len(got) < 20 {
		fwd = uint32(len(got))
		cu := g.hdr(VsockOpCreditUpdate, 77, hp)
		cu.BufAlloc, cu.FwdCnt = 8, fwd
		g.send(cu, nil)
		p := g.expect(VsockOpRW)
		if len(p.data) > 8 {
			t.Fatalf("sent %d bytes with 8 bytes of credit", len(p.data))
		}
		got = append(got, p.data...)
		if len(got) < 20 {
			g.expect(VsockOpCreditRequest)
		}
	}
	if string(got) != "0123456789abcdefghij" {
		t.Fatalf("guest got %q", got)
	}
}

// TestVsockCreditGuestToHost: the device returns credit as the host
// consumes data, and resets a guest that overruns its credit.
func TestVsockCreditGuestToHost(t *testing.T) {
	g := newGuestVsock(t, 0)
	_, br, req := g.hostConnect(88)
	hp := req.h.SrcPort
	g.send(g.hdr(VsockOpResponse, 88, hp), nil)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "OK ") {
		t.Fatalf("line %q", line)
	}
	chunk := bytes.Repeat([]byte{'z'}, 4096)
	total := 0
	done := make(chan error, 1)
	const want = vsockBufAlloc/2 + 4096
	go func() {
		_, err := io.CopyN(io.Discard, br, want)
		done <- err
	}()
	for total < want {
		g.send(g.hdr(VsockOpRW, 88, hp), chunk)
		total += len(chunk)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cu := g.expect(VsockOpCreditUpdate)
	if cu.h.FwdCnt < vsockBufAlloc/2 {
		t.Fatalf("credit update fwd_cnt %d", cu.h.FwdCnt)
	}
	// Overrun: with the host not reading, send more than buf_alloc.
	var rst bool
	for i := 0; i < 4<<20/4096 && !rst; i++ { // socket buffer + buf_alloc
		g.send(g.hdr(VsockOpRW, 88, hp), chunk)
		g.pending = append(g.pending, g.d.takeUsed(vsockRxQ)...)
		for len(g.pending) > 0 {
			if p := g.recv(); p.h.Op == VsockOpRst {
				rst = true
			}
		}
	}
	if !rst {
		t.Fatal("no RST after exceeding credit")
	}
}

func TestVsockHostConnectFailures(t *testing.T) {
	t.Run("guest refuses", func(t *testing.T) {
		g := newGuestVsock(t, 0)
		uc, br, req := g.hostConnect(9)
		g.send(g.hdr(VsockOpRst, 9, req.h.SrcPort), nil)
		uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := br.ReadString('\n'); err != io.EOF || line != "" {
			t.Fatalf("got %q %v, want EOF", line, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		g := newGuestVsock(t, 200*time.Millisecond)
		uc, br, req := g.hostConnect(10)
		uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := br.ReadString('\n'); err != io.EOF || line != "" {
			t.Fatalf("got %q %v, want EOF", line, err)
		}
		if r := g.expect(VsockOpRst); r.h.SrcPort != req.h.SrcPort {
			t.Fatalf("RST %+v", r.h)
		}
		// A late RESPONSE is answered with RST.
		g.send(g.hdr(VsockOpResponse, 10, req.h.SrcPort), nil)
		g.expect(VsockOpRst)
	})
	for _, line := range []string{"HELLO 1\n", "CONNECT\n", "CONNECT x\n", "CONNECT 99999999999\n", strings.Repeat("A", 100)} {
		t.Run(fmt.Sprintf("bad line %.12q", line), func(t *testing.T) {
			g := newGuestVsock(t, time.Second)
			uc, err := net.Dial("unix", g.uds)
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			uc.Write([]byte(line))
			uc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := uc.Read(make([]byte, 8)); err == nil {
				t.Fatalf("read %d bytes, want the connection closed", n)
			}
			g.expectNothing()
		})
	}
}

func TestVsockBadPackets(t *testing.T) {
	g := newGuestVsock(t, 0)
	for _, c := range []struct {
		name    string
		h       VsockHeader
		wantRst bool
	}{
		{"wrong source CID", VsockHeader{SrcCID: 9, DstCID: 2, Type: 1, Op: VsockOpRequest}, false},
		{"other destination CID", VsockHeader{SrcCID: testGuestCID, DstCID: 7, Type: 1, Op: VsockOpRequest, SrcPort: 1, DstPort: 2}, true},
		{"seqpacket", VsockHeader{SrcCID: testGuestCID, DstCID: 2, Type: 2, Op: VsockOpRequest}, true},
		{"unknown connection", VsockHeader{SrcCID: testGuestCID, DstCID: 2, Type: 1, Op: VsockOpRW}, true},
		{"invalid op", VsockHeader{SrcCID: testGuestCID, DstCID: 2, Type: 1, Op: 99}, true},
		{"rst to unknown", VsockHeader{SrcCID: testGuestCID, DstCID: 2, Type: 1, Op: VsockOpRst}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			g.send(c.h, nil)
			if c.wantRst {
				if r := g.recv(); r.h.Op != VsockOpRst || r.h.SrcCID != c.h.DstCID || r.h.DstCID != testGuestCID || r.h.DstPort != c.h.SrcPort || r.h.SrcPort != c.h.DstPort {
					t.Fatalf("RST %+v", r.h)
				}
			} else {
				g.expectNothing()
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		var b [VsockHeaderSize]byte
		h := g.hdr(VsockOpRequest, 1, 2)
		h.Len = 100 // no payload follows
		h.Marshal(b[:])
		for _, n := range []int{0, 10, 43, 44} {
			g.d.post(vsockTxQ, false, rseg(b[:n]))
			g.d.kick(vsockTxQ)
			if u := g.d.takeUsed(vsockTxQ); len(u) != 1 {
				t.Fatalf("used %v", u)
			}
		}
		g.expectNothing()
	})
}

func TestVsockEventQueueAndReset(t *testing.T) {
	g := newGuestVsock(t, 0)
	uc, br, req := g.hostConnect(11)
	g.send(g.hdr(VsockOpResponse, 11, req.h.SrcPort), nil)
	br.ReadString('\n')
	if err := g.v.TransportReset(); err == nil {
		t.Fatal("transport reset without an event buffer")
	}
	ev := g.d.post(vsockEvQ, false, wseg(4))
	g.d.kick(vsockEvQ)
	if err := g.v.TransportReset(); err != nil {
		t.Fatal(err)
	}
	u := g.d.takeUsed(vsockEvQ)
	if len(u) != 1 || u[0].id != uint32(ev.head) || u[0].len != 4 {
		t.Fatalf("event used %v", u)
	}
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("host conn after transport reset: %v", err)
	}
	// Device reset (Status = 0) drops connections too and stops the device.
	uc2, br2, _ := g.hostConnect(12)
	g.d.wr(RegStatus, 0)
	uc2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br2.ReadByte(); err != io.EOF {
		t.Fatalf("host conn after device reset: %v", err)
	}
}

// TestVsockBulk moves 1 MiB each way at once over a guest-initiated
// connection, with the guest following Linux's credit rules: it sends only
// within the device's advertised credit and returns credit as it consumes.
func TestVsockBulk(t *testing.T) {
	const size = 1 << 20
	g := newGuestVsock(t, 0)
	ln, err := net.Listen("unix", g.uds+"_6000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	toGuest := make([]byte, size)
	toHost := make([]byte, size)
	for i := range toGuest {
		toGuest[i] = byte(i * 7)
		toHost[i] = byte(i * 13)
	}
	hostErr := make(chan error, 2)
	go func() {
		uc, err := ln.Accept()
		if err != nil {
			hostErr <- err
			return
		}
		go func() {
			_, err := uc.Write(toGuest)
			hostErr <- err
		}()
		got := make([]byte, size)
		uc.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(uc, got); err != nil {
			hostErr <- err
			return
		}
		if !bytes.Equal(got, toHost) {
			hostErr <- fmt.Errorf("host received corrupted data")
			return
		}
		hostErr <- nil
	}()
	const gp, hp = 41000, 6000
	const guestBuf = 256 << 10
	req := g.hdr(VsockOpRequest, gp, hp)
	req.BufAlloc = guestBuf
	g.send(req, nil)
	g.expect(VsockOpResponse)
	var (
		recvd, reported   uint32
		sent              uint32
		peerAlloc, peerFw uint32 = vsockBufAlloc, 0
		got               []byte
	)
	hdr := func(op uint16) VsockHeader {
		h := g.hdr(op, gp, hp)
		h.BufAlloc, h.FwdCnt = guestBuf, recvd
		return h
	}
	for sent < size || len(got) < size {
		for sent < size && peerAlloc-(sent-peerFw) >= 4096 {
			g.send(hdr(VsockOpRW), toHost[sent:sent+4096])
			sent += 4096
		}
		p := g.recv()
		peerAlloc, peerFw = p.h.BufAlloc, p.h.FwdCnt
		switch p.h.Op {
		case VsockOpRW:
			got = append(got, p.data...)
			recvd += uint32(len(p.data))
			if recvd-reported >= 64<<10 || len(got) == size {
				reported = recvd
				g.send(hdr(VsockOpCreditUpdate), nil)
			}
		case VsockOpCreditRequest:
			reported = recvd
			g.send(hdr(VsockOpCreditUpdate), nil)
		case VsockOpCreditUpdate:
		default:
			t.Fatalf("unexpected %+v", p.h)
		}
		if uint32(len(got)) > recvd || recvd-reported > guestBuf {
			t.Fatalf("device overran the guest's credit")
		}
	}
	if !bytes.Equal(got, toGuest) {
		t.Fatal("guest received corrupted data")
	}
	for i := 0; i < 2; i++ {
		if err := <-hostErr; err != nil {
			t.Fatal(err)
		}
	}
}

// TestVsockManyConnsAndClose opens several connections in both directions
// at once, checks each stream is routed to its own peer, then closes the
// device and checks that no goroutine is left behind.
func TestVsockManyConnsAndClose(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		g := newGuestVsock(t, 0)
		ln, err := net.Listen("unix", g.uds+"_7000")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		const n = 5
		// Guest-initiated connections from guest ports 50000+i.
		hostSide := map[uint32]net.Conn{}
		for i := uint32(0); i < n; i++ {
			g.send(g.hdr(VsockOpRequest, 50000+i, 7000), nil)
			uc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			r := g.expect(VsockOpResponse)
			hostSide[r.h.DstPort] = uc
		}
		// Host-initiated connections to guest port 80.
		type hc struct {
			uc net.Conn
			br *bufio.Reader
			hp uint32
		}
		var hcs []hc
		for i := 0; i < n; i++ {
			uc, br, req := g.hostConnect(80)
			g.send(g.hdr(VsockOpResponse, 80, req.h.SrcPort), nil)
			if line, _ := br.ReadString('\n'); line != fmt.Sprintf("OK %d\n", req.h.SrcPort) {
				t.Fatalf("line %q", line)
			}
			hcs = append(hcs, hc{uc, br, req.h.SrcPort})
		}
		seen := map[uint32]bool{}
		for _, h := range hcs {
			if seen[h.hp] {
				t.Fatalf("host port %d reused", h.hp)
			}
			seen[h.hp] = true
		}
		// Guest → host on every connection, each with its own payload.
		for port, uc := range hostSide {
			g.send(g.hdr(VsockOpRW, port, 7000), []byte(fmt.Sprintf("to-%d", port)))
			if got := readN(t, uc, len(fmt.Sprintf("to-%d", port))); string(got) != fmt.Sprintf("to-%d", port) {
				t.Fatalf("port %d: host got %q", port, got)
			}
		}
		for _, h := range hcs {
			g.send(g.hdr(VsockOpRW, 80, h.hp), []byte(fmt.Sprintf("hc-%d", h.hp)))
			want := fmt.Sprintf("hc-%d", h.hp)
			if got := readN(t, h.br, len(want)); string(got) != want {
				t.Fatalf("host conn %d got %q", h.hp, got)
			}
		}
		// Host → guest: packets carry the right ports.
		for _, h := range hcs {
			h.uc.Write([]byte("x"))
			p := g.expect(VsockOpRW)
			if p.h.SrcPort != h.hp || p.h.DstPort != 80 {
				t.Fatalf("RW %+v for host port %d", p.h, h.hp)
			}
		}
		g.tr.Close()
		g.v.Close()
		for _, h := range hcs {
			h.uc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := h.br.ReadByte(); err != io.EOF {
				t.Fatalf("host conn after Close: %v", err)
			}
		}
		if _, err := net.Dial("unix", g.uds); err == nil {
			t.Fatal("socket still accepting after Close")
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
	}
}

func TestVsockConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []VsockConfig{
		{GuestCID: 2, UDS: filepath.Join(dir, "a")},
		{GuestCID: 0, UDS: filepath.Join(dir, "a")},
		{GuestCID: 1 << 40, UDS: filepath.Join(dir, "a")},
		{GuestCID: 3},
		{GuestCID: 3, UDS: filepath.Join(dir, "missing", "a")},
	} {
		if v, err := NewVsock(c); err == nil {
			v.Close()
			t.Errorf("NewVsock(%+v) succeeded", c)
		}
	}
	// A regular file at the path is not deleted.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if v, err := NewVsock(VsockConfig{GuestCID: 3, UDS: file}); err == nil {
		v.Close()
		t.Error("listened over a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("regular file clobbered")
	}
	// A stale socket is replaced.
	sock := filepath.Join(dir, "s")
	ln, _ := net.Listen("unix", sock)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	v, err := NewVsock(VsockConfig{GuestCID: 3, UDS: sock})
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	v.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
}
