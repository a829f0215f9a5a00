package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hyperhq/hyperd-go/internal/netns"
)

// TestE2ENetwork: pod networks through hyperd (--network cni, the default
// network it writes: hyper0, 192.168.123.0/24). hyperd runs in a network
// namespace this test creates, which is the pods' "host": the bridge, the
// iptables rules and every test packet stay there. Two pods talk TCP and
// UDP by address; the host reaches a pod by address and a pod reaches the
// gateway; a pod's requested address and MAC are what it sees; resolv.conf
// comes from dns, dnsSearch and dnsOptions; counters grow; bad interfaces
// and services are refused; and nothing is left after delete, nor after
// hyperd is killed -9 and restarted.
func TestE2ENetwork(t *testing.T) {
	requireHost(t)
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("CNI plugins missing (Debian's containernetworking-plugins, scripts/setup.sh): %v", err)
		}
	}
	bin := binaries(t)
	tmp := t.TempDir()
	ns := filepath.Join(tmp, "hostns")
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	defer netns.Remove(ns)
	in := func(fn func() error) {
		t.Helper()
		if err := netns.Do(ns, fn); err != nil {
			t.Fatal(err)
		}
	}
	in(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	driver := suiteDriver()
	root, sock := filepath.Join(tmp, "root"), filepath.Join(tmp, "hyper.sock")
	conf := filepath.Join(tmp, "cni")
	if driver == "kvm" {
		// the nested runner's L1 has no iptables: the same network
		// without masquerade, firewall and portmap (which the local run
		// of this test covers with the default conflist)
		os.MkdirAll(conf, 0o755)
		min := `{"cniVersion":"1.0.0","name":"hyperd","plugins":[{"type":"bridge","bridge":"hyper0","isGateway":true,"hairpinMode":true,` +
			`"ipam":{"type":"host-local","ranges":[[{"subnet":"192.168.123.0/24","gateway":"192.168.123.1"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"` + filepath.Join(tmp, "root", "network", "ipam") + `"}}]}`
		if err := os.WriteFile(filepath.Join(conf, "10-hyperd.conflist"), []byte(min), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	flags := append(driverFlags(t, driver), "--network", "cni", "--cni-conf-dir", conf)
	d := startDaemonIn(t, ns, bin, root, sock, driver, flags...)
	defer func() {
		if t.Failed() {
			t.Logf("hyperd log tail:\n%s", d.log())
		}
		// pods outlive a stopped daemon: remove them, even after a failure
		for _, id := range []string{"net-a", "net-b"} {
			d.c.RemovePod(context.Background(), id)
		}
		d.signal(syscall.SIGTERM)
	}()
	ctx := ctxT(t, 10*time.Minute)
	d.loadUDPEcho()
	if b, err := os.ReadFile(filepath.Join(conf, "10-hyperd.conflist")); err != nil || !strings.Contains(string(b), `"hyper0"`) {
		t.Fatalf("the default network was not written: %v %s", err, b)
	}

	// --- bad requests: nothing is created
	d.expect("POST", "/pod/create", `{"id":"two-if","interfaces":[{"ip":"192.168.123.5"},{"ip":"192.168.123.6"}],"containers":[{"image":"udpecho"}]}`, 400, "one")
	d.expect("POST", "/pod/create", `{"id":"bad-mac","interfaces":[{"mac":"zz:zz"}],"containers":[{"image":"udpecho"}]}`, 400, "mac")
	d.expect("POST", "/pod/create", `{"id":"svc","services":[{"serviceip":"10.0.0.1","serviceport":80,"protocol":"tcp"}],"containers":[{"image":"udpecho"}]}`, 400, "services")
	d.expect("POST", "/pod/create", `{"id":"opt","dnsOptions":["nd ots"],"containers":[{"image":"udpecho"}]}`, 400, "dns")

	// --- pod a serves TCP (nc) and UDP (udpecho); pod b asked for its
	// address, MAC and DNS
	start := func(id, body string) {
		t.Helper()
		if _, err := d.c.CreatePod(ctx, []byte(body)); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		if err := d.c.StartPod(ctx, id); err != nil {
			t.Fatalf("start %s: %v\n%s", id, err, d.log())
		}
	}
	start("net-a", `{"id":"net-a","containers":[
		{"name":"tcp-a","image":"udpecho","command":["nc","-ll","-p","7000","-e","echo","hello from a"]},
		{"name":"udp-a","image":"udpecho","command":["udpecho","7001"]}]}`)
	start("net-b", `{"id":"net-b","interfaces":[{"ip":"192.168.123.77","mac":"52:54:00:aa:bb:cc","ifname":"eth0"}],
		"dns":["10.0.0.53"],"dnsSearch":["example.org"],"dnsOptions":["ndots:2"],
		"containers":[{"name":"b","image":"udpecho","command":["sleep","1000"]}]}`)
	ipA := podIP(t, d, "net-a")
	if ipB := podIP(t, d, "net-b"); ipB != "192.168.123.77" {
		t.Errorf("pod b's address %s, want the requested 192.168.123.77", ipB)
	}
	if !strings.HasPrefix(ipA, "192.168.123.") || ipA == "192.168.123.1" {
		t.Fatalf("pod a's address %q, want one in 192.168.123.0/24", ipA)
	}
	hctl := func(args ...string) string {
		t.Helper()
		out, err := d.hyperctl(bin, args...)
		if err != nil {
			t.Errorf("hyperctl %v: %v\n%s", args, err, out)
		}
		return out
	}
	// TCP and UDP, pod b -> pod a by address
	if out := retry(t, func() (string, error) { return d.hyperctl(bin, "exec", "b", "nc", ipA, "7000") }); !strings.Contains(out, "hello from a") {
		t.Errorf("TCP from pod b to pod a: %q", out)
	}
	if out := hctl("exec", "b", "udpecho", "ask", ipA+":7001", "ping-udp"); !strings.Contains(out, "echo:ping-udp") {
		t.Errorf("UDP from pod b to pod a: %q", out)
	}
	if out := hctl("info", "net-b"); !strings.Contains(out, `"192.168.123.77"`) {
		t.Errorf("hyperctl info lacks pod b's address: %s", out)
	}
	// inside pod b: its address, MAC and resolv.conf
	if out := hctl("exec", "b", "cat", "/sys/class/net/eth0/address"); strings.TrimSpace(out) != "52:54:00:aa:bb:cc" {
		t.Errorf("pod b's MAC inside: %q", out)
	}
	if out := hctl("exec", "b", "ip", "-o", "addr", "show", "eth0"); !strings.Contains(out, "192.168.123.77/24") {
		t.Errorf("pod b's address inside: %q", out)
	}
	rc := hctl("exec", "b", "cat", "/etc/resolv.conf")
	for _, want := range []string{"nameserver 10.0.0.53", "search example.org", "options ndots:2"} {
		if !strings.Contains(rc, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, rc)
		}
	}
	// the host reaches pod a by address
	var got string
	in(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ipA, "7000"), 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		got = string(buf[:n])
		return nil
	})
	if !strings.Contains(got, "hello from a") {
		t.Errorf("host to pod a: %q", got)
	}
	// pod b reaches the gateway (the host side of hyper0)
	var gw net.Listener
	in(func() error {
		var err error
		gw, err = net.Listen("tcp", "192.168.123.1:0")
		return err
	})
	go func() {
		for {
			c, err := gw.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello from the host"))
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(gw.Addr().String())
	if out := hctl("exec", "b", "nc", "192.168.123.1", port); !strings.Contains(out, "hello from the host") {
		t.Errorf("pod b to the gateway: %q", out)
	}
	gw.Close()
	// counters
	b := d.expect("GET", "/pod/stats?podId=net-b", "", 200, `"interfaces"`)
	var st struct {
		Network struct {
			Interfaces []struct {
				Name    string  `json:"name"`
				RxBytes *uint64 `json:"rx_bytes"`
				TxBytes *uint64 `json:"tx_bytes"`
			} `json:"interfaces"`
		} `json:"network"`
	}
	if err := json.Unmarshal([]byte(b), &st); err != nil {
		t.Fatalf("/pod/stats: %v: %s", err, b)
	}
	if is := st.Network.Interfaces; len(is) != 1 || is[0].Name != "eth0" || is[0].RxBytes == nil || *is[0].RxBytes == 0 || is[0].TxBytes == nil || *is[0].TxBytes == 0 {
		t.Errorf("pod b's network counters: %s", b)
	}

	// --- kill -9 and restart: the pods keep their addresses and networks
	d.signal(syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	d = startDaemonIn(t, ns, bin, root, sock, driver, flags...)
	for _, id := range []string{"net-a", "net-b"} {
		// reattaches run in the background
		for i := 0; ; i++ {
			pi, err := d.c.PodInfo(ctx, id)
			if err == nil && pi.Status.Reason != "Reattaching" {
				if pi.Status.Phase != "Running" {
					t.Fatalf("pod %s after the restart: %+v", id, pi.Status)
				}
				break
			}
			if i > 600 {
				t.Fatalf("pod %s still reattaching after a minute: %+v %v", id, pi, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if ip := podIP(t, d, "net-a"); ip != ipA {
		t.Errorf("after restart pod a's address %q, want %s", ip, ipA)
	}
	if out := retry(t, func() (string, error) { return d.hyperctl(bin, "exec", "b", "nc", ipA, "7000") }); !strings.Contains(out, "hello from a") {
		t.Errorf("TCP from pod b to pod a after the restart: %q", out)
	}

	// --- delete: nothing left (namespaces, veths, leases, CNI cache)
	for _, id := range []string{"net-a", "net-b"} {
		d.expect("DELETE", "/pod?podId="+id, "", 200, id)
	}
	leftovers := func() []string {
		var left []string
		for _, dir := range []string{"network/netns", "network/cache/results", "network/ipam/hyperd"} {
			ents, _ := os.ReadDir(filepath.Join(root, dir))
			for _, e := range ents {
				if e.Name() != "lock" && e.Name() != "last_reserved_ip.0" {
					left = append(left, dir+"/"+e.Name())
				}
			}
		}
		in(func() error {
			ls, err := netlink.LinkList()
			for _, l := range ls {
				if strings.HasPrefix(l.Attrs().Name, "veth") {
					left = append(left, "veth "+l.Attrs().Name)
				}
			}
			return err
		})
		return left
	}
	deadline := time.Now().Add(30 * time.Second)
	for l := leftovers(); len(l) > 0; l = leftovers() {
		if time.Now().After(deadline) {
			t.Fatalf("left after delete: %v", l)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// podIP is the pod's first address from /pod/info.
func podIP(t *testing.T, d *daemon, id string) string {
	t.Helper()
	pi, err := d.c.PodInfo(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(pi.Status.PodIP) == 0 {
		t.Fatalf("pod %s has no podIP: %+v", id, pi.Status)
	}
	return pi.Status.PodIP[0]
}

// retry runs f until it succeeds, up to 10 times a second apart (a server
// just started in a container may not listen yet).
func retry(t *testing.T, f func() (string, error)) string {
	t.Helper()
	var out string
	var err error
	for i := 0; i < 10; i++ {
		if out, err = f(); err == nil {
			return out
		}
		time.Sleep(time.Second)
	}
	t.Errorf("%v: %s", err, out)
	return out
}
