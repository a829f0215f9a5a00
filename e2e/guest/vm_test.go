package guest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/client"
	"github.com/hyperhq/hyperd-go/agent/mux"
	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/initramfs"
	"github.com/hyperhq/hyperd-go/internal/syncbuf"
	"github.com/hyperhq/hyperd-go/internal/testbin"
)

const (
	// bootTimeout bounds QEMU start → the agent's READY frame. Under TCG
	// the kernel reaches its init in a few seconds; this is slack for a
	// loaded CI machine, not an expectation.
	bootTimeout = 120 * time.Second
	// vmDeadline bounds the whole VM's life: past it QEMU is killed, so a
	// hung guest makes every remaining case fail at once (the agent
	// session ends) instead of each waiting out its own timeout. A passing
	// run takes well under a minute.
	vmDeadline = 5 * time.Minute
	// agentDev is the guest's end of the agent channel: the first
	// virtconsole of the virtio-serial-pci device.
	agentDev = "/dev/hvc0"
	guestMiB = 512
	guestCPU = 2
)

// vm is a booted guest: QEMU with our kernel and initramfs, the agent
// reached over the virtio-console.
type vm struct {
	cmd     *exec.Cmd
	console string // the guest's ttyS0 (kernel console, agent log)
	qemuOut syncbuf.Buffer
	exited  chan struct{} // closed once QEMU was reaped; waitErr is set then
	waitErr error
	conn    net.Conn
	sess    *mux.Session
	agent   *client.Client
	started time.Time
	ready   time.Duration // QEMU start → the agent's READY frame
	killed  atomic.Bool   // by the vmDeadline timer
}

// repoRoot is the module root (this file is in e2e/guest).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// prerequisites finds what the harness needs or fails with the reason.
func prerequisites(t testing.TB) (qemu, kernel, modules string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the guest harness needs root (mkfs.ext4 -d keeps ownership, the agent's containers run as root in the guest)")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 is needed to boot the guest under TCG (apt-get install qemu-system-x86): %v", err)
	}
	// the bzImage next to the vmlinux the other kernel tests use
	// ($HYPERD_KERNEL), with its modules
	dir := filepath.Join(repoRoot(), "build")
	if k := os.Getenv("HYPERD_KERNEL"); k != "" {
		dir = filepath.Dir(k)
	}
	kernel = filepath.Join(dir, "vmlinuz")
	modules = filepath.Join(dir, "modules")
	for _, p := range []string{kernel, filepath.Join(modules, "order")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("guest kernel missing: run `make kernel` (or set HYPERD_KERNEL to a vmlinux with vmlinuz and modules/ next to it): %v", err)
		}
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Fatalf("mkfs.ext4 is needed for the rootfs image (apt-get install e2fsprogs): %v", err)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatal("/bin/busybox is missing: install Debian's busybox-static")
	}
	return qemu, kernel, modules
}

// buildAgent builds a static hyper-agent, the guest's /init.
func buildAgent(t testing.TB, dir string) string {
	t.Helper()
	return testbin.Build(t, "./cmd/hyper-agent")
}

// rootfsImage makes an ext4 image of a busybox rootfs (mkfs.ext4 -d) with
// marker as the content of /etc/marker, and the files the commit case
// changes and deletes.
func rootfsImage(t testing.TB, dir, marker string) string {
	t.Helper()
	root := filepath.Join(dir, "rootfs")
	if err := imgtest.Rootfs(root); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/marker":  marker + "\n",
		"etc/old":     "old\n",
		"etc/gone":    "gone\n",
		"var/lib/old": "old\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "hyperroot", "-d", root, img, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d: %v\n%s", err, out)
	}
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	return img
}

// bootVM boots the guest and connects to its agent. QEMU is killed, and
// every file removed, when t ends.
func bootVM(t *testing.T, marker string) *vm {
	t.Helper()
	qemu, kernel, modules := prerequisites(t)
	dir := t.TempDir()
	agentBin := buildAgent(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	initrd, err := initramfs.Build(ctx, initramfs.Options{AgentPath: agentBin, ModulesDir: modules, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	img := rootfsImage(t, dir, marker)

	// QEMU connects to our socket at start-up (it is the client), so the
	// stream exists before the guest runs and nothing it sends is lost.
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	v := &vm{console: filepath.Join(dir, "console.log"), exited: make(chan struct{})}
	cmdline := strings.Join([]string{
		"console=ttyS0", "panic=-1", "hyper_agent_serial=" + agentDev,
	}, " ")
	v.cmd = exec.Command(qemu,
		"-accel", "tcg", "-M", "pc", "-cpu", "max",
		"-m", fmt.Sprint(guestMiB), "-smp", fmt.Sprint(guestCPU),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:"+v.console,
		"-device", "virtio-serial-pci,id=vser",
		"-chardev", "socket,id=agent,path="+sock,
		"-device", "virtconsole,chardev=agent,bus=vser.0",
		"-drive", "file="+img+",format=raw,if=none,id=rootfs,readonly=on",
		"-device", "virtio-blk-pci,drive=rootfs",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline)
	v.cmd.Stdout, v.cmd.Stderr = &v.qemuOut, &v.qemuOut
	// QEMU dies with the test binary even if the test is killed.
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	go func() { v.waitErr = v.cmd.Wait(); close(v.exited) }()
	deadline := time.AfterFunc(vmDeadline, func() {
		v.killed.Store(true)
		v.cmd.Process.Kill()
	})
	t.Cleanup(func() {
		deadline.Stop()
		if v.killed.Load() {
			t.Errorf("QEMU was killed: the guest outlived the harness's %v deadline", vmDeadline)
		}
		if v.agent != nil {
			v.agent.Close()
		}
		if v.sess != nil {
			v.sess.Close()
		}
		select {
		case <-v.exited:
		default:
			v.cmd.Process.Kill()
			<-v.exited
		}
	})

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	select {
	case c, ok := <-accepted:
		if !ok {
			t.Fatal("accepting QEMU's agent channel failed")
		}
		v.conn = c
	case <-v.exited:
		t.Fatalf("QEMU exited at start-up: %v\n%s", v.waitErr, v.qemuOut.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("QEMU did not connect its agent channel in 30s\n%s", v.qemuOut.String())
	}
	v.sess = mux.Client(v.conn)
	select {
	case <-v.sess.Ready():
		v.ready = time.Since(v.started)
	case <-v.sess.Done():
		t.Fatalf("agent channel closed before READY: %v%s", v.sess.Err(), v.diag())
	case <-v.exited:
		t.Fatalf("QEMU exited before the agent was READY: %v%s", v.waitErr, v.diag())
	case <-time.After(bootTimeout):
		t.Fatalf("no READY from the agent within %v%s", bootTimeout, v.diag())
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	v.agent, err = client.New(cctx, client.MuxDialer(v.sess))
	if err != nil {
		t.Fatalf("agent hello over the virtio-console: %v%s", err, v.diag())
	}
	return v
}

// diag is the tail of the guest console and QEMU's own output, for
// failure messages.
func (v *vm) diag() string {
	b, err := os.ReadFile(v.console)
	if err != nil {
		return fmt.Sprintf("\n(no console log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 80 {
		lines = lines[len(lines)-80:]
	}
	s := "\n--- guest console (ttyS0), last lines ---\n" + strings.Join(lines, "\n")
	if q := v.qemuOut.String(); q != "" {
		s += "\n--- qemu ---\n" + q
	}
	return s
}

// consoleText is the whole guest console so far.
func (v *vm) consoleText() string {
	b, _ := os.ReadFile(v.console)
	return string(b)
}

// waitExit waits for QEMU to exit by itself.
func (v *vm) waitExit(d time.Duration) error {
	select {
	case <-v.exited:
		return v.waitErr
	case <-time.After(d):
		return errors.New("timeout")
	}
}
