// This file tests the tap backend: adoption errors anywhere, and, as root
// only, real taps inside a new network namespace (the machine's own
// network is never touched): adopting fds opened with various flags, and
// the device exchanging ARP and UDP with the namespace's kernel.

package virtio

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestAdoptTapErrors(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	for _, fd := range []int{-1, 1 << 20, p[0]} {
		if tp, err := AdoptTap(fd); err == nil {
			tp.Close()
			t.Errorf("AdoptTap(%d) accepted", fd)
		} else {
			t.Logf("AdoptTap(%d): %v", fd, err)
		}
	}
	if _, err := OpenTap("a-name-longer-than-15"); err == nil {
		t.Error("OpenTap accepted a long name")
	}
}

// enterNewNetns moves the test goroutine's thread into a fresh network
// namespace for good (the thread is never unlocked: it exits with the
// test), so taps it creates never touch the machine's network.
func enterNewNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a tap in a new network namespace)")
	}
	if _, err := os.Stat(tunDevice); err != nil {
		t.Skipf("no %s: %v", tunDevice, err)
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("unshare(CLONE_NEWNET): %v", err)
	}
}

// TestTapAdopt opens taps the way another process would and adopts them.
func TestTapAdopt(t *testing.T) {
	enterNewNetns(t)
	open := func(flags uint16) int {
		fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		ifr, _ := unix.NewIfreq("hdadopt0")
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			t.Fatalf("TUNSETIFF %#x: %v", flags, err)
		}
		return fd
	}
	for _, c := range []struct {
		flags uint16
		ok    bool
		vnet  bool
	}{
		{unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR, true, true},
		{unix.IFF_TAP | unix.IFF_NO_PI, true, false},
		{unix.IFF_TAP | unix.IFF_VNET_HDR, false, false},
		{unix.IFF_TUN | unix.IFF_NO_PI, false, false},
	} {
		fd := open(c.flags)
		if ifr, _ := unix.NewIfreq(""); c.flags&unix.IFF_NO_PI == 0 && unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr) == nil && ifr.Uint16()&unix.IFF_NO_PI != 0 {
			t.Logf("flags %#x: this kernel's TUNGETIFF reports IFF_NO_PI anyway (%#x): case skipped", c.flags, ifr.Uint16())
			unix.Close(fd)
			continue
		}
		tp, err := AdoptTap(fd)
		if (err == nil) != c.ok {
			t.Errorf("flags %#x: AdoptTap: %v, want ok=%v", c.flags, err, c.ok)
		}
		if err != nil {
			unix.Close(fd)
			continue
		}
		if tp.Name() != "hdadopt0" || tp.VnetHdr() != c.vnet {
			t.Errorf("flags %#x: name %q vnet %v", c.flags, tp.Name(), tp.VnetHdr())
		}
		if c.vnet {
			if sz, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ); err != nil || sz != NetHdrSize {
				t.Errorf("vnet header size %d, %v", sz, err)
			}
			if tp.GuestOffloads() != netGuestOffloads {
				t.Errorf("offloads %#x", tp.GuestOffloads())
			}
		}
		tp.Close()
	}
	fd, _ := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0) // not attached
	if _, err := AdoptTap(fd); err == nil {
		t.Error("adopted an unattached tun fd")
	}
	unix.Close(fd)
}

// TestTapExchange runs the device over a real tap in a new network
// namespace: the guest sends a UDP datagram with a partial checksum to
// the host's socket, answers the host's ARP request and receives its
// datagram, with the guest offloads negotiated and without.
func TestTapExchange(t *testing.T) {
	enterNewNetns(t)
	hostIP, guestIP := net.IPv4(10, 99, 0, 1).To4(), net.IPv4(10, 99, 0, 2).To4()
	guestMAC := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	for _, accept := range []uint64{allNetFeatures, allNetFeatures &^ netGuestOffloads} {
		tp, err := OpenTap("hdtap0")
		if err != nil {
			t.Fatal(err)
		}
		if !tp.VnetHdr() || tp.GuestOffloads()&NetFGuestCsum == 0 {
			t.Fatalf("tap vnet %v offloads %#x", tp.VnetHdr(), tp.GuestOffloads())
		}
		ifUp(t, "hdtap0", hostIP)
		ifc, err := net.InterfaceByName("hdtap0")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: hostIP})
		if err != nil {
			t.Fatal(err)
		}
		hostPort := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
		mem := newTestMemory()
		irq := &countIRQ{}
		tr, dev, err := NewNetMMIO(mem, irq, tp, NetConfig{MAC: guestMAC, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close(); dev.Close() })
		e := &netEnv{t: t, dev: dev, tr: tr, d: newDriver(t, mem, tr, irq)}
		e.d.negotiate(accept, 64)
		bufs := map[uint16]chainBufs{}
		for range 32 {
			cb := e.d.post(netRxQ, false, wseg(2048))
			bufs[cb.head] = cb
		}
		e.d.kick(netRxQ)

		// guest → host, checksum left to the host when CSUM is on
		f, h := udpFrame(ifc.HardwareAddr, guestMAC, guestIP, hostIP, 4000, hostPort, []byte("ping"), true)
		e.d.post(netTxQ, false, rseg(cat(hdrBytes(h), f)))
		e.d.kick(netTxQ)
		buf := make([]byte, 64)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil || string(buf[:n]) != "ping" || !from.IP.Equal(guestIP) || from.Port != 4000 {
			t.Fatalf("host read %q from %v: %v", buf[:n], from, err)
		}

		// host → guest: ARP first, then the datagram
		if _, err := conn.WriteToUDP([]byte("pong"), &net.UDPAddr{IP: guestIP, Port: 4000}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for got := false; !got; {
			if time.Now().After(deadline) {
				t.Fatal("no datagram from the host")
			}
			for _, fr := range e.recvFrames(1, bufs) {
				p := fr.frame
				switch {
				case len(p) >= 42 && binary.BigEndian.Uint16(p[12:]) == 0x0806 && binary.BigEndian.Uint16(p[20:]) == 1 && bytes.Equal(p[38:42], guestIP):
					e.d.post(netTxQ, false, rseg(cat(hdrBytes(NetHdr{}), arpReply(p, guestMAC))))
					e.d.kick(netTxQ)
				case len(p) >= 46 && binary.BigEndian.Uint16(p[12:]) == 0x0800 && p[23] == 17 && bytes.Equal(p[30:34], guestIP):
					if fr.hdr.Flags&NetHdrFNeedsCsum != 0 {
						if accept&NetFGuestCsum == 0 {
							t.Error("NEEDS_CSUM to a driver without GUEST_CSUM")
						}
						completeChecksum(p, fr.hdr.CsumStart, fr.hdr.CsumOffset)
					}
					t.Logf("datagram header %+v", fr.hdr)
					if string(p[42:]) != "pong" || !udpChecksumOK(p) {
						t.Errorf("datagram %q, header %+v, checksum ok %v", p[42:], fr.hdr, udpChecksumOK(p))
					}
					got = true
				}
			}
			for range e.d.takeUsed(netTxQ) {
			}
			cb := e.d.post(netRxQ, false, wseg(2048))
			bufs[cb.head] = cb
			e.d.kick(netRxQ)
		}
		if st := dev.Stats(); st.TxPackets < 2 || st.RxPackets < 2 || st.TxDropped+st.RxDropped != 0 {
			t.Errorf("stats %+v", st)
		}
		conn.Close()
		tr.Close()
		dev.Close() // the tap goes away with its fd
	}
}

// ifUp gives the interface ip/24 and brings it up (on this thread's
// network namespace).
func ifUp(t *testing.T, name string, ip net.IP) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	for _, step := range []struct {
		req  uint
		addr net.IP
	}{{unix.SIOCSIFADDR, ip}, {unix.SIOCSIFNETMASK, net.IPv4(255, 255, 255, 0).To4()}} {
		ifr, _ := unix.NewIfreq(name)
		ifr.SetInet4Addr(step.addr)
		if err := unix.IoctlIfreq(s, step.req, ifr); err != nil {
			t.Fatalf("ioctl %#x: %v", step.req, err)
		}
	}
	ifr, _ := unix.NewIfreq(name)
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
}

// udpFrame builds Ethernet/IPv4/UDP; with partial the UDP checksum holds
// only the pseudo-header sum and the header asks for NEEDS_CSUM.
func udpFrame(dst, src net.HardwareAddr, sip, dip net.IP, sport, dport uint16, payload []byte, partial bool) ([]byte, NetHdr) {
	be := binary.BigEndian
	f := make([]byte, 42+len(payload))
	copy(f, dst)
	copy(f[6:], src)
	be.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	be.PutUint16(ip[2:], uint16(20+8+len(payload)))
	copy(ip[12:], sip)
	copy(ip[16:], dip)
	completeChecksum(ip, 0, 10)
	u := f[34:]
	be.PutUint16(u[0:], sport)
	be.PutUint16(u[2:], dport)
	be.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	pseudo := pseudoSum(f)
	be.PutUint16(u[6:], pseudo)
	if !partial {
		completeChecksum(f, 34, 6)
		return f, NetHdr{}
	}
	return f, NetHdr{Flags: NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}
}

// pseudoSum is the folded IPv4 pseudo-header sum of a UDP frame.
func pseudoSum(f []byte) uint16 {
	sum := uint32(17) + uint32(binary.BigEndian.Uint16(f[38:])) // protocol, UDP length
	for i := 26; i < 34; i += 2 {                               // source and destination
		sum += uint32(binary.BigEndian.Uint16(f[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// udpChecksumOK verifies the UDP checksum of an Ethernet/IPv4/UDP frame.
func udpChecksumOK(f []byte) bool {
	g := append([]byte(nil), f...)
	want := binary.BigEndian.Uint16(g[40:])
	binary.BigEndian.PutUint16(g[40:], pseudoSum(g))
	completeChecksum(g, 34, 6)
	got := binary.BigEndian.Uint16(g[40:])
	return got == want || want == 0xffff && got == 0 || want == 0 && got == 0xffff
}

// arpReply answers the ARP request frame req for the guest.
func arpReply(req []byte, mac net.HardwareAddr) []byte {
	r := make([]byte, 42)
	copy(r, req[6:12])
	copy(r[6:], mac)
	copy(r[12:], req[12:22]) // EtherType, htype, ptype, hlen, plen, op (fixed below)
	binary.BigEndian.PutUint16(r[20:], 2)
	copy(r[22:], mac)
	copy(r[28:], req[38:42]) // our IP: the request's target
	copy(r[32:], req[22:32]) // requester's MAC and IP
	return r
}
