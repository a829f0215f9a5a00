package vmm

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/internal/testbin"

	"github.com/u-root/u-root/pkg/cpio"
)

// milestone is a point of a Linux boot recognised in the console output.
type milestone struct {
	name string
	re   *regexp.Regexp
}

// bootMilestones are the boot's milestones in the order they happen. They
// match both our VMM's and QEMU's console, so the two can be compared.
// With hw false the kernel brings up one CPU (see bootCmdline).
func bootMilestones(cpus int, hw bool) []milestone {
	up := fmt.Sprintf(`smp: Brought up 1 node, %d CPUs`, cpus)
	if !hw || lateSMP(hw) {
		up = `smp: Brought up 1 node, 1 CPU\b`
	}
	online := cpus // the init's count, after it brought up the rest (lateSMP)
	if !hw {
		online = 1 // maxcpus=1 for good (bootCmdline)
	}
	m := func(name, re string) milestone { return milestone{name, regexp.MustCompile(re)} }
	return []milestone{
		m("kernel banner", `Linux version \d+\.\d+`),
		m("e820 map", `BIOS-e820: \[mem 0x0000000000100000-0x[0-9a-f]+\] usable`),
		m("ACPI tables", `ACPI: XSDT 0x[0-9A-F]+`),
		{"MADT CPUs", madtCPUs(cpus)},
		m("FPU", `x86/fpu: `),
		m("alternatives", `(Freeing SMP alternatives memory|smpboot: CPU0: )`),
		m("SMP up", up),
		m("devtmpfs", `devtmpfs: initialized`),
		m("subsystems", `(acpiphp: ACPI Hot Plug PCI Controller Driver|PCI: Using configuration type|PCI: System does not support PCI)`),
		m("initramfs", `(Unpacking initramfs|Freeing initrd memory|Trying to unpack rootfs)`),
		m("run /init", `Run /init as init process`),
		m("init marker", `HYPERD-BOOT: init started`),
		m("CPUs online", fmt.Sprintf(`HYPERD-BOOT: %d CPUs online`, online)),
		m("modules", `HYPERD-BOOT: modules loaded`),
		m("vsock guest->host", `HYPERD-BOOT: vsock guest->host ok`),
		m("vsock host->guest", `HYPERD-BOOT: vsock host->guest ok`),
		m("poweroff request", `HYPERD-BOOT: powering off`),
	}
}

// madtCPUs matches the kernel's line on the CPUs the MADT lists, as 6.1
// (Debian's cloud kernel) and 6.12 (the project's own) word it.
func madtCPUs(cpus int) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`(smpboot: Allowing %d CPUs, 0 hotplug CPUs|CPU topo: Allowing %d present CPUs plus 0 hotplug CPUs)`, cpus, cpus))
}

// milestoneLog is an io.Writer for a console that records when each
// milestone first appears and keeps the whole log.
type milestoneLog struct {
	mu      sync.Mutex
	start   time.Time
	ms      []milestone
	seen    []time.Duration // 0 = not seen
	buf     bytes.Buffer
	partial []byte
	copyTo  io.Writer
	exited  bool // the peer process ended before the deadline
}

func newMilestoneLog(ms []milestone, copyTo io.Writer) *milestoneLog {
	return &milestoneLog{start: time.Now(), ms: ms, seen: make([]time.Duration, len(ms)), copyTo: copyTo}
}

func (l *milestoneLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.copyTo != nil {
		l.copyTo.Write(p)
	}
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		for j, m := range l.ms {
			if l.seen[j] == 0 && m.re.MatchString(line) {
				l.seen[j] = time.Since(l.start)
			}
		}
	}
	return len(p), nil
}

// reached is the index of the furthest milestone seen (-1 for none) and
// when it was seen.
func (l *milestoneLog) reached() (int, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.seen) - 1; i >= 0; i-- {
		if l.seen[i] != 0 {
			return i, l.seen[i]
		}
	}
	return -1, 0
}

func (l *milestoneLog) at(i int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[i]
}

func (l *milestoneLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *milestoneLog) tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (l *milestoneLog) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for i, m := range l.ms {
		if l.seen[i] == 0 {
			fmt.Fprintf(&b, "  %-20s -\n", m.name)
		} else {
			fmt.Fprintf(&b, "  %-20s %8.2fs\n", m.name, l.seen[i].Seconds())
		}
	}
	return b.String()
}

// repoRoot is the module root (two levels up from this file's directory).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

// testKernel returns the vmlinux and module directory `make kernel` made.
func testKernel(t testing.TB) (kernel, modules string) {
	t.Helper()
	kernel = os.Getenv("HYPERD_KERNEL")
	if kernel == "" {
		kernel = filepath.Join(repoRoot(), "build", "vmlinux")
	}
	modules = filepath.Join(filepath.Dir(kernel), "modules")
	need := []string{kernel}
	if os.Getenv("HYPERD_KERNEL") == "" {
		// the Debian kernel's virtio and vsock drivers are modules; a
		// kernel given by HYPERD_KERNEL (the project's own, say) may have
		// them built in and no modules/ beside it
		need = append(need, filepath.Join(modules, "order"))
	} else if _, err := os.Stat(modules); err != nil {
		modules = ""
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("guest kernel missing: run `make kernel` (or set HYPERD_KERNEL): %v", err)
		}
	}
	return kernel, modules
}

// buildBootInitramfs builds testdata/bootinit as a static binary and packs
// it as /init with the guest modules (none if modules is "") into a gzip
// newc cpio.
func buildBootInitramfs(t testing.TB, modules string) string {
	t.Helper()
	recs := []cpio.Record{cpio.Directory("modules", 0o755)}
	var order []byte
	if modules != "" {
		var err error
		if order, err = os.ReadFile(filepath.Join(modules, "order")); err != nil {
			t.Fatal(err)
		}
	}
	recs = append(recs, cpio.StaticFile("modules/order", string(order), 0o644))
	for _, m := range strings.Fields(string(order)) {
		b, err := os.ReadFile(filepath.Join(modules, m))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, cpio.StaticFile("modules/"+m, string(b), 0o644))
	}
	return testInitramfs(t, "./vmm/testdata/bootinit", "initramfs.cpio.gz", recs...)
}

// testInitramfs builds the test init pkg as a static binary and packs it
// as /init, with /dev/console, /dev, /proc and the extra records, into a
// gzip newc cpio named name in a temporary directory.
func testInitramfs(t testing.TB, pkg, name string, extra ...cpio.Record) string {
	t.Helper()
	initData, err := os.ReadFile(testbin.Build(t, pkg))
	if err != nil {
		t.Fatal(err)
	}
	recs := append([]cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o755),
	}, extra...)
	recs = append(recs, cpio.StaticFile("init", string(initData), 0o755))
	out := filepath.Join(t.TempDir(), name)
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	w := cpio.Newc.Writer(zw)
	if err := cpio.WriteRecords(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// qemuBoot boots kernel+initrd under qemu-system-x86_64 -M microvm with
// KVM, its console recorded by log, until deadline or exit.
func qemuBoot(t testing.TB, kernel, initrd, cmdline string, memMiB, cpus int, deadline time.Duration, log io.Writer) error {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return fmt.Errorf("qemu-system-x86_64 is needed as the peer (apt-get install qemu-system-x86): %w", err)
	}
	cmd := exec.Command(qemu, "-M", "microvm,acpi=on", "-enable-kvm",
		// -cpu host fails on these hosts (MSR 0x10a is refused); max minus
		// arch-capabilities is the closest model that starts.
		"-cpu", "max,-arch-capabilities",
		"-m", fmt.Sprint(memMiB), "-smp", fmt.Sprint(cpus), "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ml, ok := log.(*milestoneLog); ok {
			ml.mu.Lock()
			ml.exited = true
			ml.mu.Unlock()
		}
		return err
	case <-time.After(deadline):
		cmd.Process.Kill()
		<-done
		return nil
	}
}
