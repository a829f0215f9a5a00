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
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/hyperhq/hyperd-go/internal/consolelog"
	"github.com/hyperhq/hyperd-go/virtio"
	"github.com/hyperhq/hyperd-go/vmm"
)

func init() { subcommands["vm"] = vmCommand }

const vmUsage = `usage: hyperd vm run --kernel K [--initrd I] [--append A] [--mem 256M] [--cpus 2]
                     [--disk path[,ro]]... [--disk-slots N] [--vsock uds] [--cid 3]
                     [--net tap=NAME|fd=N[,mac=52:54:00:xx:xx:xx][,mtu=N]]... [--net-slots N]
                     [--rng=true] [--snapshot-to dir] [--control sock]
       hyperd vm run --restore dir [--disk ...]... [--vsock uds] [--cid N] [--net ...]...
                     [--console-log path [--console-max bytes]]
                     [--jail dir [--vmm-uid N] [--vmm-gid N]]

Boots a VM on hyperd's own VMM in the foreground, its serial console on
stdout (or, with --console-log, in that file: written in blocks, capped,
the newest output kept, the half before in path.1), and exits when the guest stops: status 0 when it powered off, 3 it
reset (reboot, or a panic with panic=-1), 4 triple fault, 5 crash event,
6 a vCPU/VMM error, 7 stopped by SIGTERM/SIGINT, 8 snapshot written
(--snapshot-to, on SIGUSR1); 2 bad usage or setup.

--restore starts the VM from a snapshot (a template) instead: its memory
is the snapshot's memory file mapped copy-on-write, its devices are the
snapshot's; --disk files fill its disk slots and --net taps its net
devices, in order.

--net attaches a virtio-net device backed by a tap: tap=NAME opens (or
creates, with CAP_NET_ADMIN) the tap NAME in this process's network
namespace; fd=N adopts an inherited tap fd (IFF_TAP|IFF_NO_PI, ideally
IFF_VNET_HDR for offloads), opened by the caller in the pod's namespace:
the way to go with --jail, whose VMM has a network namespace of its own.
mac defaults to a random 52:54:00:xx:xx:xx, mtu (told to the guest; the
tap's own MTU is the caller's business) to 1500. Devices come in the order
disks, disk slots, vsock, nets, net slots, rng.

--control makes a unix socket (mode 0600, in the --jail directory when
jailed) over which the user that started the VM hands it a disk image
while it runs: an open descriptor attached to an empty disk slot
(vm_control.go; the protocol is sandbox/kvmdrv's control.go).`

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
	tp, err := openTap(sp)
	if err != nil {
		return nil, err
	}
	n, err := virtio.NewNet(tp, virtio.NetConfig{MAC: sp.mac, MTU: sp.mtu, Logf: logf})
	if err != nil {
		tp.Close()
		return nil, fmt.Errorf("--net: %w", err)
	}
	return n, nil
}

// snapshotConsole starts a restored VM's console with the tail of the
// console of the VM the snapshot was taken from (its boot), as a booted
// VM's console starts with its boot, then says where the restore begins.
// That VM's own lines (its notes, its stop line) are left out: the kvm
// driver reads a VM's stop reason from the last stop line of its console.
func snapshotConsole(console io.Writer, dir string) {
	b, err := consolelog.Tail(filepath.Join(dir, "console.log"), 16<<10)
	if err != nil || len(b) == 0 {
		return
	}
	var kept []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasPrefix(l, "hyperd vm run:") && l != "" {
			kept = append(kept, l)
		}
	}
	out := strings.Join(kept, "")
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	io.WriteString(console, out)
	fmt.Fprintf(console, "hyperd vm run: restored from the snapshot in %s (above: its console up to the snapshot)\n", dir)
}

// openTap opens (tap=NAME) or adopts (fd=N) the tap of sp.
func openTap(sp netSpec) (*virtio.Tap, error) {
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
	return tp, nil
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
	diskSlots := fs.Int("disk-slots", 0, "add this many empty virtio-blk slots after the disks (a template's; --restore attaches --disk files to them)")
	netSlots := fs.Int("net-slots", 0, "add this many virtio-net devices without a tap after the --net ones (a template's; --restore attaches --net taps to them)")
	rng := fs.Bool("rng", true, "attach a virtio-rng device (entropy from the host's getrandom)")
	snapshotTo := fs.String("snapshot-to", "", "on SIGUSR1, pause the VM, write a snapshot (state and memory) into this existing directory and stop (exit status 8)")
	restoreDir := fs.String("restore", "", "restore the VM from the snapshot in this directory instead of booting a kernel; --disk and --net fill its device slots in order")
	control := fs.String("control", "", "serve a control socket here on which the invoking user hands the running VM disk images for its empty disk slots (in the --jail directory when jailed)")
	var jl vmJail
	jl.flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *kernel == "" && *restoreDir == "" {
		fmt.Fprintln(os.Stderr, "hyperd vm run: --kernel (or --restore) is required")
		return 2
	}
	for _, p := range []*string{restoreDir, snapshotTo, control} {
		if *p != "" {
			abs, err := filepath.Abs(*p) // before the jail's chdir
			if err != nil {
				fmt.Fprintln(os.Stderr, "hyperd vm run:", err)
				return 2
			}
			*p = abs
		}
	}
	if *control != "" && jl.dir != "" {
		if jdir, err := filepath.Abs(jl.dir); err != nil || filepath.Dir(*control) != jdir {
			fmt.Fprintf(os.Stderr, "hyperd vm run: --control %s must be directly in the --jail directory %s\n", *control, jl.dir)
			return 2
		}
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
	var snap *vmm.Snapshot
	if *restoreDir != "" {
		if *kernel != "" || *initrd != "" {
			fmt.Fprintln(os.Stderr, "hyperd vm run: --restore takes the guest from the snapshot: no --kernel or --initrd")
			return 2
		}
		if snap, err = vmm.ReadSnapshot(*restoreDir); err != nil {
			fmt.Fprintln(msgs, "hyperd vm run:", err)
			return 2
		}
		snapshotConsole(console, *restoreDir)
	}
	devs, err := vmDevices(deviceSpecs{disks: disks, diskSlots: *diskSlots, vsock: vsockPath, cid: uint64(*cid), nets: nets, netSlots: *netSlots, rng: *rng}, snap, msgs)
	if err != nil {
		fmt.Fprintln(msgs, "hyperd vm run:", err)
		return 2
	}
	var ctl *diskControl
	if *control != "" {
		logf := func(format string, args ...any) { fmt.Fprintf(msgs, "hyperd vm run: "+format+"\n", args...) }
		if ctl, err = listenControl(*control, devs, logf); err != nil {
			fmt.Fprintln(msgs, "hyperd vm run:", err)
			closeDevices(devs)
			return 2
		}
		defer ctl.Close()
	}
	var m *vmm.Machine
	if snap != nil {
		m, err = vmm.Restore(vmm.RestoreConfig{Dir: *restoreDir, Snapshot: snap, Console: console, Devices: devs})
	} else {
		m, err = vmm.New(vmm.Config{Kernel: *kernel, Initrd: *initrd, Cmdline: *cmdline, MemMiB: memMiB, CPUs: *cpus, Console: console, Devices: devs})
	}
	if err != nil {
		fmt.Fprintln(msgs, "hyperd vm run:", err)
		closeDevices(devs)
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
	if *snapshotTo != "" {
		watchSnapshotSignal(m, *snapshotTo, msgs)
	}
	if ctl != nil {
		go ctl.serve(m.ConfigChanged)
	}
	m.Start()
	res := m.Wait()
	fmt.Fprintf(msgs, "hyperd vm run: guest stopped: %v (%+v)\n", res, m.Stats())
	return res.Reason.ExitStatus()
}
