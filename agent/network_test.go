package agent

import (
	"bytes"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestValidIfName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"eth0", true},
		{"a", true},
		{"abcdefghijklmno", true}, // 15
		{"abcdefghijklmnop", false},
		{"", false},
		{".", false},
		{"..", false},
		{"eth/0", false},
		{"eth:0", false},
		{"eth 0", false},
		{"eth\t0", false},
		{"eth\n", false},
		{"eth\x00", false},
		{"net-1_x.y", true},
	} {
		if got := validIfName(tt.name); got != tt.ok {
			t.Errorf("validIfName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

func TestParseNetwork(t *testing.T) {
	eth0 := protocol.Interface{Name: "eth0", MAC: "02:42:ac:11:00:02", MTU: 1500, Addrs: []string{"10.1.2.3/24", "fd00::3/64"}}
	eth1 := protocol.Interface{Name: "eth1", MAC: "02:42:ac:11:00:03", Addrs: []string{"192.168.5.6/16"}}
	ifs := func(in ...protocol.Interface) []protocol.Interface { return in }
	for _, tt := range []struct {
		name   string
		ifs    []protocol.Interface
		routes []protocol.Route
		err    string // substring of the bad_request message, "" = valid
		check  func(t *testing.T, ni []netIface, nr []netRoute)
	}{
		{name: "empty"},
		{name: "one interface", ifs: ifs(eth0), check: func(t *testing.T, ni []netIface, nr []netRoute) {
			if len(ni) != 1 || ni[0].name != "eth0" || ni[0].mac.String() != "02:42:ac:11:00:02" || ni[0].mtu != 1500 || len(ni[0].addrs) != 2 {
				t.Fatalf("%+v", ni)
			}
			if a := ni[0].addrs[0]; !a.IP.Equal(net.ParseIP("10.1.2.3")) || len(a.IP) != 4 || a.String() != "10.1.2.3/24" {
				t.Errorf("address %v (len %d): want the host address 10.1.2.3/24 in 4-byte form", a, len(a.IP))
			}
		}},
		{name: "bad name", ifs: ifs(protocol.Interface{Name: "eth/0", MAC: eth0.MAC}), err: "bad name"},
		{name: "empty name", ifs: ifs(protocol.Interface{MAC: eth0.MAC}), err: "bad name"},
		{name: "long name", ifs: ifs(protocol.Interface{Name: "abcdefghijklmnop", MAC: eth0.MAC}), err: "bad name"},
		{name: "space in name", ifs: ifs(protocol.Interface{Name: "e 0", MAC: eth0.MAC}), err: "bad name"},
		{name: "same name twice", ifs: ifs(eth0, protocol.Interface{Name: "eth0", MAC: eth1.MAC}), err: "given twice"},
		{name: "bad mac", ifs: ifs(protocol.Interface{Name: "eth0", MAC: "02:42:zz:11:00:02"}), err: "bad mac"},
		{name: "empty mac", ifs: ifs(protocol.Interface{Name: "eth0"}), err: "bad mac"},
		{name: "eui64 mac", ifs: ifs(protocol.Interface{Name: "eth0", MAC: "02:00:5e:10:00:00:00:01"}), err: "bad mac"},
		{name: "same mac twice", ifs: ifs(eth0, protocol.Interface{Name: "eth1", MAC: "02:42:AC:11:00:02"}), err: "given twice"},
		{name: "negative mtu", ifs: ifs(protocol.Interface{Name: "eth0", MAC: eth0.MAC, MTU: -1}), err: "bad mtu"},
		{name: "tiny mtu", ifs: ifs(protocol.Interface{Name: "eth0", MAC: eth0.MAC, MTU: 67}), err: "bad mtu"},
		{name: "huge mtu", ifs: ifs(protocol.Interface{Name: "eth0", MAC: eth0.MAC, MTU: 65536}), err: "bad mtu"},
		{name: "address without prefix", ifs: ifs(protocol.Interface{Name: "eth0", MAC: eth0.MAC, Addrs: []string{"10.1.2.3"}}), err: "bad address"},
		{name: "garbage address", ifs: ifs(protocol.Interface{Name: "eth0", MAC: eth0.MAC, Addrs: []string{"ten/8"}}), err: "bad address"},
		{name: "unspecified address", ifs: ifs(protocol.Interface{Name: "eth0", MAC: eth0.MAC, Addrs: []string{"0.0.0.0/8"}}), err: "not a host address"},
		{name: "multicast address", ifs: ifs(protocol.Interface{Name: "eth0", MAC: eth0.MAC, Addrs: []string{"224.0.0.1/24"}}), err: "not a host address"},
		{name: "default route via gateway in a subnet", ifs: ifs(eth0, eth1),
			routes: []protocol.Route{{Dst: "0.0.0.0/0", Gateway: "192.168.0.1"}, {Dst: "::/0", Gateway: "fd00::1"}},
			check: func(t *testing.T, ni []netIface, nr []netRoute) {
				if len(nr) != 2 || nr[0].iface != 1 || nr[0].onlink || !nr[0].gw.Equal(net.ParseIP("192.168.0.1")) || nr[0].dst.String() != "0.0.0.0/0" {
					t.Errorf("v4 default route: %+v", nr[0])
				}
				if nr[1].iface != 0 || nr[1].onlink || nr[1].dst.String() != "::/0" {
					t.Errorf("v6 default route: %+v", nr[1])
				}
			}},
		{name: "gateway outside every subnet is on-link on the first interface", ifs: ifs(eth0, eth1),
			routes: []protocol.Route{{Dst: "0.0.0.0/0", Gateway: "169.254.1.1"}},
			check: func(t *testing.T, ni []netIface, nr []netRoute) {
				if nr[0].iface != 0 || !nr[0].onlink {
					t.Errorf("%+v", nr[0])
				}
			}},
		{name: "route without gateway goes through the first interface", ifs: ifs(eth0, eth1),
			routes: []protocol.Route{{Dst: "10.96.0.0/12"}},
			check: func(t *testing.T, ni []netIface, nr []netRoute) {
				if nr[0].iface != 0 || nr[0].gw != nil || nr[0].onlink {
					t.Errorf("%+v", nr[0])
				}
			}},
		{name: "gateway route without interfaces", routes: []protocol.Route{{Dst: "10.0.0.0/8", Gateway: "192.168.1.1"}},
			check: func(t *testing.T, ni []netIface, nr []netRoute) {
				if nr[0].iface != -1 || nr[0].onlink {
					t.Errorf("%+v", nr[0])
				}
			}},
		{name: "on-link route without interfaces", routes: []protocol.Route{{Dst: "10.0.0.0/8"}}, err: "no gateway and no interface"},
		{name: "bad dst", ifs: ifs(eth0), routes: []protocol.Route{{Dst: "default", Gateway: "10.1.2.1"}}, err: "bad dst"},
		{name: "empty dst", ifs: ifs(eth0), routes: []protocol.Route{{Gateway: "10.1.2.1"}}, err: "bad dst"},
		{name: "dst not a network", ifs: ifs(eth0), routes: []protocol.Route{{Dst: "10.1.2.3/8"}}, err: "not a network address"},
		{name: "bad gateway", ifs: ifs(eth0), routes: []protocol.Route{{Dst: "0.0.0.0/0", Gateway: "10.1.2"}}, err: "bad gateway"},
		{name: "gateway of another family", ifs: ifs(eth0), routes: []protocol.Route{{Dst: "0.0.0.0/0", Gateway: "fd00::1"}}, err: "another address family"},
		{name: "unspecified gateway", ifs: ifs(eth0), routes: []protocol.Route{{Dst: "0.0.0.0/0", Gateway: "0.0.0.0"}}, err: "bad gateway"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ni, nr, perr := parseNetwork(tt.ifs, tt.routes)
			if tt.err != "" {
				if perr == nil {
					t.Fatalf("no error, want one with %q", tt.err)
				}
				if perr.Code != protocol.CodeBadRequest || !strings.Contains(perr.Message, tt.err) {
					t.Fatalf("error %v, want bad_request with %q", perr, tt.err)
				}
				return
			}
			if perr != nil {
				t.Fatal(perr)
			}
			if tt.check != nil {
				tt.check(t, ni, nr)
			}
		})
	}
}

// Invalid data is refused before any link is looked at, so this needs no
// privileges and touches no network namespace.
func TestConfigureNetworkValidatesFirst(t *testing.T) {
	perr := configureNetwork(nil, []protocol.Interface{{Name: "eth0", MAC: "02:42:ac:11:00:02"}}, []protocol.Route{{Dst: "0.0.0.0/0", Gateway: "nope"}}, 0, nil)
	if perr == nil || perr.Code != protocol.CodeBadRequest {
		t.Fatalf("got %v, want bad_request", perr)
	}
}

func TestResolvConf(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup protocol.PodSetup
		want  string
	}{
		{"nothing", protocol.PodSetup{}, ""},
		{"nameservers", protocol.PodSetup{DNS: []string{"8.8.8.8", "1.1.1.1"}}, "nameserver 8.8.8.8\nnameserver 1.1.1.1\n"},
		{"search", protocol.PodSetup{DNS: []string{"8.8.8.8"}, DNSSearch: []string{"a.svc", "b"}}, "nameserver 8.8.8.8\nsearch a.svc b\n"},
		{"options only", protocol.PodSetup{DNSOptions: []string{"ndots:5"}}, "options ndots:5\n"},
		{"all", protocol.PodSetup{DNS: []string{"10.96.0.10"}, DNSSearch: []string{"default.svc.cluster.local", "svc.cluster.local"}, DNSOptions: []string{"ndots:5", "timeout:2", "rotate"}},
			"nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5 timeout:2 rotate\n"},
	} {
		s := &Server{setup: tt.setup}
		if got := string(s.resolvConf()); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// podSetup refuses bad DNS entries (options included) before it sets the
// hostname or touches the network.
func TestPodSetupDNSValidation(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup protocol.PodSetup
	}{
		{"empty option", protocol.PodSetup{DNSOptions: []string{"ndots:5", ""}}},
		{"space in option", protocol.PodSetup{DNSOptions: []string{"ndots:5 rotate"}}},
		{"newline in option", protocol.PodSetup{DNSOptions: []string{"rotate\nnameserver 6.6.6.6"}}},
		{"tab in search", protocol.PodSetup{DNSSearch: []string{"a\tb"}}},
		{"empty nameserver", protocol.PodSetup{DNS: []string{""}}},
	} {
		s := &Server{}
		perr := s.podSetup(tt.setup)
		if perr == nil || perr.Code != protocol.CodeBadRequest || !strings.Contains(perr.Message, "bad dns entry") {
			t.Errorf("%s: %v, want bad_request bad dns entry", tt.name, perr)
		}
		if len(s.resolvConf()) != 0 {
			t.Errorf("%s: the refused setup was stored", tt.name)
		}
	}
	s := &Server{}
	if perr := s.podSetup(protocol.PodSetup{DNSOptions: []string{"ndots:2", "edns0"}}); perr != nil {
		t.Fatal(perr)
	}
	if got := string(s.resolvConf()); got != "options ndots:2 edns0\n" {
		t.Errorf("resolv.conf %q", got)
	}
}

// inNewNetns runs f on a goroutine whose thread is in a network namespace
// of its own, made for this test: the thread is never unlocked, so the Go
// runtime ends it with the goroutine and no other goroutine ever runs in
// that namespace, nor does f ever run in the machine's. f gets a netlink
// handle on the new namespace.
func inNewNetns(t *testing.T, f func(h *netlink.Handle)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a network namespace of its own, netlink link changes): run the agent tests as root")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		var before, after unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &before); err != nil {
			t.Errorf("stat netns: %v", err)
			return
		}
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare(CLONE_NEWNET): %v", err)
			return
		}
		if err := unix.Stat("/proc/thread-self/ns/net", &after); err != nil {
			t.Errorf("stat netns: %v", err)
			return
		}
		if before.Ino == after.Ino && before.Dev == after.Dev {
			t.Errorf("unshare(CLONE_NEWNET) left the thread in its network namespace")
			return
		}
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			t.Errorf("netlink handle: %v", err)
			return
		}
		defer h.Close()
		f(h)
	}()
	<-done
	if t.Failed() {
		t.FailNow()
	}
}

// addNIC adds a veth link name with hardware address mac, standing for
// the VM's NIC (this kernel may lack the dummy driver), and sets its peer
// ("p-"+name) up so that it has a carrier once it is up itself.
func addNIC(h *netlink.Handle, name, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return err
	}
	peer := "p-" + name
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: hw}, PeerName: peer}); err != nil {
		return err
	}
	pl, err := h.LinkByName(peer)
	if err != nil {
		return err
	}
	return h.LinkSetUp(pl)
}

// checkIface reports what differs between the link with mac and the
// wanted name, MTU, address, up state.
func checkIface(t *testing.T, h *netlink.Handle, mac, name string, mtu int, addr string) netlink.Link {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	link, err := h.LinkByName(name)
	if err != nil {
		t.Errorf("link %s: %v", name, err)
		return nil
	}
	a := link.Attrs()
	if !bytes.Equal(a.HardwareAddr, hw) {
		t.Errorf("link %s has mac %s, want %s", name, a.HardwareAddr, mac)
	}
	if a.MTU != mtu {
		t.Errorf("link %s: mtu %d, want %d", name, a.MTU, mtu)
	}
	if a.Flags&net.FlagUp == 0 {
		t.Errorf("link %s is not up", name)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Errorf("addresses of %s: %v", name, err)
	}
	found := false
	for _, ad := range addrs {
		if ad.IPNet.String() == addr {
			found = true
		}
	}
	if !found {
		t.Errorf("link %s: addresses %v, want %s among them", name, addrs, addr)
	}
	return link
}

// defaultRoute returns the IPv4 default route of link, nil for none.
func defaultRoute(t *testing.T, h *netlink.Handle, link netlink.Link) *netlink.Route {
	t.Helper()
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Errorf("routes: %v", err)
		return nil
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			return &r
		}
	}
	return nil
}

func TestConfigureNetworkNetns(t *testing.T) {
	inNewNetns(t, func(h *netlink.Handle) {
		const mac = "02:00:0a:09:08:07"
		if err := addNIC(h, "x0", mac); err != nil {
			t.Errorf("add veth link: %v", err)
			return
		}
		ifs := []protocol.Interface{{Name: "eth0", MAC: mac, MTU: 1400, Addrs: []string{"10.9.8.7/24", "fd09::7/64"}}}
		routes := []protocol.Route{{Dst: "0.0.0.0/0", Gateway: "10.9.8.1"}, {Dst: "172.30.0.0/16"}, {Dst: "::/0", Gateway: "fd09::1"}}
		for pass := 1; pass <= 2; pass++ { // the second setup must succeed too
			if perr := configureNetwork(h, ifs, routes, time.Second, nil); perr != nil {
				t.Errorf("setup %d: %v", pass, perr)
				return
			}
			link := checkIface(t, h, mac, "eth0", 1400, "10.9.8.7/24")
			if link == nil {
				return
			}
			checkIface(t, h, mac, "eth0", 1400, "fd09::7/64")
			if _, err := h.LinkByName("x0"); err == nil {
				t.Errorf("setup %d: x0 is still there", pass)
			}
			r := defaultRoute(t, h, link)
			if r == nil {
				t.Errorf("setup %d: no default route on eth0", pass)
			} else if !r.Gw.Equal(net.ParseIP("10.9.8.1")) {
				t.Errorf("setup %d: default route via %v, want 10.9.8.1", pass, r.Gw)
			}
			rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: &net.IPNet{IP: net.IPv4(172, 30, 0, 0).To4(), Mask: net.CIDRMask(16, 32)}}, netlink.RT_FILTER_DST)
			if err != nil || len(rs) != 1 || rs[0].LinkIndex != link.Attrs().Index || rs[0].Scope != netlink.SCOPE_LINK || rs[0].Gw != nil {
				t.Errorf("setup %d: route 172.30.0.0/16: %v %v, want one link-scope route on eth0", pass, rs, err)
			}
			rs, err = h.RouteList(link, netlink.FAMILY_V6)
			v6def := false
			for _, r := range rs {
				if (r.Dst == nil || r.Dst.String() == "::/0") && r.Gw.Equal(net.ParseIP("fd09::1")) {
					v6def = true
				}
			}
			if err != nil || !v6def {
				t.Errorf("setup %d: IPv6 routes of eth0 %v %v, want a default route via fd09::1", pass, rs, err)
			}
		}

		// a link with a MAC that never appears: bad_request naming the MAC,
		// after the wait
		start := time.Now()
		perr := configureNetwork(h, []protocol.Interface{{Name: "eth1", MAC: "02:00:00:00:00:99"}}, nil, 200*time.Millisecond, nil)
		took := time.Since(start)
		if perr == nil || perr.Code != protocol.CodeBadRequest || !strings.Contains(perr.Message, "02:00:00:00:00:99") {
			t.Errorf("unknown mac: %v, want bad_request naming 02:00:00:00:00:99", perr)
		}
		if took < 200*time.Millisecond || took > 2*time.Second {
			t.Errorf("unknown mac: failed after %v, want after the 200ms wait", took)
		}
	})
}

// A link that appears while the agent waits (a NIC probed late) is found.
func TestConfigureNetworkLateLink(t *testing.T) {
	inNewNetns(t, func(h *netlink.Handle) {
		const mac = "02:00:0a:09:08:08"
		go func() {
			time.Sleep(300 * time.Millisecond)
			// h is bound to the test namespace whatever thread this runs on
			addNIC(h, "late0", mac)
		}()
		if perr := configureNetwork(h, []protocol.Interface{{Name: "eth0", MAC: mac, Addrs: []string{"10.7.0.2/16"}}}, nil, 3*time.Second, nil); perr != nil {
			t.Errorf("%v", perr)
			return
		}
		checkIface(t, h, mac, "eth0", 1500, "10.7.0.2/16")
	})
}

// Two NICs whose names must be swapped; a name held by a link the setup
// does not name is a conflict.
func TestConfigureNetworkRenames(t *testing.T) {
	inNewNetns(t, func(h *netlink.Handle) {
		const macA, macB, macC = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
		for _, l := range []struct{ name, mac string }{{"eth1", macA}, {"eth0", macB}, {"net9", macC}} {
			if err := addNIC(h, l.name, l.mac); err != nil {
				t.Errorf("add %s: %v", l.name, err)
				return
			}
		}
		ifs := []protocol.Interface{
			{Name: "eth0", MAC: macA, Addrs: []string{"10.1.0.2/24"}},
			{Name: "eth1", MAC: macB, Addrs: []string{"10.2.0.2/24"}},
		}
		if perr := configureNetwork(h, ifs, []protocol.Route{{Dst: "0.0.0.0/0", Gateway: "169.254.1.1"}}, time.Second, nil); perr != nil {
			t.Errorf("swap: %v", perr)
			return
		}
		eth0 := checkIface(t, h, macA, "eth0", 1500, "10.1.0.2/24")
		checkIface(t, h, macB, "eth1", 1500, "10.2.0.2/24")
		if eth0 != nil {
			r := defaultRoute(t, h, eth0)
			if r == nil || !r.Gw.Equal(net.ParseIP("169.254.1.1")) || r.Flags&int(netlink.FLAG_ONLINK) == 0 {
				t.Errorf("default route %+v, want on-link via 169.254.1.1 on eth0", r)
			}
		}
		perr := configureNetwork(h, []protocol.Interface{{Name: "eth0", MAC: macC}}, nil, time.Second, nil)
		if perr == nil || perr.Code != protocol.CodeConflict {
			t.Errorf("rename onto a name held by an unnamed link: %v, want conflict", perr)
		}
		if _, err := h.LinkByName("net9"); err != nil {
			t.Errorf("the refused rename changed net9: %v", err)
		}
	})
}

func TestUnconfigured(t *testing.T) {
	addr := func(cidr string) netlink.Addr {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		return *a
	}
	for _, tt := range []struct {
		name  string
		addrs []netlink.Addr
		want  bool
	}{
		{"none", nil, true},
		{"IPv6 link-local", []netlink.Addr{addr("fe80::1/64")}, true},
		{"IPv4 link-local", []netlink.Addr{addr("169.254.3.4/16")}, true},
		{"both link-local", []netlink.Addr{addr("fe80::1/64"), addr("169.254.3.4/16")}, true},
		{"IPv4", []netlink.Addr{addr("10.0.0.2/24")}, false},
		{"IPv6 global beside link-local", []netlink.Addr{addr("fe80::1/64"), addr("fd00::2/64")}, false},
		{"loopback", []netlink.Addr{addr("127.0.0.1/8")}, false},
	} {
		if got := unconfigured(tt.addrs); got != tt.want {
			t.Errorf("%s: unconfigured = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// testNIC is configureNetwork's adoptable in the tests: veth links named
// nic* stand for a VM's virtio-net NICs (their peers p-* and other links
// do not). It asks the link's driver the way virtioNIC does.
func testNIC(l netlink.Link) bool {
	d, err := linkDriver(l.Attrs().Name)
	return err == nil && d == "veth" && strings.HasPrefix(l.Attrs().Name, "nic")
}

// A VM restored from a template has the template's NIC with the
// template's MAC: the one unconfigured NIC takes the MAC the setup names.
func TestConfigureNetworkAdopt(t *testing.T) {
	const (
		tmplA, tmplB = "02:00:00:00:aa:01", "02:00:00:00:aa:02" // template MACs
		podA, podB   = "02:00:00:00:bb:01", "02:00:00:00:bb:02" // the pod's
	)
	type link struct{ name, mac, addr string }
	for _, tt := range []struct {
		name  string
		links []link
		ifs   []protocol.Interface
		code  string // error code, "" = success
		err   string // substring of the error
		fast  bool   // the error comes before the wait ends
		want  map[string]string
	}{
		{name: "the template NIC takes the pod's MAC",
			links: []link{{"nic0", tmplA, ""}},
			ifs:   []protocol.Interface{{Name: "eth0", MAC: podA, MTU: 1400, Addrs: []string{"10.1.0.2/24"}}},
			want:  map[string]string{"eth0": podA}},
		{name: "a link-local address leaves it unconfigured",
			links: []link{{"nic0", tmplA, "fe80::5/64"}},
			ifs:   []protocol.Interface{{Name: "eth0", MAC: podA, Addrs: []string{"10.1.0.2/24"}}},
			want:  map[string]string{"eth0": podA}},
		{name: "a configured NIC is not taken",
			links: []link{{"nic0", tmplA, "10.9.0.1/24"}},
			ifs:   []protocol.Interface{{Name: "eth0", MAC: podA}},
			code:  protocol.CodeBadRequest, err: "nor an unconfigured NIC"},
		{name: "a link that is not a NIC is not taken",
			links: []link{{"other0", tmplA, ""}},
			ifs:   []protocol.Interface{{Name: "eth0", MAC: podA}},
			code:  protocol.CodeBadRequest, err: "no network interface with mac " + podA},
		{name: "two candidates are a conflict, at once",
			links: []link{{"nic0", tmplA, ""}, {"nic1", tmplB, ""}},
			ifs:   []protocol.Interface{{Name: "eth0", MAC: podA}},
			code:  protocol.CodeConflict, err: "2 unconfigured NICs could take it: nic", fast: true},
		{name: "a NIC with a MAC the setup names is not a candidate",
			links: []link{{"nic0", podB, ""}, {"nic1", tmplA, ""}},
			ifs: []protocol.Interface{
				{Name: "eth0", MAC: podA, Addrs: []string{"10.1.0.2/24"}},
				{Name: "eth1", MAC: podB, Addrs: []string{"10.2.0.2/24"}},
			},
			want: map[string]string{"eth0": podA, "eth1": podB}},
		{name: "a NIC an earlier interface took is not a candidate",
			links: []link{{"nic0", tmplA, ""}},
			ifs: []protocol.Interface{
				{Name: "eth0", MAC: podA},
				{Name: "eth1", MAC: podB},
			},
			code: protocol.CodeBadRequest, err: "no network interface with mac " + podB},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inNewNetns(t, func(h *netlink.Handle) {
				for _, l := range tt.links {
					if err := addNIC(h, l.name, l.mac); err != nil {
						t.Errorf("add %s: %v", l.name, err)
						return
					}
					if l.addr != "" {
						nl, _ := h.LinkByName(l.name)
						a, _ := netlink.ParseAddr(l.addr)
						a.Flags = unix.IFA_F_NODAD
						if err := h.AddrAdd(nl, a); err != nil {
							t.Errorf("address %s on %s: %v", l.addr, l.name, err)
							return
						}
					}
				}
				const wait = 300 * time.Millisecond
				for pass := 1; pass <= 2; pass++ { // the second setup must succeed too
					start := time.Now()
					perr := configureNetwork(h, tt.ifs, nil, wait, testNIC)
					took := time.Since(start)
					if tt.code != "" {
						if perr == nil || perr.Code != tt.code || !strings.Contains(perr.Message, tt.err) {
							t.Errorf("%v, want %s with %q", perr, tt.code, tt.err)
						}
						if tt.fast && took >= wait || !tt.fast && took < wait {
							t.Errorf("failed after %v (wait %v, fast %v)", took, wait, tt.fast)
						}
						return
					}
					if perr != nil {
						t.Errorf("setup %d: %v", pass, perr)
						return
					}
					for _, in := range tt.ifs {
						mtu := in.MTU
						if mtu == 0 {
							mtu = 1500
						}
						checkIface(t, h, tt.want[in.Name], in.Name, mtu, in.Addrs[0])
					}
				}
			})
		})
	}
}
