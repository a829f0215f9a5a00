package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/internal/kvmtest"
	"github.com/hyperhq/hyperd-go/sandbox/kvmdrv"

	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/guest/guesttest"
)

// hardwareVirt reports whether the host CPU has vmx/svm: only then can a
// guest kernel finish booting on its KVM (DESIGN.md, "The machines you test on").
func hardwareVirt() bool {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Contains(string(b), " vmx") || strings.Contains(string(b), " svm")
}

// repoBuild is <repo>/build, where make kernel leaves vmlinux and modules/.
func repoBuild() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(filepath.Dir(file)), "build")
}

// suiteDriver is the sandbox driver of the suites that run against one
// driver (routes, registry, tty, build flags, stopVM): $HYPERD_E2E_DRIVER,
// "local" by default. The nested runner sets it to kvm inside L1, where
// the same suites run with every pod in a VM.
func suiteDriver() string {
	if d := os.Getenv("HYPERD_E2E_DRIVER"); d != "" {
		return d
	}
	return "local"
}

// nested reports whether these tests run inside the nested runner's L1
// (e2e/nested sets HYPERD_NESTED): there every guest instruction is
// emulated by QEMU's TCG on top of nested SVM, and a pod VM's boot takes
// 10-60 s of wall time depending on the host's load instead of well under
// one.
func nested() bool { return os.Getenv("HYPERD_NESTED") != "" }

// slow scales a test deadline for where the tests run: 4x inside the
// nested L1. Deadlines bound waits for things that must happen; they are
// not performance assertions (those are benchmarks).
func slow(d time.Duration) time.Duration {
	if nested() {
		return 4 * d
	}
	return d
}

// driverFlags are the extra hyperd flags a driver needs in these tests.
// Inside the nested L1 the boot deadline is 2 minutes (a TCG boot takes
// 10-60 s), and a pod VM whose guest the emulated SVM crashes or wedges
// while booting is booted again, up to twice (--boot-retries; e2e/nested
// DefaultCPU says why).
func driverFlags(t testing.TB, driver string) []string {
	t.Helper()
	if driver != "kvm" {
		return nil
	}
	var extra []string
	if nested() {
		extra = []string{"--boot-timeout", "120", "--boot-retries", "2"}
	}
	// the project's own guest kernel, hyperd's default (named: the hyperd
	// under test may not sit next to build/; cmd/hyperd TestDefaultKernel
	// covers the default itself)
	if _, err := os.Stat(ownKernel()); err != nil {
		t.Fatalf("the kvm driver needs the guest kernel: %v (run make kernel)", err)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Fatalf("the kvm driver needs /dev/kvm: %v", err)
	}
	return append([]string{"--kernel", ownKernel()}, extra...)
}

// ownKernel is the project's guest kernel (guest/kernel), hyperd's default;
// debianKernel is the Debian cloud kernel, the tested alternative whose
// modules go in the initramfs.
func ownKernel() string    { return filepath.Join(repoBuild(), "guest", "vmlinux") }
func debianKernel() string { return filepath.Join(repoBuild(), "vmlinux") }

// TestE2EKVM runs the whole end-to-end suite against the kvm driver, then
// the boot-failure path through the daemon: the pod's VM is created and
// sized, its disk and vsock attached, its console captured; a guest that
// boots but never answers (no agent in its initramfs) hits the boot
// deadline and fails the pod with the console tail as the reason; a daemon
// killed -9 during a boot releases that VM on restart; no VM process,
// socket or pod file is left behind.
//
// It needs hardware virtualization. On a host without vmx/svm (software-
// nested KVM, where a guest kernel cannot finish booting) the kvm suites,
// this one included, run inside the nested runner's L1 instead
// (e2e/nested TestKVMSuites), which reports them; this test says so.
func TestE2EKVM(t *testing.T) {
	report("kvm", "FAILED")
	requireHost(t)
	if !hardwareVirt() {
		report("kvm", "not here (no vmx/svm): the kvm suites run inside the nested runner's L1 (e2e/nested TestKVMSuites)")
		return
	}
	t.Run("Pods", func(t *testing.T) { runE2E(t, "kvm") })
	t.Run("BootFailure", runKVMBootFailure)
	t.Run("VMKilled", runKVMVMKilled)
	t.Run("DebianKernel", runKVMDebianKernel)
	if !t.Failed() {
		where := "hardware virtualization"
		if nested() {
			where = "nested: QEMU TCG, emulated SVM"
		}
		report("kvm", "ran, passed (pods in VMs; "+where+")")
	}
}

// vmProcs returns the pids of `hyperd vm run` processes whose command line
// mentions sub, with their argument vectors.
func vmProcs(sub string) map[int][]string {
	out := map[int][]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid := 0
		for _, c := range e.Name() {
			if c < '0' || c > '9' {
				pid = -1
				break
			}
			pid = pid*10 + int(c-'0')
		}
		if pid <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(sub)) {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 2 && args[1] == "vm" && args[2] == "run" {
			out[pid] = args
		}
	}
	return out
}

func waitVM(t *testing.T, d *daemon, sub string, within time.Duration) (int, []string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for pid, args := range vmProcs(sub) {
			return pid, args
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no `hyperd vm run` process for %s within %v; log:\n%s", sub, within, d.log())
	return 0, nil
}

func waitNoVM(t *testing.T, sub string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for len(vmProcs(sub)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("VM process still running for %s: %v", sub, vmProcs(sub))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// argAfter returns the value following flag in args.
func argAfter(args []string, flag string) []string {
	var v []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			v = append(v, args[i+1])
		}
	}
	return v
}

// sockets lists the unix sockets under dir.
func sockets(dir string) []string {
	var s []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode()&os.ModeSocket != 0 {
			s = append(s, p)
		}
		return nil
	})
	return s
}

type podStatus struct {
	Status struct{ Phase, Reason, Message string }
}

func podPhase(t *testing.T, d *daemon, id string) podStatus {
	t.Helper()
	var ps podStatus
	code, b := d.curl("GET", "/pod/info?podId="+id, "")
	if code != 200 || json.Unmarshal([]byte(b), &ps) != nil {
		t.Fatalf("GET /pod/info %s = %d %s", id, code, trunc(b))
	}
	return ps
}

var kernelLine = regexp.MustCompile(`(?m)^\[\s*\d+\.\d+\] `)

func runKVMBootFailure(t *testing.T) {
	bin := binaries(t)
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "hyper.sock")
	root := filepath.Join(tmp, "root")
	// the guest boots for real and never answers: no agent in its initrd
	// (scaled in the nested L1, where a TCG boot to init takes 10-30 s)
	bootTimeout := slow(20 * time.Second)
	initrd := filepath.Join(tmp, "silent.cpio")
	if err := imgtest.SilentInitrd(initrd); err != nil {
		t.Fatal(err)
	}
	// pod VMs boot quiet (kvmdrv.BaseCmdline); --kernel-args loglevel=7
	// brings the whole boot log back to console.log
	// (the cold boot's path: a template of this guest could never be made)
	flags := append(driverFlags(t, "kvm"), "--boot-timeout", strconv.Itoa(int(bootTimeout/time.Second)), "--boot-retries", "0", "--initrd", initrd, "--kernel-args", "loglevel=7", "--vm-template=false")
	d := startDaemon(t, bin, root, sock, "kvm", flags...)
	defer d.stop()
	ctx := ctxT(t, 5*time.Minute)

	d.expect("GET", "/info", "", 200, `"SandboxDriver":"kvm"`)
	d.loadBusybox()

	// --- a pod sized 1 vCPU / 160 MiB: created, VM started, boot deadline
	id, err := d.c.CreatePod(ctx, []byte(`{"id":"vmpod","resource":{"vcpu":1,"memory":160},"volumes":[{"name":"data"}],"containers":[{"name":"c1","image":"busybox:latest","command":["echo","hi"],"volumes":[{"volume":"data","path":"/data"}]}]}`))
	if err != nil {
		t.Fatalf("create pod: %v\n%s", err, d.log())
	}
	podDir := filepath.Join(root, "pods", id)
	type answer struct {
		code int
		body string
	}
	started := make(chan answer, 1)
	t0 := time.Now()
	go func() {
		code, body := d.curl("POST", "/pod/start?podId="+id, "")
		started <- answer{code, body}
	}()
	pid, args := waitVM(t, d, podDir, 30*time.Second)
	t.Logf("VM process %d: %q", pid, args)
	if got := argAfter(args, "--kernel"); len(got) != 1 || got[0] != ownKernel() {
		t.Errorf("VM kernel %v, want the project's own %s", got, ownKernel())
	}
	if got := argAfter(args, "--append"); len(got) != 1 || !strings.HasPrefix(got[0], kvmdrv.BaseCmdline+" loglevel=7") {
		t.Errorf("VM command line %q, want hyperd's then --kernel-args", got)
	}
	if got := argAfter(args, "--mem"); len(got) != 1 || got[0] != "160M" {
		t.Errorf("VM memory %v, want 160M from the pod's resource", got)
	}
	if got := argAfter(args, "--cpus"); len(got) != 1 || got[0] != "1" {
		t.Errorf("VM vCPUs %v, want 1", got)
	}
	disks := argAfter(args, "--disk")
	if len(disks) != 2 || !strings.HasSuffix(disks[0], ",ro") {
		t.Errorf("VM disks %v, want the image read-only and the volume", disks)
	} else {
		if st, err := os.Stat(strings.TrimSuffix(disks[0], ",ro")); err != nil || st.Size() == 0 {
			t.Errorf("image disk %s: %v", disks[0], err)
		}
		// the volume: a fresh ext4 image under the pod, writable
		if disks[1] != filepath.Join(podDir, "volumes", "data.img") {
			t.Errorf("volume disk %q, want %s (rw)", disks[1], filepath.Join(podDir, "volumes", "data.img"))
		} else if out, err := exec.Command("dumpe2fs", "-h", disks[1]).CombinedOutput(); err != nil || !strings.Contains(string(out), "clean") {
			t.Errorf("volume image is not a clean ext4 file system: %v\n%s", err, out)
		}
	}
	uds := argAfter(args, "--vsock")
	if len(uds) != 1 || !strings.HasPrefix(uds[0], podDir) {
		t.Fatalf("VM vsock %v, want a socket under %s", uds, podDir)
	}
	// The vsock hybrid socket is served by the VM process, and the pod is
	// not reported running before its agent answered.
	var ans answer
	deadline := time.After(bootTimeout + 30*time.Second)
	sawSocket := false
poll:
	for {
		select {
		case ans = <-started:
			break poll
		case <-deadline:
			t.Fatalf("POST /pod/start did not return within the boot deadline + 30s; log:\n%s", d.log())
		case <-time.After(500 * time.Millisecond):
		}
		if st, err := os.Stat(uds[0]); err == nil && st.Mode()&os.ModeSocket != 0 {
			sawSocket = true
		}
		if ps := podPhase(t, d, id); ps.Status.Phase == "Running" {
			t.Fatalf("pod reported Running although its agent never answered: %+v", ps)
		}
	}
	took := time.Since(t0)
	t.Logf("pod start failed after %v: %d %s", took, ans.code, trunc(ans.body))
	if !sawSocket {
		t.Errorf("the VM's vsock socket %s never appeared while it booted", uds[0])
	}
	if took < bootTimeout || took > bootTimeout+20*time.Second {
		t.Errorf("start failed after %v; the boot deadline is %v", took, bootTimeout)
	}
	if ans.code != 500 || !strings.Contains(ans.body, "did not answer within "+bootTimeout.String()) || !strings.Contains(ans.body, "console tail") {
		t.Errorf("POST /pod/start = %d %s; want 500 with the boot deadline and the console tail", ans.code, trunc(ans.body))
	}
	var er struct{ Message string }
	if json.Unmarshal([]byte(ans.body), &er) != nil || !kernelLine.MatchString(er.Message) {
		t.Errorf("the start error carries no kernel console line: %q", trunc(ans.body))
	}
	ps := podPhase(t, d, id)
	if ps.Status.Phase != "Failed" || ps.Status.Reason != "StartFailed" || !kernelLine.MatchString(ps.Status.Message) {
		t.Errorf("pod status %+v; want Failed/StartFailed with the console tail", ps.Status)
	}
	// the console log is kept with the pod: the guest saw the RAM we sized
	console, err := os.ReadFile(filepath.Join(podDir, "sandbox", "console.log"))
	if err != nil {
		t.Fatalf("console log not kept: %v", err)
	}
	for _, want := range []string{"Linux version", "BIOS-e820: [mem 0x0000000000100000-0x0000000009ffffff] usable", "silent init: no agent"} {
		if !bytes.Contains(console, []byte(want)) {
			t.Errorf("console log lacks %q:\n%s", want, trunc(string(console)))
		}
	}
	// every resource released: no VM, no socket; the container failed
	waitNoVM(t, podDir, 5*time.Second)
	if s := sockets(podDir); len(s) != 0 {
		t.Errorf("sockets left after the failed start: %v", s)
	}
	if ci := d.expect("GET", "/container/info?container=c1", "", 200, `"phase":"`); strings.Contains(ci, `"phase":"running"`) {
		t.Errorf("container of the failed pod reported running: %s", ci)
	}
	d.expect("GET", "/pod/stats?podId="+id, "", 409, "not running")

	// --- kill -9 of hyperd while a VM boots: the restarted daemon releases it
	id2, err := d.c.CreatePod(ctx, []byte(`{"id":"vmpod2","containers":[{"name":"c2","image":"busybox:latest","command":["true"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	pod2 := filepath.Join(root, "pods", id2)
	go d.c.StartPod(context.Background(), id2) // its answer dies with the daemon
	pid2, args2 := waitVM(t, d, pod2, 30*time.Second)
	if got := argAfter(args2, "--mem"); len(got) != 1 || got[0] != "128M" {
		t.Errorf("default VM memory %v, want 128M", got)
	}
	time.Sleep(time.Second) // the VM boots; the daemon has recorded its handle
	if ps := podPhase(t, d, id2); ps.Status.Phase != "Pending" {
		t.Errorf("booting pod's phase %q, want Pending", ps.Status.Phase)
	}
	d.cmd.Process.Kill()
	d.cmd.Process.Wait()
	time.Sleep(200 * time.Millisecond)
	if len(vmProcs(pod2)) != 1 {
		t.Fatalf("the VM process %d did not outlive the daemon (own session expected)", pid2)
	}
	d = startDaemon(t, bin, root, sock, "kvm", flags...)
	ps = podPhase(t, d, id2)
	for i := 0; i < 150 && ps.Status.Reason == "Reattaching"; i++ { // reattaches run in the background
		time.Sleep(100 * time.Millisecond)
		ps = podPhase(t, d, id2)
	}
	if ps.Status.Phase != "Failed" || ps.Status.Reason != "SandboxLost" || !strings.Contains(ps.Status.Message, "still booting") {
		t.Errorf("after restart the booting pod is %+v; want Failed/SandboxLost (still booting)", ps.Status)
	}
	waitNoVM(t, pod2, 5*time.Second)
	if s := sockets(pod2); len(s) != 0 {
		t.Errorf("sockets left after the restart: %v", s)
	}
	ps = podPhase(t, d, id)
	if ps.Status.Phase != "Failed" || ps.Status.Reason != "StartFailed" {
		t.Errorf("the first pod's record after restart: %+v", ps.Status)
	}

	// --- delete: the pods' files go
	for _, p := range []string{id, id2} {
		d.expect("DELETE", "/pod?podId="+p, "", 200, "")
		if _, err := os.Stat(filepath.Join(root, "pods", p)); !os.IsNotExist(err) {
			t.Errorf("pod dir of %s left after delete: %v", p, err)
		}
	}
	if n := len(vmProcs(root)); n != 0 {
		t.Errorf("%d VM processes left", n)
	}
}

// TestE2EKVMGuestPanic: a pod whose guest kernel panics while booting (a
// tiny PVH kernel that prints a panic line and resets, as Linux does with
// panic=-1) fails at once through hyperd with reason GuestPanic, the panic
// line in its message, its console log kept, its VM gone, and hyperd fine.
func TestE2EKVMGuestPanic(t *testing.T) {
	requireHost(t)
	kvmtest.Need(t)
	bin := binaries(t)
	tmp := t.TempDir()
	kernel := filepath.Join(tmp, "panic-kernel")
	const line = "Kernel panic - not syncing: VFS: Unable to mount root fs"
	if err := os.WriteFile(kernel, guesttest.Kernel(line+"\n", guesttest.Reset), 0o644); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(tmp, "initrd")
	os.WriteFile(initrd, []byte("unused"), 0o644)
	root := filepath.Join(tmp, "root")
	// the cold boot's path (a template of a panicking guest cannot be made)
	d := startDaemon(t, bin, root, filepath.Join(tmp, "hyper.sock"), "kvm", "--kernel", kernel, "--initrd", initrd, "--vm-template=false")
	defer d.stop()
	ctx := ctxT(t, time.Minute)
	d.loadBusybox()
	id, err := d.c.CreatePod(ctx, []byte(`{"id":"panics","containers":[{"image":"busybox:latest","command":["true"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	d.expect("POST", "/pod/start?podId="+id, "", 500, "panicked")
	if took := time.Since(t0); took > 20*time.Second {
		t.Errorf("the panic was reported after %v", took)
	}
	ps := podPhase(t, d, id)
	if ps.Status.Phase != "Failed" || ps.Status.Reason != "GuestPanic" || !strings.Contains(ps.Status.Message, line) {
		t.Errorf("pod status %+v; want Failed/GuestPanic with the panic line", ps.Status)
	}
	podDir := filepath.Join(root, "pods", id)
	if b, err := os.ReadFile(filepath.Join(podDir, "sandbox", "console.log")); err != nil || !strings.Contains(string(b), line) {
		t.Errorf("console log not kept (%v): %q", err, b)
	}
	waitNoVM(t, podDir, 5*time.Second)
	if s := sockets(podDir); len(s) != 0 {
		t.Errorf("sockets left: %v", s)
	}
	d.expect("GET", "/_ping", "", 200, "OK")
}

// runKVMDebianKernel: --kernel still boots the Debian cloud kernel, whose
// virtio, vsock and file-system drivers are modules: hyperd puts them (the
// modules/ next to that vmlinux) in the initramfs it builds, the agent
// loads them, and a pod runs and prints as with hyperd's own kernel, which
// needs none. Part of TestE2EKVM.
func runKVMDebianKernel(t *testing.T) {
	bin := binaries(t)
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	flags := driverFlags(t, "kvm")
	for i := range flags[:len(flags)-1] {
		if flags[i] == "--kernel" {
			flags[i+1] = debianKernel()
		}
	}
	d := startDaemon(t, bin, root, filepath.Join(tmp, "hyper.sock"), "kvm", flags...)
	defer d.stop()
	ctx := ctxT(t, 5*time.Minute)
	d.loadBusybox()
	id, err := d.c.CreatePod(ctx, []byte(`{"id":"debian-kernel","containers":[{"name":"dk","image":"busybox:latest","command":["sh","-c","echo kernel $(uname -r); echo modules $(wc -l </proc/modules)"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.c.StartPod(ctx, id); err != nil {
		t.Fatalf("start on the Debian kernel: %v\n%s", err, d.log())
	}
	waitPhase(t, d, id, "Succeeded")
	out := d.expect("GET", "/container/logs?container=dk&stdout=1", "", 200, "kernel ")
	rel, err := os.ReadFile(filepath.Join(repoBuild(), "kernel.release"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kernel "+strings.TrimSpace(string(rel))) {
		t.Errorf("the pod did not run on the Debian kernel %s: %q", rel, out)
	}
	if strings.Contains(out, "modules 0") {
		t.Errorf("no modules loaded in the Debian kernel's guest: %q", out)
	}
	d.expect("DELETE", "/pod?podId="+id, "", 200, "")
}

// runKVMVMKilled: a pod's VM process killed from outside (SIGKILL, as the
// OOM killer or an operator would) fails the pod at once with reason
// SandboxKilled and the guest's console tail in its message; the
// container's exit is recorded, nothing is left behind, and hyperd goes on
// serving. Part of TestE2EKVM (it needs a guest that boots).
func runKVMVMKilled(t *testing.T) {
	bin := binaries(t)
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	d := startDaemon(t, bin, root, filepath.Join(tmp, "hyper.sock"), "kvm", driverFlags(t, "kvm")...)
	defer d.stop()
	ctx := ctxT(t, 3*time.Minute)
	d.loadBusybox()
	id, err := d.c.CreatePod(ctx, []byte(`{"id":"victim","containers":[{"name":"v1","image":"busybox:latest","command":["sleep","1000"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.c.StartPod(ctx, id); err != nil {
		t.Fatalf("start: %v\n%s", err, d.log())
	}
	podDir := filepath.Join(root, "pods", id)
	vms := vmProcs(podDir)
	if len(vms) != 1 {
		t.Fatalf("VM processes of the pod: %v", vms)
	}
	for pid := range vms {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(30 * time.Second)
	var ps podStatus
	for {
		ps = podPhase(t, d, id)
		if ps.Status.Phase == "Failed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ps.Status.Phase != "Failed" || ps.Status.Reason != "SandboxKilled" || !strings.Contains(ps.Status.Message, "console tail") ||
		!kernelLine.MatchString(ps.Status.Message) {
		t.Errorf("pod status after its VM was killed: %+v; want Failed/SandboxKilled with the console tail", ps.Status)
	}
	if ci := d.expect("GET", "/container/info?container=v1", "", 200, `"phase":"`); strings.Contains(ci, `"phase":"running"`) {
		t.Errorf("the container of the killed VM is still reported running: %s", ci)
	}
	waitNoVM(t, podDir, 5*time.Second)
	if s := sockets(podDir); len(s) != 0 {
		t.Errorf("sockets left: %v", s)
	}
	d.expect("GET", "/_ping", "", 200, "OK")
	d.expect("DELETE", "/pod?podId="+id, "", 200, "")
}
