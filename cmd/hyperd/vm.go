// This file owns the `hyperd vm run` subcommand: one VM on our VMM in the
// foreground (the kvm driver's VM process), its flags and its console.

package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/hyperhq/hyperd-go/internal/consolelog"
	"github.com/hyperhq/hyperd-go/virtio"
	"github.com/hyperhq/hyperd-go/vmm"
)

func init() { subcommands["vm"] = vmCommand }

const vmUsage = `usage: hyperd vm run --kernel K [--initrd I] [--append A] [--mem 256M] [--cpus 2]
                     [--disk path[,ro]]... [--vsock uds] [--cid 3]
                     [--net tap=NAME|fd=N[,mac=52:54:00:xx:xx:xx][,mtu=N]]...
                     [--console-log path [--console-max bytes]]
                     [--jail dir [--vmm-uid N] [--vmm-gid N]]

Boots a VM on hyperd's own VMM in the foreground, its serial console on
stdout (or, with --console-log, in that file: written in blocks, capped,
the newest output kept, the half before in path.1), and exits when the guest stops: status 0 when it powered off, 3 it
reset (reboot, or a panic with panic=-1), 4 triple fault, 5 crash event,
6 a vCPU/VMM error, 7 stopped by SIGTERM/SIGINT; 2 bad usage or setup.

--net attaches a virtio-net device backed by a tap: tap=NAME opens (or
creates, with CAP_NET_ADMIN) the tap NAME in this process's network
namespace; fd=N adopts an inherited tap fd (IFF_TAP|IFF_NO_PI, ideally
IFF_VNET_HDR for offloads), opened by the caller in the pod's namespace:
the way to go with --jail, whose VMM has a network namespace of its own.
mac defaults to a random 52:54:00:xx:xx:xx, mtu (told to the guest; the
tap's own MTU is the caller's business) to 1500. Devices come in the order
disks, vsock, nets.`

type diskFlags []string

func (d *diskFlags) String() string     { return strings.Join(*d, " ") }
func (d *diskFlags) Set(s string) error { *d = append(*d, s); return nil }

// netSpec is one --net value.
type netSpec struct {
	tap string // tap=NAME
	fd  int    // fd=N; -1 without
	mac net.HardwareAddr
	mtu int // 0: the device's default
}

// parseNetFlag parses tap=NAME[,mac=M][,mtu=N] or fd=N[,mac=M][,mtu=N].
func parseNetFlag(s string) (netSpec, error) {
	sp := netSpec{fd: -1}
	bad := func(format string, args ...any) (netSpec, error) {
		return netSpec{}, fmt.Errorf("--net %q: "+format, append([]any{s}, args...)...)
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return bad("%q is not key=value (keys: tap, fd, mac, mtu)", kv)
		}
		if seen[k] {
			return bad("%s given twice", k)
		}
		seen[k] = true
		switch k {
		case "tap":
			// the kernel's dev_valid_name: < IFNAMSIZ, no '/', ':' or space
			if len(v) > 15 || v == "." || v == ".." || strings.ContainsAny(v, "/: \t\n") {
				return bad("tap name %q: at most 15 bytes, no '/', ':' or spaces", v)
			}
			sp.tap = v
		case "fd":
			n, err := strconv.Atoi(v)
			if err != nil || n < 3 {
				return bad("fd=%s: want an inherited descriptor number >= 3", v)
			}
			sp.fd = n
		case "mac":
			m, err := net.ParseMAC(v)
			switch {
			case err != nil || len(m) != 6:
				return bad("mac=%s: want six hex bytes, e.g. 52:54:00:12:34:56", v)
			case m[0]&1 != 0:
				return bad("mac=%s is a multicast address", v)
			case string(m) == string(make([]byte, 6)):
				return bad("mac=%s is all zeros", v)
			}
			sp.mac = m
		case "mtu":
			n, err := strconv.Atoi(v)
			if err != nil || n < virtio.NetMinMTU || n > 65535 {
				return bad("mtu=%s: want %d to 65535", v, virtio.NetMinMTU)
			}
			sp.mtu = n
		default:
			return bad("unknown key %q (keys: tap, fd, mac, mtu)", k)
		}
	}
	if (sp.tap == "") == (sp.fd < 0) {
		return bad("give exactly one of tap=NAME and fd=N")
	}
	return sp, nil
}

// openNet opens the tap of sp and puts a virtio-net device over it.
func openNet(sp netSpec, logf func(string, ...any)) (*virtio.Net, error) {
	var tp *virtio.Tap
	var err error
	if sp.tap != "" {
		tp, err = virtio.OpenTap(sp.tap)
	} else {
		tp, err = virtio.AdoptTap(sp.fd)
	}
	if err != nil {
		return nil, fmt.Errorf("--net: %w", err)
	}
	n, err := virtio.NewNet(tp, virtio.NetConfig{MAC: sp.mac, MTU: sp.mtu, Logf: logf})
	if err != nil {
		tp.Close()
		return nil, fmt.Errorf("--net: %w", err)
	}
	return n, nil
}

// parseSize parses 256M, 1G, 512 (MiB), 1048576K.
func parseSize(s string) (int, error) {
	mult := 1
	t := strings.ToUpper(strings.TrimSpace(s))
	switch {
	case strings.HasSuffix(t, "G"):
		mult, t = 1024, strings.TrimSuffix(t, "G")
	case strings.HasSuffix(t, "M"):
		t = strings.TrimSuffix(t, "M")
	case strings.HasSuffix(t, "K"):
		n, err := strconv.Atoi(strings.TrimSuffix(t, "K"))
		if err != nil || n <= 0 || n%1024 != 0 {
			return 0, fmt.Errorf("memory size %q: want a whole number of MiB", s)
		}
		return n / 1024, nil
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("memory size %q: want e.g. 256M or 1G", s)
	}
	return n * mult, nil
}

func vmCommand(args []string) int {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(os.Stderr, vmUsage)
		return 2
	}
	fs := flag.NewFlagSet("hyperd vm run", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, vmUsage) }
	kernel := fs.String("kernel", "", "guest kernel: ELF vmlinux (PVH) or bzImage")
	initrd := fs.String("initrd", "", "initramfs")
	cmdline := fs.String("append", "console=ttyS0 earlyprintk=ttyS0 reboot=k panic=-1", "kernel command line")
	mem := fs.String("mem", "256M", "guest memory")
	cpus := fs.Int("cpus", 1, "vCPUs")
	vsockUDS := fs.String("vsock", "", "attach virtio-vsock with this hybrid unix socket (host connects, sends CONNECT <port>)")
	cid := fs.Uint("cid", 3, "guest vsock CID")
	consoleLog := fs.String("console-log", "", "write the guest console (and this command's notes and stop line) to this file instead of stdout, in blocks, capped by --console-max")
	consoleMax := fs.Int64("console-max", consolelog.DefaultMax, "cap in bytes of --console-log, its .1 included (the newest output is kept)")
	var disks diskFlags
	fs.Var(&disks, "disk", "attach a virtio-blk disk: path[,ro] (repeatable)")
	var netFlags diskFlags
	fs.Var(&netFlags, "net", "attach a virtio-net device: tap=NAME or fd=N (an inherited tap), then [,mac=52:54:00:xx:xx:xx][,mtu=N] (repeatable)")
	var jl vmJail
	jl.flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *kernel == "" {
		fmt.Fprintln(os.Stderr, "hyperd vm run: --kernel is required")
		return 2
	}
	var nets []netSpec
	for _, s := range netFlags {
		sp, err := parseNetFlag(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hyperd vm run:", err)
			return 2
		}
		nets = append(nets, sp)
	}
	vsockPath, err := jl.prepare(kernel, initrd, disks, *vsockUDS)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hyperd vm run:", err)
		return 2
	}
	memMiB, err := parseSize(*mem)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hyperd vm run:", err)
		return 2
	}
	var console io.Writer = os.Stdout
	msgs := io.Writer(os.Stderr) // notes and the stop line
	if *consoleLog != "" {
		w, err := consolelog.Open(*consoleLog, *consoleMax)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hyperd vm run: --console-log:", err)
			return 2
		}
		defer w.Close() // flushes the stop line
		console = w
		// the console first: it never fails, so stderr's state cannot cut it off
		msgs = io.MultiWriter(w, os.Stderr)
	}
	var devs []virtio.Device
	closeAll := func() {
		for _, d := range devs {
			if c, ok := d.(interface{ Close() error }); ok {
				c.Close()
			}
		}
	}
	for _, d := range disks {
		path, opt, _ := strings.Cut(d, ",")
		if opt != "" && opt != "ro" && opt != "rw" {
			fmt.Fprintf(os.Stderr, "hyperd vm run: --disk %q: option must be ro or rw\n", d)
			closeAll()
			return 2
		}
		b, err := virtio.OpenBlk(path, opt == "ro")
		if err != nil {
			fmt.Fprintln(os.Stderr, "hyperd vm run:", err)
			closeAll()
			return 2
		}
		devs = append(devs, b)
	}
	if *vsockUDS != "" {
		v, err := virtio.NewVsock(virtio.VsockConfig{GuestCID: uint64(*cid), UDS: vsockPath})
		if err != nil {
			fmt.Fprintln(os.Stderr, "hyperd vm run:", err)
			closeAll()
			return 2
		}
		devs = append(devs, v)
	}
	for _, sp := range nets {
		n, err := openNet(sp, func(format string, args ...any) {
			fmt.Fprintf(msgs, "hyperd vm run: "+format+"\n", args...)
		})
		if err != nil {
			fmt.Fprintln(msgs, "hyperd vm run:", err)
			closeAll()
			return 2
		}
		devs = append(devs, n)
	}
	m, err := vmm.New(vmm.Config{Kernel: *kernel, Initrd: *initrd, Cmdline: *cmdline, MemMiB: memMiB, CPUs: *cpus, Console: console, Devices: devs})
	if err != nil {
		fmt.Fprintln(msgs, "hyperd vm run:", err)
		closeAll()
		return 2
	}
	for _, n := range m.Notes() {
		fmt.Fprintln(msgs, "hyperd vm run: note:", n)
	}
	// everything is open and the guest has not run: confine the VMM
	if err := jl.enter(); err != nil {
		fmt.Fprintln(os.Stderr, "hyperd vm run:", err)
		return 2
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		m.Stop()
	}()
	m.Start()
	res := m.Wait()
	fmt.Fprintf(msgs, "hyperd vm run: guest stopped: %v (%+v)\n", res, m.Stats())
	return res.Reason.ExitStatus()
}
