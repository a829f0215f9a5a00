// This file owns BenchmarkPodNetwork: pod networks through hyperd, per
// sandbox driver (local, kvm), in a network namespace the benchmark
// creates: pod-to-pod TCP throughput both ways and round-trip time
// (udpecho tcpserve / tcpbench), and the time pod networks add to a pod's
// create+start (--network cni against --network none, same driver).

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hyperhq/hyperd-go/internal/netns"
)

// podNetResult is what one driver's run measured.
type podNetResult struct {
	txMBps, rxMBps, rttUs float64
	startCNI, startNone   time.Duration // medians of pod create+start
	cniAdd                time.Duration // median of hyperd's own "pod network up ... took="
}

var (
	podNetMu  sync.Mutex
	podNetRes = map[string]podNetResult{}
)

// podNetEnvInt is the positive integer in $name, or def.
func podNetEnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkPodNetwork runs hyperd --network cni in a network namespace it
// creates, starts a server pod (udpecho tcpserve) and a client pod, and
// measures from the client (hyperctl exec udpecho tcpbench, to the
// server's pod address): TCP throughput client->server (tx) and
// server->client (rx), HYPERD_NETBENCH_MIB MiB each (default 64; MB/s are
// 10^6 bytes), and the median of HYPERD_NETBENCH_PINGS one-byte round
// trips (default 200); each a median of b.N runs (at least 3). Then pod
// create+start times with --network cni and, from a second hyperd on the
// same driver, with --network none (HYPERD_PODNET_STARTS each, default 5,
// median, the first pods of each daemon untimed so image preparation is
// not counted): their difference is what pod network set-up adds to a pod
// start; hyperd's own log says how much of it is CNI ADD.
//
// It runs for the local driver and, where the host has vmx/svm (the nested
// runner's L1; scripts/bench-nested.sh), the kvm driver, and prints the
// ratios kvm/local. With HYPERD_E2E_DRIVER=kvm a kvm half that cannot run
// fails instead of skipping. Where the host has no iptables (L1) the
// network is the default one without masquerade, firewall and portmap (as
// TestE2ENetwork's kvm run), for both drivers.
func BenchmarkPodNetwork(b *testing.B) {
	for _, driver := range []string{"local", "kvm"} {
		b.Run(driver, func(b *testing.B) { benchPodNetwork(b, driver) })
	}
	podNetMu.Lock()
	defer podNetMu.Unlock()
	for _, driver := range []string{"local", "kvm"} {
		if r, ok := podNetRes[driver]; ok {
			fmt.Printf("pod network %s: pod-to-pod tx %.1f MB/s, rx %.1f MB/s, RTT %.0f µs; pod create+start with cni %v, none %v: network set-up adds %v (x%.2f; CNI ADD alone, hyperd's log: %v)\n",
				driver, r.txMBps, r.rxMBps, r.rttUs, r.startCNI.Round(time.Millisecond), r.startNone.Round(time.Millisecond),
				(r.startCNI - r.startNone).Round(time.Millisecond), float64(r.startCNI)/float64(r.startNone), r.cniAdd)
		}
	}
	l, lok := podNetRes["local"]
	k, kok := podNetRes["kvm"]
	switch {
	case lok && kok:
		fmt.Printf("pod network kvm/local: tx %.2f, rx %.2f, RTT %.2f; network set-up added to a pod start: kvm %v, local %v; CNI ADD (hyperd's log): kvm %v, local %v, kvm/local %.2f\n",
			k.txMBps/l.txMBps, k.rxMBps/l.rxMBps, k.rttUs/l.rttUs,
			(k.startCNI - k.startNone).Round(time.Millisecond), (l.startCNI - l.startNone).Round(time.Millisecond),
			k.cniAdd, l.cniAdd, float64(k.cniAdd)/float64(l.cniAdd))
		if k.startCNI <= k.startNone {
			fmt.Println("pod network kvm: the set-up time is below the spread of pod VM starts here (see the starts logged); CNI ADD is what hyperd's log measured")
		}
	case lok:
		fmt.Println("pod network: kvm not run on this host (no vmx/svm; scripts/bench-nested.sh runs it in the nested runner's L1)")
	}
}

func benchPodNetwork(b *testing.B, driver string) {
	if driver == "kvm" && !hardwareVirt() {
		if suiteDriver() == "kvm" {
			b.Fatal("HYPERD_E2E_DRIVER=kvm, but this host has no vmx/svm: a pod VM cannot boot here")
		}
		b.Skip("kvm: not run here: no vmx/svm; make bench runs it in the nested runner's L1 (scripts/bench-nested.sh)")
	}
	if os.Geteuid() != 0 {
		b.Fatal("needs root: it creates a network namespace and runs hyperd")
	}
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("CNI plugins missing (Debian's containernetworking-plugins, scripts/setup.sh): %v", err)
		}
	}
	mib := podNetEnvInt("HYPERD_NETBENCH_MIB", 64)
	pings := podNetEnvInt("HYPERD_NETBENCH_PINGS", 200)
	starts := podNetEnvInt("HYPERD_PODNET_STARTS", 5)
	bin := binaries(b)
	tmp := b.TempDir()
	ns := filepath.Join(tmp, "hostns")
	if err := netns.Create(ns); err != nil {
		b.Fatal(err)
	}
	defer netns.Remove(ns)
	if err := netns.Do(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		b.Fatal(err)
	}
	conf := filepath.Join(tmp, "cni")
	root := filepath.Join(tmp, "root")
	if _, err := exec.LookPath("iptables"); err != nil {
		// no iptables (the nested runner's L1): the default network
		// without masquerade, firewall and portmap
		os.MkdirAll(conf, 0o755)
		min := `{"cniVersion":"1.0.0","name":"hyperd","plugins":[{"type":"bridge","bridge":"hyper0","isGateway":true,"hairpinMode":true,` +
			`"ipam":{"type":"host-local","ranges":[[{"subnet":"192.168.123.0/24","gateway":"192.168.123.1"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"` + filepath.Join(root, "network", "ipam") + `"}}]}`
		if err := os.WriteFile(filepath.Join(conf, "10-hyperd.conflist"), []byte(min), 0o644); err != nil {
			b.Fatal(err)
		}
		b.Logf("no iptables here: the network is bridge + host-local only")
	}
	ctx := context.Background()
	wait := slow(5 * time.Minute)

	// --- hyperd --network cni: two pods, traffic, then timed starts
	d := startDaemonIn(b, ns, bin, root, filepath.Join(tmp, "hyper.sock"), driver,
		append(driverFlags(b, driver), "--network", "cni", "--cni-conf-dir", conf)...)
	stopped := false
	stop := func(d *daemon, ids ...string) {
		for _, id := range ids {
			c, cancel := context.WithTimeout(ctx, wait)
			d.c.RemovePod(c, id)
			cancel()
		}
		d.signal(syscall.SIGTERM)
	}
	defer func() {
		if !stopped {
			if b.Failed() {
				b.Logf("hyperd log tail:\n%s", d.log())
			}
			stop(d, "pn-a", "pn-b")
		}
	}()
	d.loadUDPEcho()
	startPod := func(d *daemon, id, body string) time.Duration {
		b.Helper()
		c, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		t0 := time.Now()
		if _, err := d.c.CreatePod(c, []byte(body)); err != nil {
			b.Fatalf("%s: create %s: %v", driver, id, err)
		}
		if err := d.c.StartPod(c, id); err != nil {
			b.Fatalf("%s: start %s: %v\n%s", driver, id, err, d.log())
		}
		return time.Since(t0)
	}
	pod := func(id, ctr string, cmd ...string) string {
		q := make([]string, len(cmd))
		for i, c := range cmd {
			q[i] = strconv.Quote(c)
		}
		return `{"id":"` + id + `","resource":{"vcpu":1,"memory":128},"containers":[{"name":"` + ctr + `","image":"udpecho","command":[` + strings.Join(q, ",") + `]}]}`
	}
	startPod(d, "pn-a", pod("pn-a", "pn-srv", "udpecho", "tcpserve", "7100"))
	startPod(d, "pn-b", pod("pn-b", "pn-cli", "sleep", "100000"))
	pi, err := d.c.PodInfo(ctx, "pn-a")
	if err != nil || len(pi.Status.PodIP) == 0 {
		b.Fatalf("%s: the server pod's address: %+v %v", driver, pi, err)
	}
	server := pi.Status.PodIP[0] + ":7100"

	var tx, rx, rtt []float64
	for i := 0; i < max(b.N, 3); i++ {
		out, err := d.hyperctl(bin, "exec", "pn-cli", "udpecho", "tcpbench", server, strconv.Itoa(mib), strconv.Itoa(pings))
		vals := map[string]float64{}
		for _, l := range strings.Split(out, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "tcpbench "); ok {
				for _, w := range strings.Fields(rest) {
					if k, v, ok := strings.Cut(w, "="); ok {
						vals[k], _ = strconv.ParseFloat(v, 64)
					}
				}
			}
		}
		if err != nil || vals["tx_ns"] == 0 || vals["rx_ns"] == 0 || vals["rtt_median_ns"] == 0 {
			b.Fatalf("%s: udpecho tcpbench %s: %v\n%s", driver, server, err, out)
		}
		tx = append(tx, vals["bytes"]/1e6/(vals["tx_ns"]/1e9))
		rx = append(rx, vals["bytes"]/1e6/(vals["rx_ns"]/1e9))
		rtt = append(rtt, vals["rtt_median_ns"]/1e3)
		b.Logf("%s: pod to pod %d MiB: tx %.1f MB/s, rx %.1f MB/s, RTT %.0f µs (p10 %.0f, p90 %.0f)", driver, mib, tx[i], rx[i], rtt[i],
			vals["rtt_p10_ns"]/1e3, vals["rtt_p90_ns"]/1e3)
	}
	timed := func(d *daemon, prefix string) time.Duration {
		var ts []time.Duration
		for i := 0; i < starts; i++ {
			id := fmt.Sprintf("%s%d", prefix, i)
			ts = append(ts, startPod(d, id, pod(id, id, "sleep", "100000")))
			c, cancel := context.WithTimeout(ctx, wait)
			d.c.RemovePod(c, id)
			cancel()
		}
		b.Logf("%s: pod create+start (%s): %v", driver, prefix, ts)
		return median(ts)
	}
	// with the two pods of the traffic runs idle, as the none daemon's
	// two warm-up pods are below
	startCNI := timed(d, "pn-cni")
	cniAdd := cniAddTimes(d.logf, "pn-cni")
	stop(d, "pn-a", "pn-b")
	stopped = true

	// --- hyperd --network none, same driver and namespace
	root2 := filepath.Join(tmp, "root-none")
	dn := startDaemonIn(b, ns, bin, root2, filepath.Join(tmp, "hyper-none.sock"), driver,
		append(driverFlags(b, driver), "--network", "none")...)
	defer func() {
		if b.Failed() {
			b.Logf("hyperd --network none log tail:\n%s", dn.log())
		}
		stop(dn, "pn-c", "pn-d")
	}()
	dn.loadUDPEcho()
	startPod(dn, "pn-c", pod("pn-c", "pn-c", "sleep", "100000"))
	startPod(dn, "pn-d", pod("pn-d", "pn-d", "sleep", "100000"))
	startNone := timed(dn, "pn-none")

	r := podNetResult{txMBps: medianF(tx), rxMBps: medianF(rx), rttUs: medianF(rtt), startCNI: startCNI, startNone: startNone, cniAdd: median(cniAdd)}
	b.ReportMetric(r.txMBps, "tx-MB/s")
	b.ReportMetric(r.rxMBps, "rx-MB/s")
	b.ReportMetric(r.rttUs, "rtt-us")
	b.ReportMetric(float64(startCNI.Microseconds())/1000, "ms/start-cni")
	b.ReportMetric(float64(startNone.Microseconds())/1000, "ms/start-none")
	b.ReportMetric(float64((startCNI-startNone).Microseconds())/1000, "ms/net-setup")
	b.ReportMetric(float64(startCNI)/float64(startNone), "start-cni/none")
	if len(cniAdd) > 0 {
		b.ReportMetric(float64(r.cniAdd.Microseconds())/1000, "ms/cni-add")
	}
	podNetMu.Lock()
	podNetRes[driver] = r
	podNetMu.Unlock()
}

// cniAddTimes are the "took" of hyperd's "pod network up" log lines
// (network.Driver.Create: CNI ADD, before the sandbox is created) of the
// pods whose id starts with prefix.
func cniAddTimes(logf, prefix string) []time.Duration {
	b, _ := os.ReadFile(logf)
	var ds []time.Duration
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, `msg="pod network up"`) || !strings.Contains(l, " pod="+prefix) {
			continue
		}
		if _, took, ok := strings.Cut(l, " took="); ok {
			if d, err := time.ParseDuration(strings.Fields(took)[0]); err == nil {
				ds = append(ds, d)
			}
		}
	}
	return ds
}

func medianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
