package vmm

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/kvm"
	"github.com/hyperhq/hyperd-go/virtio"
)

// bootCmdline is the kernel command line of the boot test and benchmark,
// for our VMM and QEMU alike. On software-nested KVM two host limits are
// worked around: with a second vCPU online the boot stops making progress
// during SMP bring-up (measured: no VM exit for 10+ minutes after
// "smpboot: CPU 1 ..."), so the kernel brings up one of the CPUs the MADT
// lists (maxcpus=1), and the TSC rendezvous between CPUs is skipped
// (tsc=reliable).
//
// Under the nested runner (lateSMP) the kernel also boots on one CPU, and
// the test's init brings the others online (hyperd.boot.online=1).
func bootCmdline(hw bool) string {
	// nokaslr: a fixed layout, so a hung guest's RIP (vcpuDump) names a symbol
	c := "console=ttyS0 earlyprintk=ttyS0 reboot=k panic=-1 nokaslr"
	switch {
	case !hw:
		c += " noxsave tsc=reliable maxcpus=1"
	case lateSMP(hw):
		c += " maxcpus=1 hyperd.boot.online=1"
	}
	return c
}

// lateSMP is whether the guest's second CPU comes up only once its init
// runs: under the nested runner (HYPERD_NESTED=1), where L1's KVM runs on
// QEMU's TCG. A kernel built with jump labels (Debian's) switches static
// keys during its late initcalls (sched_clock_init_late, ...), rewriting
// code the other vCPU may be running, and TCG froze the guest on such
// cross-modification now and then (the vmm suite: the Debian guest stopped
// mid-line after "Unstable clock detected", twice in a few runs; the
// project's kernel, without jump labels, never did); L1 itself froze the
// same way (e2e/nested/l1init/keys.go). Booting on one CPU keeps those
// patches single-CPU; bringing the others up from init still takes each
// through INIT/SIPI and the MADT, as a boot does.
func lateSMP(hw bool) bool { return hw && os.Getenv("HYPERD_NESTED") == "1" }

// bootDeadline is how long the boot test lets a guest run: a hardware-KVM
// boot takes about a second (seconds under the nested runner's TCG); on
// software-nested KVM ring-0 code is emulated and the kernel stops at a
// milestone it reaches in about half a minute.
func bootDeadline(hw bool) time.Duration {
	if s := os.Getenv("HYPERD_BOOT_SECONDS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	if hw {
		return 60 * time.Second
	}
	// Both VMMs reach their furthest milestone here ("MADT CPUs") after
	// 30-35 s and then make no more progress (measured 2026-11-29: ours
	// 30.6 s, QEMU 33.4 s); 150 s (QEMU: 100 s) leaves three times that.
	// The full boot is asserted on hardware virtualization (the nested
	// runner's L1).
	return 150 * time.Second
}

// vsockPeer plays the host side of the test init's vsock round trips: it
// answers the guest's connection to host port 5000 (the unix socket
// <uds>_5000) and, once that happened, connects to guest port 1024 through
// the hybrid socket with "CONNECT 1024".
type vsockPeer struct {
	uds     string
	ln      net.Listener
	mu      sync.Mutex
	events  []string
	errs    []string
	done    chan struct{}
	stopped chan struct{}
}

func newVsockPeer(t *testing.T, uds string) *vsockPeer {
	ln, err := net.Listen("unix", uds+"_5000")
	if err != nil {
		t.Fatal(err)
	}
	p := &vsockPeer{uds: uds, ln: ln, done: make(chan struct{}), stopped: make(chan struct{})}
	go p.serve()
	return p
}

func (p *vsockPeer) log(ok bool, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		p.events = append(p.events, fmt.Sprintf(format, args...))
	} else {
		p.errs = append(p.errs, fmt.Sprintf(format, args...))
	}
}

func (p *vsockPeer) serve() {
	defer close(p.stopped)
	c, err := p.ln.Accept()
	if err != nil {
		return
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		p.log(false, "reading the guest's message: %v", err)
		c.Close()
		return
	}
	fmt.Fprintf(c, "pong\n")
	c.Close()
	p.log(true, "guest->host %q", strings.TrimSpace(line))

	hc, err := net.Dial("unix", p.uds)
	if err != nil {
		p.log(false, "dial hybrid socket: %v", err)
		return
	}
	defer hc.Close()
	hc.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(hc, "CONNECT 1024\n")
	r := bufio.NewReader(hc)
	ok, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(ok, "OK ") {
		p.log(false, "CONNECT 1024 answered %q, %v", ok, err)
		return
	}
	fmt.Fprintf(hc, "hello from host\n")
	echo, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(echo) != "echo hello from host" {
		p.log(false, "guest echoed %q, %v", echo, err)
		return
	}
	p.log(true, "host->guest %q via %s", strings.TrimSpace(echo), strings.TrimSpace(ok))
	close(p.done)
}

func (p *vsockPeer) close() {
	p.ln.Close()
}

// TestBootLinux boots the Debian kernel from `make kernel` on our VMM with
// an initramfs whose /init (testdata/bootinit) prints a marker, loads the
// virtio and vsock modules, does vsock round trips in both directions
// through the hybrid socket, and powers off.
//
// With hardware virtualization (vmx/svm) all of that must happen. On
// software-nested KVM a stock kernel cannot finish booting, so the test
// asserts every milestone the host allows from the console that came
// through our UART — banner, our e820 map, our ACPI tables and MADT CPU
// count — runs QEMU (microvm, KVM) on the same kernel, initramfs and
// command line first, and fails if our VMM gives up at an earlier milestone
// than QEMU reached. It reports the milestone reached.
//
// With hardware virtualization it boots the project's own kernel
// (build/guest/vmlinux, everything built in, no modules) the same way.
// On software-nested KVM that boot is the guest-kernel issue's moonshot,
// opt-in (minutes of emulated ring 0): HYPERD_KERNEL=build/guest/vmlinux
// boots only the kernel it names.
func TestBootLinux(t *testing.T) {
	needKVM(t)
	hw := kvm.HostHasHardwareVirt()
	type bootKernel struct{ name, kernel, modules string }
	var ks []bootKernel
	if os.Getenv("HYPERD_KERNEL") != "" {
		k, m := testKernel(t)
		ks = append(ks, bootKernel{"given", k, m})
	} else {
		k, m := testKernel(t)
		ks = append(ks, bootKernel{"debian", k, m})
		if hw {
			own := filepath.Join(repoRoot(), "build", "guest", "vmlinux")
			if _, err := os.Stat(own); err != nil {
				t.Fatalf("the project's guest kernel: %v (run make kernel)", err)
			}
			ks = append(ks, bootKernel{"own", own, ""})
		}
	}
	for _, k := range ks {
		t.Run(k.name, func(t *testing.T) { bootLinux(t, k.kernel, k.modules, hw) })
	}
}

func bootLinux(t *testing.T, kernel, modules string, hw bool) {
	initrd := buildBootInitramfs(t, modules)
	deadline := bootDeadline(hw)
	const memMiB, cpus = 256, 2

	dir := t.TempDir()
	uds := filepath.Join(dir, "vsock.sock")
	peer := newVsockPeer(t, uds)
	defer peer.close()
	vs, err := virtio.NewVsock(virtio.VsockConfig{GuestCID: 3, UDS: uds})
	if err != nil {
		t.Fatal(err)
	}
	consoleFile, _ := os.Create(filepath.Join(dir, "console.log"))
	defer consoleFile.Close()
	ms := bootMilestones(cpus, hw)
	ours := newMilestoneLog(ms, consoleFile)

	// The peer runs first, alone: two emulated guests at once on these
	// two-core machines would each get half the speed.
	var qemu *milestoneLog
	var qemuErr error
	if !hw {
		qemu = newMilestoneLog(ms, nil)
		qemuErr = qemuBoot(t, kernel, initrd, bootCmdline(hw), memMiB, cpus, deadline*2/3, qemu)
	}

	m, err := New(Config{Kernel: kernel, Initrd: initrd, Cmdline: bootCmdline(hw), MemMiB: memMiB, CPUs: cpus, Console: ours, Devices: []virtio.Device{vs}})
	if err != nil {
		t.Fatal(err)
	}
	ours.start = time.Now()
	m.Start()
	var res Result
	select {
	case <-m.Done():
	case <-time.After(deadline):
		t.Logf("deadline: the guest's vCPUs when it was stopped:\n%s", vcpuDump(m))
		m.Stop()
	}
	res = m.Wait()
	st := m.Stats()

	idx, at := ours.reached()
	reached := "nothing"
	if idx >= 0 {
		reached = ms[idx].name
	}
	t.Logf("our VMM: stopped by %v after %.1fs; furthest milestone %q at %.2fs; exits %d, emulation help %+v; notes %v\n%s",
		res, st.Uptime.Seconds(), reached, at.Seconds(), st.Exits, st.Emulation, m.Notes(), ours.summary())

	// Our own tables must have been read back exactly as we wrote them.
	log := ours.String()
	for _, want := range []string{
		"BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
		fmt.Sprintf("BIOS-e820: [mem 0x0000000000100000-0x%016x] usable", uint64(memMiB)<<20-1),
		"ACPI: RSDP 0x00000000000E0000 000024 (v02 HYPERD)",
		"ACPI: FACP 0x", "(v06 HYPERD HYPERDGO",
		"ACPI: APIC 0x",
		"ACPI: LAPIC_NMI (acpi_id[0xff] dfl dfl lint[0x1])",
		"IOAPIC[0]: apic_id 2, version",
		"address 0xfec00000, GSI 0-23",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if !madtCPUs(cpus).MatchString(log) {
		t.Errorf("console lacks the MADT's %d CPUs (%s)", cpus, madtCPUs(cpus))
	}
	if idx < 3 {
		t.Fatalf("our VMM stopped before the MADT milestone (%v); console tail:\n%s", res, ours.tail(30))
	}

	if hw {
		if res.Reason != StopPoweroff {
			t.Errorf("guest stopped by %v, want an ACPI poweroff; console tail:\n%s", res, ours.tail(30))
		}
		select {
		case <-peer.done:
		default:
			t.Errorf("vsock round trips incomplete: events %v errors %v; console tail:\n%s", peer.events, peer.errs, ours.tail(30))
		}
		if idx != len(ms)-1 {
			t.Errorf("boot stopped at %q; console tail:\n%s", reached, ours.tail(30))
		}
		t.Logf("hardware virtualization: full boot to /init with vsock in %.2fs", at.Seconds())
		return
	}

	qidx, qat := qemu.reached()
	qreached := "nothing"
	if qidx >= 0 {
		qreached = ms[qidx].name
	}
	t.Logf("QEMU microvm: furthest milestone %q at %.2fs (exit: %v)\n%s", qreached, qat.Seconds(), qemuErr, qemu.summary())
	if qidx < 0 {
		t.Fatalf("QEMU printed no milestone; its console:\n%s", qemu.tail(20))
	}
	// Speed on these shared machines is the benchmark's business; what
	// fails here is our VMM giving up (stopping by itself) before the
	// point QEMU reached.
	if res.Reason != StopKilled && idx < qidx {
		t.Errorf("our VMM stopped (%v) at %q, earlier than QEMU (%q); our console tail:\n%s", res, reached, qreached, ours.tail(30))
	}
	t.Logf("software-nested KVM: milestone reached %q (%d of %d, VMM %s); QEMU reached %q (%s)", reached, idx+1, len(ms),
		map[bool]string{true: "still running at the deadline", false: "stopped by itself"}[res.Reason == StopKilled],
		qreached, map[bool]string{true: "exited: " + fmt.Sprint(qemuErr), false: "still running at the deadline"}[qemu.exited])
}

// vcpuDump says where each vCPU of a hung guest is, twice a second apart
// (paused for each look): RIP against the kernel's symbols, CS and its DPL
// (kernel or user), RFLAGS.IF, CR2 (the last fault) and CR3, and whether
// it moved. The machine is left paused.
func vcpuDump(m *Machine) string {
	var b strings.Builder
	for look := 1; look <= 2; look++ {
		if look == 2 {
			m.Resume()
			time.Sleep(time.Second)
		}
		if err := m.Pause(5 * time.Second); err != nil {
			fmt.Fprintf(&b, "pause: %v\n", err)
			return b.String()
		}
		for i, v := range m.vcpus {
			r, err := v.GetRegs()
			if err != nil {
				fmt.Fprintf(&b, "look %d vCPU %d: %v\n", look, i, err)
				continue
			}
			sr, _ := v.GetSregs()
			fmt.Fprintf(&b, "look %d vCPU %d: RIP=%#x CS=%#x (DPL %d) RSP=%#x RFLAGS=%#x RAX=%#x RDI=%#x CR2=%#x CR3=%#x\n",
				look, i, r.RIP, sr.CS.Selector, sr.CS.DPL, r.RSP, r.RFLAGS, r.RAX, r.RDI, sr.CR2, sr.CR3)
		}
	}
	return b.String()
}
