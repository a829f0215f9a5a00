package kvmdrv

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/internal/netns"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// TestPlumbNetwork: in a pod namespace holding a veth "eth0" (its peer in
// a second namespace, the "host"), plumbNetwork creates an up tap with
// the veth's MTU and redirects every frame both ways between the two, and
// returns the vm run flags with the tap's fd and the MAC. Frames are read
// from and written to the tap's fd as the VMM would (after a
// virtio_net_hdr, 10 bytes until the VMM sets 12). Both namespaces are
// the test's own.
func TestPlumbNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (network namespaces, taps); run it as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Fatalf("/dev/net/tun: %v", err)
	}
	dir := t.TempDir()
	pod, host := filepath.Join(dir, "pod"), filepath.Join(dir, "host")
	for _, p := range []string{pod, host} {
		if err := netns.Create(p); err != nil {
			t.Fatal(err)
		}
		defer netns.Remove(p)
	}
	const mac = "52:54:00:01:02:03"
	var peerIndex int
	if err := netns.Do(host, func() error {
		hw, _ := netlinkMAC(mac)
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "peer", MTU: 1450}, PeerName: "eth0", PeerHardwareAddr: hw}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		l, err := netlink.LinkByName("peer")
		if err != nil {
			return err
		}
		peerIndex = l.Attrs().Index
		e, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		fd, err := os.Open(pod)
		if err != nil {
			return err
		}
		defer fd.Close()
		if err := netlink.LinkSetNsFd(e, int(fd.Fd())); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(pod, func() error {
		e, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(e)
	}); err != nil {
		t.Fatal(err)
	}
	n := &sandbox.Network{Netns: pod, Interfaces: []sandbox.Interface{{Name: "eth0", MAC: mac, Addrs: []string{"10.1.1.2/24"}}}}
	files, args, err := plumbNetwork(n, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(files) != 1 || strings.Join(args, " ") != "--net fd=3,mac="+mac+",mtu=1450" {
		t.Fatalf("files %d, args %q", len(files), args)
	}
	tap := files[0]
	if err := netns.Do(pod, func() error {
		l, err := netlink.LinkByName("tap0_eth0")
		if err != nil {
			return err
		}
		if l.Attrs().MTU != 1450 || l.Attrs().Flags&1 == 0 {
			t.Errorf("tap mtu %d flags %v; want 1450, up", l.Attrs().MTU, l.Attrs().Flags)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// host -> pod: a broadcast frame sent on the peer comes out of the tap
	frame := append(append(bytes.Repeat([]byte{0xff}, 6), 0x02, 0, 0, 0, 0, 1), 0x88, 0xb5) // local experimental ethertype
	frame = append(frame, []byte("hello tap, from the host side")...)
	send := func() error {
		return netns.Do(host, func() error { return sendRaw(peerIndex, frame) })
	}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 65536)
		for {
			k, err := tap.Read(buf)
			if err != nil {
				return
			}
			if k > 10 && bytes.Contains(buf[10:k], []byte("hello tap")) {
				got <- append([]byte(nil), buf[10:k]...)
				return
			}
		}
	}()
	var in []byte
	for i := 0; i < 20 && in == nil; i++ {
		if err := send(); err != nil {
			t.Fatal(err)
		}
		select {
		case in = <-got:
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !bytes.Equal(in, frame) {
		t.Fatalf("the tap did not get the host's frame (got %x)", in)
	}
	// pod -> host: a frame written to the tap leaves through the veth
	rx := func() uint64 {
		var c uint64
		netns.Do(host, func() error {
			l, err := netlink.LinkByIndex(peerIndex)
			if err == nil && l.Attrs().Statistics != nil {
				c = l.Attrs().Statistics.RxPackets
			}
			return err
		})
		return c
	}
	before := rx()
	out := append(make([]byte, 10), frame...) // an empty virtio_net_hdr, then the frame
	if _, err := tap.Write(out); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for rx() == before {
		if time.Now().After(deadline) {
			t.Fatal("a frame written to the tap never reached the host side of the veth")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func netlinkMAC(s string) (net.HardwareAddr, error) { return net.ParseMAC(s) }

// sendRaw sends an Ethernet frame out of interface index ifIndex (in the
// calling thread's namespace) through a packet socket.
func sendRaw(ifIndex int, frame []byte) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifIndex, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
}
