// This file owns BenchmarkVirtioNet: our virtio-net device (`hyperd vm run
// --net tap=`) against QEMU's userspace virtio-net (microvm, KVM,
// vhost=off) on the same kind of tap, the same guest kernel and the same
// test init (testdata/netinit), measured one after the other in one run:
// TCP throughput guest->host and host->guest and the TCP round-trip time,
// against a TCP server in this process (internal/tcpbench's), all inside a
// network namespace the benchmark creates.

package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/internal/kvmtest"
	"github.com/hyperhq/hyperd-go/internal/netns"
	"github.com/hyperhq/hyperd-go/internal/tcpbench"
	"github.com/hyperhq/hyperd-go/internal/testbin"
	"github.com/hyperhq/hyperd-go/kvm"
)

// The benchmark's network: a tap in a namespace of its own, the host side
// of which is netHostAddr; the guest takes netGuestAddr (netinit's
// defaults).
const (
	netTap       = "tap0"
	netHostAddr  = "10.0.0.1/24"
	netGuestAddr = "10.0.0.2/24"
	netPort      = 5201
	netGuestMAC  = "52:54:00:12:34:56" // the same for both VMMs: one neighbour entry
)

// netEnvInt is the positive integer in $name, or def.
func netEnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// netPeer is one VMM under test: how to run it with a kernel, an
// initramfs and a command line, its guest NIC on netTap.
type netPeer struct {
	name string
	cmd  func(kernel, initrd, cmdline string) *exec.Cmd
}

// netRun is what one VM's run measured: the guest's console lines and
// this process's server's own times.
type netRun struct {
	up                     time.Duration // VM process spawn -> "up" line
	bytes                  int64
	txNs, rxNs, rttNs      int64 // the host's clock
	rttP10, rttP90         int64
	gTxNs, gRxNs, gRttNs   int64 // the guest's clock
	txMBps, rxMBps, rttUs  float64
	gTxMBps, gRxMBps, gRtt float64
	exits                  string // the host KVM's counters over the run, if readable
}

// BenchmarkVirtioNet boots the project's guest kernel with netinit as
// /init, once under `hyperd vm run --net tap=tap0` and once under QEMU
// microvm with `-netdev tap,vhost=off -device virtio-net-device` (1 vCPU,
// 256 MiB each), and reports for each TCP throughput both ways (MB/s,
// 10^6 bytes) and the median one-byte TCP round trip, and the ratios
// ours/QEMU (throughput: above 1 is ours faster; RTT: below 1 is ours
// faster): medians of b.N runs of each (at least 3), the two VMMs run one
// after the other, in alternating order; a ratio is the median of each
// pair's. Times are this process's clock (the server's side); the guest's
// own figures are logged next to them, and so are the host KVM's exit
// counters for each run where debugfs has them.
//
// It needs a guest kernel to boot, so hardware virtualization: where the
// host has none, make bench runs it in the nested runner's L1
// (scripts/bench-nested.sh). HYPERD_NETBENCH_MIB (default 64) sets the
// bytes sent each way, HYPERD_NETBENCH_PINGS (200) the round trips,
// HYPERD_NETBENCH_SECONDS (600) the deadline of each VM's run.
func BenchmarkVirtioNet(b *testing.B) {
	if err := kvmtest.Usable(); err != nil && os.Getenv(kvmtest.Env) == "1" {
		b.Skipf("no usable /dev/kvm here (%v): make bench runs this inside the nested runner's L1 (scripts/bench-nested.sh)", err)
	}
	kvmtest.Need(b)
	if !kvm.HostHasHardwareVirt() {
		b.Skip("needs vmx/svm (a Linux guest must boot to its init): make bench runs it inside the nested runner's L1 (scripts/bench-nested.sh)")
	}
	if os.Geteuid() != 0 {
		b.Fatal("needs root: it creates a network namespace and a tap")
	}
	kernel := filepath.Join(repoRoot(), "build", "guest", "vmlinux")
	if _, err := os.Stat(kernel); err != nil {
		b.Fatalf("the project's guest kernel (CONFIG_VIRTIO_NET built in): %v (run make kernel)", err)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		b.Fatalf("qemu-system-x86_64 is the peer (apt-get install qemu-system-x86): %v", err)
	}
	hyperd := testbin.Build(b, "./cmd/hyperd")
	initrd := buildNetInitramfs(b)
	mib := netEnvInt("HYPERD_NETBENCH_MIB", 64)
	pings := netEnvInt("HYPERD_NETBENCH_PINGS", 200)
	deadline := time.Duration(netEnvInt("HYPERD_NETBENCH_SECONDS", 600)) * time.Second
	cmdline := fmt.Sprintf("console=ttyS0 quiet reboot=k panic=-1 pci=off netbench.addr=%s netbench.host=%s netbench.port=%d netbench.mib=%d netbench.pings=%d",
		netGuestAddr, strings.Split(netHostAddr, "/")[0], netPort, mib, pings)

	ns := filepath.Join(b.TempDir(), "netns")
	if err := netns.Create(ns); err != nil {
		b.Fatal(err)
	}
	defer netns.Remove(ns)
	srv := netSetup(b, ns)
	defer srv.close()

	peers := []netPeer{
		// microvm's ACPI (on by default) declares its virtio-mmio
		// transports in the DSDT, which is how this kernel finds them (it
		// has no virtio_mmio.device= parsing)
		{"qemu", func(k, i, c string) *exec.Cmd {
			return exec.Command(qemu, "-M", "microvm", "-enable-kvm", "-cpu", "max", "-m", "256", "-smp", "1",
				"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
				"-kernel", k, "-initrd", i, "-append", c,
				"-netdev", "tap,id=n0,ifname="+netTap+",script=no,downscript=no,vhost=off",
				"-device", "virtio-net-device,netdev=n0,mac="+netGuestMAC)
		}},
		{"ours", func(k, i, c string) *exec.Cmd {
			return exec.Command(hyperd, "vm", "run", "--kernel", k, "--initrd", i, "--append", c, "--mem", "256M", "--cpus", "1",
				"--net", "tap="+netTap+",mac="+netGuestMAC)
		}},
	}
	runs := map[string][]netRun{}
	pairs := max(b.N, 3)
	for i := 0; i < pairs; i++ {
		// never two VMs at once; the order alternates, so a drift in the
		// host's load falls on both
		order := peers
		if i%2 == 1 {
			order = []netPeer{peers[1], peers[0]}
		}
		for _, p := range order {
			r, err := runNetPeer(ns, srv, p, kernel, initrd, cmdline, deadline)
			if err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			b.Logf("%s: up %.2fs; guest->host %.1f MB/s, host->guest %.1f MB/s, RTT %.0f µs (p10 %.0f, p90 %.0f) (the guest's clock: %.1f MB/s, %.1f MB/s, %.0f µs)%s",
				p.name, r.up.Seconds(), r.txMBps, r.rxMBps, r.rttUs, float64(r.rttP10)/1e3, float64(r.rttP90)/1e3,
				r.gTxMBps, r.gRxMBps, r.gRtt, r.exits)
			runs[p.name] = append(runs[p.name], r)
		}
	}
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	var summary []string
	for _, m := range []struct {
		name, unit string
		f          func(netRun) float64
	}{
		{"tx", "MB/s", func(r netRun) float64 { return r.txMBps }},
		{"rx", "MB/s", func(r netRun) float64 { return r.rxMBps }},
		{"rtt", "us", func(r netRun) float64 { return r.rttUs }},
	} {
		// the ratio is the median of each pair's (run back to back):
		// these machines' load drifts between pairs
		var o, q, ratio []float64
		for i := range runs["ours"] {
			o = append(o, m.f(runs["ours"][i]))
			q = append(q, m.f(runs["qemu"][i]))
			ratio = append(ratio, m.f(runs["ours"][i])/m.f(runs["qemu"][i]))
		}
		mo, mq, mr := median(o), median(q), median(ratio)
		b.ReportMetric(mo, "ours-"+m.name+"-"+m.unit)
		b.ReportMetric(mq, "qemu-"+m.name+"-"+m.unit)
		b.ReportMetric(mr, m.name+"-ours/qemu")
		summary = append(summary, fmt.Sprintf("%s: ours %.1f %s, QEMU %.1f %s, ours/QEMU %.2f (pairs %s)", m.name, mo, m.unit, mq, m.unit, mr, fmtRatios(ratio)))
	}
	b.Logf("virtio-net over a tap, %d MiB each way, %d pings, medians of %d pairs: %s (tx: guest->host, rx: host->guest)",
		mib, pings, pairs, strings.Join(summary, "; "))
}

func fmtRatios(v []float64) string {
	var s []string
	for _, r := range v {
		s = append(s, strconv.FormatFloat(r, 'f', 2, 64))
	}
	return strings.Join(s, " ")
}

// kvmExitStats reads the host KVM's exit counters from debugfs (when it is
// mounted), to tell how many VM exits a run cost each VMM; nil where they
// cannot be read. They are sums over the VMs that exist: a run's are read
// before its VM exists and at netinit's last line, before it powers off.
func kvmExitStats() map[string]int64 {
	st := map[string]int64{}
	for _, k := range []string{"exits", "io_exits", "mmio_exits", "irq_injections", "halt_exits"} {
		b, err := os.ReadFile(filepath.Join("/sys/kernel/debug/kvm", k))
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			st[k] = n
		}
	}
	if len(st) == 0 {
		return nil
	}
	return st
}

func kvmExitDelta(a, b map[string]int64) string {
	if a == nil || b == nil {
		return ""
	}
	var s []string
	for _, k := range []string{"exits", "io_exits", "mmio_exits", "irq_injections", "halt_exits"} {
		if _, ok := a[k]; ok {
			s = append(s, fmt.Sprintf("%s %d", k, b[k]-a[k]))
		}
	}
	return "; KVM: " + strings.Join(s, ", ")
}

// buildNetInitramfs packs testdata/netinit as /init into a gzip newc cpio.
func buildNetInitramfs(t testing.TB) string {
	t.Helper()
	return testInitramfs(t, "./vmm/testdata/netinit", "netinit.cpio.gz")
}

// netSetup makes the namespace's network (lo up; a persistent tap netTap
// with netHostAddr, up, its carrier coming when a VMM opens it) and starts
// the server on netHostAddr.
func netSetup(t testing.TB, ns string) *netServer {
	t.Helper()
	var ln net.Listener
	err := netns.Do(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if err := persistentTap(netTap); err != nil {
			return err
		}
		tap, err := netlink.LinkByName(netTap)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(netHostAddr)
		if err := netlink.AddrAdd(tap, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(tap); err != nil {
			return err
		}
		// a socket stays in the namespace it was made in
		ln, err = net.Listen("tcp", net.JoinHostPort(a.IP.String(), strconv.Itoa(netPort)))
		return err
	})
	if err != nil {
		t.Fatalf("the benchmark's network: %v", err)
	}
	s := &netServer{ln: ln}
	go s.serve()
	return s
}

// persistentTap creates the tap name (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, the
// flags both VMMs open it with) and makes it outlive its fd.
func persistentTap(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("/dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("tap %s: TUNSETPERSIST: %w", name, err)
	}
	return nil
}

// netServer is the host side of netinit's protocol (internal/tcpbench's
// server); it keeps the times it measured of the current VM's run.
type netServer struct {
	ln net.Listener
	mu sync.Mutex
	// this run's measurements; errs are the connections that failed
	txNs, rxNs int64
	rtts       []int64
	errs       []string
}

func (s *netServer) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txNs, s.rxNs, s.rtts, s.errs = 0, 0, nil, nil
}

func (s *netServer) close() { s.ln.Close() }

func (s *netServer) serve() {
	srv := &tcpbench.Server{Timeout: 30 * time.Minute, Report: s.report}
	srv.Serve(s.ln)
}

// report keeps one connection's result.
func (s *netServer) report(r tcpbench.Result, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs = append(s.errs, err.Error())
		return
	}
	switch r.Cmd {
	case "SINK":
		s.txNs = r.Time.Nanoseconds()
	case "SOURCE":
		s.rxNs = r.Time.Nanoseconds()
	case "ECHO":
		s.rtts = nil
		for _, d := range r.RTTs {
			s.rtts = append(s.rtts, d.Nanoseconds())
		}
	}
}

// netConsole collects a guest console and netinit's result lines.
type netConsole struct {
	mu      sync.Mutex
	start   time.Time
	buf     bytes.Buffer
	partial []byte
	vals    map[string]map[string]string // "tx" -> "ns" -> "123"
	up      time.Duration
	end     chan string // "done" or the FAIL line
	ended   bool
}

func (l *netConsole) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() < 1<<20 {
		l.buf.Write(p)
	}
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		_, rest, ok := strings.Cut(line, "HYPERD-NET: ")
		if !ok {
			continue
		}
		words := strings.Fields(rest)
		if len(words) == 0 {
			continue
		}
		kv := map[string]string{}
		for _, w := range words[1:] {
			if k, v, ok := strings.Cut(w, "="); ok {
				kv[k] = v
			}
		}
		l.vals[words[0]] = kv
		switch {
		case words[0] == "up" && l.up == 0:
			l.up = time.Since(l.start)
		case (words[0] == "done" || words[0] == "FAIL") && !l.ended:
			l.ended = true
			l.end <- rest
		}
	}
	return len(p), nil
}

func (l *netConsole) val(line, key string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, _ := strconv.ParseInt(l.vals[line][key], 10, 64)
	return n
}

func (l *netConsole) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(strings.TrimRight(l.buf.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// runNetPeer boots one VM in the namespace and waits for netinit's
// results (or a failure, or deadline).
func runNetPeer(ns string, srv *netServer, p netPeer, kernel, initrd, cmdline string, deadline time.Duration) (netRun, error) {
	srv.reset()
	exits0 := kvmExitStats()
	con := &netConsole{start: time.Now(), vals: map[string]map[string]string{}, end: make(chan string, 1)}
	cmd := p.cmd(kernel, initrd, cmdline)
	cmd.Stdout, cmd.Stderr = con, con
	if err := netns.Do(ns, cmd.Start); err != nil {
		return netRun{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var why, exits string
	select {
	case why = <-con.end:
		exits = kvmExitDelta(exits0, kvmExitStats())
	case err := <-exited:
		return netRun{}, fmt.Errorf("exited before netinit's results (%v); console tail:\n%s", err, con.tail(30))
	case <-time.After(deadline):
		cmd.Process.Kill()
		<-exited
		return netRun{}, fmt.Errorf("no result in %v; console tail:\n%s", deadline, con.tail(30))
	}
	// netinit powers off after its last line: the VMM should exit
	select {
	case <-exited:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-exited
	}
	if why != "done" {
		srv.mu.Lock()
		errs := srv.errs
		srv.mu.Unlock()
		return netRun{}, fmt.Errorf("netinit: %s; server: %v; console tail:\n%s", why, errs, con.tail(30))
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	r := netRun{up: con.up, bytes: con.val("tx", "bytes"), txNs: srv.txNs, rxNs: srv.rxNs,
		gTxNs: con.val("tx", "ns"), gRxNs: con.val("rx", "ns"), gRttNs: con.val("rtt", "median_ns"), exits: exits}
	if len(srv.rtts) > tcpbench.Warmup {
		rtts := slices.Clone(srv.rtts[tcpbench.Warmup:]) // netinit's warm-up pings
		slices.Sort(rtts)
		r.rttNs, r.rttP10, r.rttP90 = rtts[len(rtts)/2], rtts[len(rtts)/10], rtts[len(rtts)*9/10]
	}
	if r.bytes == 0 || r.txNs == 0 || r.rxNs == 0 || r.rttNs == 0 || r.gTxNs == 0 || r.gRxNs == 0 || r.gRttNs == 0 {
		return netRun{}, errors.New("incomplete results: " + fmt.Sprintf("%+v, server errors %v; console tail:\n%s", r, srv.errs, con.tail(30)))
	}
	mbps := func(ns int64) float64 { return float64(r.bytes) / 1e6 / (float64(ns) / 1e9) }
	r.txMBps, r.rxMBps, r.rttUs = mbps(r.txNs), mbps(r.rxNs), float64(r.rttNs)/1e3
	r.gTxMBps, r.gRxMBps, r.gRtt = mbps(r.gTxNs), mbps(r.gRxNs), float64(r.gRttNs)/1e3
	return r, nil
}
