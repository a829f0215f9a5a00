package network

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hyperhq/hyperd-go/internal/netns"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// The tests run every CNI operation from a network namespace the test
// creates (the "host" of the pods: hyper0 and the iptables rules live
// there), so the machine's own network is never touched.

func requireCNI(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests need root (network namespaces, CNI plugins); run them as root")
	}
	for _, p := range []string{"bridge", "host-local", "firewall", "portmap"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			t.Fatalf("CNI plugin %s missing (Debian's containernetworking-plugins, scripts/setup.sh): %v", p, err)
		}
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("iptables missing (the bridge plugin's ipMasq and the firewall plugin use it): install Debian's iptables")
	}
}

type env struct {
	t    *testing.T
	host string // the test's "host" namespace
	dir  string
	m    *Manager
}

func newEnv(t *testing.T) *env {
	requireCNI(t)
	dir := t.TempDir()
	e := &env{t: t, host: filepath.Join(dir, "hostns"), dir: dir}
	if err := netns.Create(e.host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Remove(e.host) })
	e.in(func() error { return loopbackUp() })
	e.m = e.manager()
	return e
}

func (e *env) manager() *Manager {
	var m *Manager
	e.in(func() error {
		var err error
		m, err = New(Options{ConfDir: filepath.Join(e.dir, "conf"), StateDir: filepath.Join(e.dir, "state")})
		return err
	})
	return m
}

// in runs fn in the test's host namespace (plugins it starts inherit it).
func (e *env) in(fn func() error) {
	e.t.Helper()
	if err := netns.Do(e.host, fn); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) setup(id string, req sandbox.InterfaceRequest) (*sandbox.Network, error) {
	var n *sandbox.Network
	err := netns.Do(e.host, func() error {
		var err error
		n, err = e.m.Setup(context.Background(), id, req)
		return err
	})
	return n, err
}

func (e *env) teardown(m *Manager, id string) {
	e.t.Helper()
	e.in(func() error { return m.Teardown(context.Background(), id) })
}

// hostLinks are the host namespace's interface names.
func (e *env) hostLinks() []string {
	var names []string
	e.in(func() error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	return names
}

// leases are the host-local IPAM's leased addresses.
func (e *env) leases() []string {
	var out []string
	ents, _ := os.ReadDir(filepath.Join(e.dir, "state", "ipam", DefaultName))
	for _, en := range ents {
		if net.ParseIP(en.Name()) != nil {
			out = append(out, en.Name())
		}
	}
	return out
}

func addrIP(t *testing.T, n *sandbox.Network) string {
	t.Helper()
	if len(n.Interfaces) != 1 || len(n.Interfaces[0].Addrs) == 0 {
		t.Fatalf("network %+v: want one interface with an address", n)
	}
	ip, _, _ := strings.Cut(n.Interfaces[0].Addrs[0], "/")
	return ip
}

// TestPodsTalk: two pods get distinct addresses on the default network,
// a default route via the gateway, and reach each other over TCP and UDP
// and the gateway; teardown leaves no namespace, veth, lease or cache.
func TestPodsTalk(t *testing.T) {
	e := newEnv(t)
	a, err := e.setup("pod-a", sandbox.InterfaceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.setup("pod-b", sandbox.InterfaceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ipA, ipB := addrIP(t, a), addrIP(t, b)
	_, subnet, _ := net.ParseCIDR(DefaultSubnet)
	if ipA == ipB || !subnet.Contains(net.ParseIP(ipA)) || !subnet.Contains(net.ParseIP(ipB)) {
		t.Fatalf("addresses %s and %s: want two in %s", ipA, ipB, DefaultSubnet)
	}
	if len(a.Routes) == 0 || a.Routes[0].Dst != "0.0.0.0/0" || a.Routes[0].Gateway != DefaultGateway {
		t.Errorf("routes %+v: want the default route via %s", a.Routes, DefaultGateway)
	}
	if a.Name != DefaultName || a.Netns == "" || a.Interfaces[0].Name != IfName || a.Interfaces[0].MAC == "" || a.Interfaces[0].MTU == 0 {
		t.Errorf("network %+v", a)
	}
	// TCP and UDP from a to b, and TCP from a to the gateway (the host)
	for _, proto := range []string{"tcp", "udp"} {
		var ln net.Listener
		var pc net.PacketConn
		if err := netns.Do(b.Netns, func() error {
			var err error
			if proto == "tcp" {
				ln, err = net.Listen("tcp", ipB+":0")
			} else {
				pc, err = net.ListenPacket("udp", ipB+":0")
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var addr string
		if ln != nil {
			addr = ln.Addr().String()
			go func() {
				c, err := ln.Accept()
				if err == nil {
					c.Write([]byte("hello over tcp"))
					c.Close()
				}
			}()
		} else {
			addr = pc.LocalAddr().String()
			go func() {
				buf := make([]byte, 64)
				n, from, err := pc.ReadFrom(buf)
				if err == nil {
					pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
				}
			}()
		}
		var got string
		if err := netns.Do(a.Netns, func() error {
			c, err := net.DialTimeout(proto, addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if proto == "udp" {
				c.Write([]byte("ping"))
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			got = string(buf[:n])
			return err
		}); err != nil {
			t.Fatalf("%s from pod a to %s: %v", proto, addr, err)
		}
		if want := map[string]string{"tcp": "hello over tcp", "udp": "echo ping"}[proto]; got != want {
			t.Errorf("%s: got %q, want %q", proto, got, want)
		}
		if ln != nil {
			ln.Close()
		} else {
			pc.Close()
		}
	}
	var gw net.Listener
	e.in(func() error {
		var err error
		gw, err = net.Listen("tcp", DefaultGateway+":0")
		return err
	})
	go func() {
		if c, err := gw.Accept(); err == nil {
			c.Close()
		}
	}()
	if err := netns.Do(a.Netns, func() error {
		c, err := net.DialTimeout("tcp", gw.Addr().String(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Errorf("pod a to the gateway %s: %v", gw.Addr(), err)
	}
	gw.Close()
	if got := e.m.Pods(); strings.Join(got, ",") != "pod-a,pod-b" {
		t.Errorf("Pods() = %v", got)
	}
	if c, err := e.m.Counters("pod-a", IfName); err != nil || c.TxPackets == 0 || c.RxBytes == 0 {
		t.Errorf("counters of pod a: %+v %v; want traffic both ways", c, err)
	}
	for _, id := range []string{"pod-a", "pod-b"} {
		e.in(func() error { return e.m.Check(context.Background(), id) })
	}
	veths := func() int {
		n := 0
		for _, l := range e.hostLinks() {
			if strings.HasPrefix(l, "veth") {
				n++
			}
		}
		return n
	}
	if n := veths(); n != 2 {
		t.Errorf("%d veths on the host side, want 2", n)
	}
	e.teardown(e.m, "pod-a")
	e.teardown(e.m, "pod-b")
	e.teardown(e.m, "pod-b") // again: nothing left to release, no error
	if n := veths(); n != 0 {
		t.Errorf("%d veths left after teardown: %v", n, e.hostLinks())
	}
	if l := e.leases(); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
	if p := e.m.Pods(); len(p) != 0 {
		t.Errorf("pods with a network left: %v", p)
	}
	if netns.Is(a.Netns) {
		t.Error("pod a's namespace is still pinned")
	}
}

// TestRequest: the pod's address, MAC, MTU, name and gateway are what it
// asked for; a request the network cannot meet fails and leaves nothing.
func TestRequest(t *testing.T) {
	e := newEnv(t)
	req := sandbox.InterfaceRequest{IfName: "net0", IP: "192.168.123.77", MAC: "52:54:00:12:34:56", MTU: 1400, Gateway: DefaultGateway, Bridge: DefaultBridge}
	n, err := e.setup("custom", req)
	if err != nil {
		t.Fatal(err)
	}
	i := n.Interfaces[0]
	if i.Name != "net0" || i.MAC != "52:54:00:12:34:56" || i.MTU != 1400 || i.Addrs[0] != "192.168.123.77/24" {
		t.Errorf("interface %+v; want net0 52:54:00:12:34:56 mtu 1400 192.168.123.77/24", i)
	}
	if err := netns.Do(n.Netns, func() error {
		l, err := netlink.LinkByName("net0")
		if err != nil {
			return err
		}
		if l.Attrs().HardwareAddr.String() != req.MAC || l.Attrs().MTU != 1400 {
			t.Errorf("in the pod: %s mtu %d", l.Attrs().HardwareAddr, l.Attrs().MTU)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.teardown(e.m, "custom")

	for _, tc := range []struct {
		name string
		req  sandbox.InterfaceRequest
		want string
	}{
		{"other bridge", sandbox.InterfaceRequest{Bridge: "docker0"}, `bridge "docker0"`},
		{"address outside the range", sandbox.InterfaceRequest{IP: "10.1.2.3"}, "10.1.2.3"},
		{"gateway off the subnet", sandbox.InterfaceRequest{Gateway: "10.0.0.1"}, "not on the pod's subnet"},
		{"bad mac", sandbox.InterfaceRequest{MAC: "01:00:5e:00:00:01"}, "multicast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.setup("bad", tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Setup = %v, want an error with %q", err, tc.want)
			}
			if p := e.m.Pods(); len(p) != 0 {
				t.Errorf("left behind: %v", p)
			}
			if l := e.leases(); len(l) != 0 {
				t.Errorf("leases left: %v", l)
			}
		})
	}
}

// TestRestartRecovery: a daemon that died leaves a pod's network; the
// next one lists it and releases it with the configuration cached at ADD,
// even after the conflist was removed.
func TestRestartRecovery(t *testing.T) {
	e := newEnv(t)
	n, err := e.setup("survivor", sandbox.InterfaceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ip := addrIP(t, n)
	if err := os.Remove(filepath.Join(e.dir, "conf", DefaultConfFile)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(e.dir, "conf", "20-other.conflist"), DefaultConfList(filepath.Join(e.dir, "other-ipam")), 0o644)
	m2 := e.manager() // a new daemon
	if p := m2.Pods(); len(p) != 1 || p[0] != "survivor" {
		t.Fatalf("the new manager sees %v", p)
	}
	e.in(func() error { return m2.Check(context.Background(), "survivor") })
	e.teardown(m2, "survivor")
	if l := e.leases(); len(l) != 0 {
		t.Errorf("lease of %s not released: %v", ip, l)
	}
	if p := m2.Pods(); len(p) != 0 {
		t.Errorf("left: %v", p)
	}
}

// TestDefaultConf: the default network is written only into an empty
// configuration directory.
func TestDefaultConf(t *testing.T) {
	requireCNI(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	os.MkdirAll(conf, 0o755)
	own := []byte(`{"cniVersion":"1.0.0","name":"mine","plugins":[{"type":"bridge","bridge":"br-mine","ipam":{"type":"host-local","subnet":"10.88.0.0/16"}}]}`)
	os.WriteFile(filepath.Join(conf, "50-mine.conflist"), own, 0o644)
	m, err := New(Options{ConfDir: conf, StateDir: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != "mine" {
		t.Errorf("network %q, want the configured one", m.Name())
	}
	if _, err := os.Stat(filepath.Join(conf, DefaultConfFile)); !os.IsNotExist(err) {
		t.Errorf("the default network was written next to an existing one: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	m, err = New(Options{ConfDir: empty, StateDir: filepath.Join(dir, "state2")})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != DefaultName {
		t.Errorf("network %q, want %q", m.Name(), DefaultName)
	}
	b, _ := os.ReadFile(filepath.Join(empty, DefaultConfFile))
	for _, want := range []string{`"bridge": "hyper0"`, DefaultSubnet, DefaultGateway, `"ipMasq": true`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("default conflist lacks %s:\n%s", want, b)
		}
	}
	if _, err := New(Options{ConfDir: empty}); err == nil {
		t.Error("New without a state dir succeeded")
	}
	if _, err := New(Options{ConfDir: empty, StateDir: filepath.Join(dir, "state4"), BinDirs: []string{filepath.Join(dir, "no-plugins")}}); err == nil || !strings.Contains(err.Error(), `"bridge" not found`) {
		t.Errorf("New without the plugins: %v, want the missing plugin named", err)
	}
	os.MkdirAll(filepath.Join(dir, "bad"), 0o755)
	os.WriteFile(filepath.Join(dir, "bad", "x.conflist"), []byte("{"), 0o644)
	if _, err := New(Options{ConfDir: filepath.Join(dir, "bad"), StateDir: filepath.Join(dir, "state3")}); err == nil {
		t.Error("a malformed conflist was accepted")
	}
}

// TestCollect: a network no sandbox of the driver uses (a daemon killed
// after the network's setup, before its sandbox's handle was saved) is
// released by Collect; one in use is kept.
func TestCollect(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"ghost", "live"} {
		if _, err := e.setup(id, sandbox.InterfaceRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	d := &Driver{M: e.m}
	d.setLive("live", true)
	e.in(func() error { d.Collect(context.Background()); return nil })
	if p := e.m.Pods(); len(p) != 1 || p[0] != "live" {
		t.Fatalf("after Collect: %v, want only the live pod's network", p)
	}
	if l := e.leases(); len(l) != 1 {
		t.Errorf("leases %v, want the live pod's only", l)
	}
	e.teardown(e.m, "live")
}
