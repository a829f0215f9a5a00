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
	"sync"
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
	"golang.org/x/sys/unix"
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
	// virtconsole of the virtio-serial-pci device. QEMU writes what a
	// virtconsole's guest sends to the chardev without flow control: what
	// the socket does not take at once (EAGAIN) is dropped
	// (hw/char/virtio-console.c, flush_buf; only virtserialports are
	// throttled). So the socket is made big enough that it never fills: see
	// agentChannel.
	agentDev = "/dev/hvc0"
	// agentSockBuf is the send buffer of QEMU's end of the agent channel.
	// What the guest has in flight towards us is bounded by the mux's
	// credit windows (256 KiB per stream, a handful of streams here), so
	// QEMU's writes never meet a full socket, however long the test
	// process is descheduled.
	agentSockBuf = 64 << 20
	guestMiB     = 512
	guestCPU     = 2
)

// vm is a booted guest: QEMU with our kernel and initramfs, the agent
// reached over the virtio-console.
type vm struct {
	cmd     *exec.Cmd
	console string // the guest's ttyS0 (kernel console, agent log)
	qemuOut syncbuf.Buffer
	exited  chan struct{} // closed once QEMU was reaped; waitErr is set then
	waitErr error
	conn    *stallConn // the host end of the agent channel
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

	qemuEnd, hostEnd, err := agentChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer qemuEnd.Close()

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
		"-chardev", "socket,id=agent,fd=3", // ExtraFiles[0]
		"-device", "virtconsole,chardev=agent,bus=vser.0",
		"-drive", "file="+img+",format=raw,if=none,id=rootfs,readonly=on",
		"-device", "virtio-blk-pci,drive=rootfs",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline)
	v.cmd.Stdout, v.cmd.Stderr = &v.qemuOut, &v.qemuOut
	v.cmd.ExtraFiles = []*os.File{qemuEnd}
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

	v.conn = &stallConn{Conn: hostEnd}
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

// agentChannel makes the agent channel: a connected pair of unix stream
// sockets, one end for QEMU's chardev (passed as fd 3: connected before
// the guest runs, so nothing the guest sends is lost to a late connect)
// with a send buffer of agentSockBuf, the other ours.
func agentChannel() (qemuEnd *os.File, hostEnd net.Conn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("agent channel: %w", err)
	}
	qemuEnd = os.NewFile(uintptr(fds[0]), "agent-qemu")
	host := os.NewFile(uintptr(fds[1]), "agent-host")
	defer host.Close() // FileConn dups it
	// SO_SNDBUFFORCE: past net.core.wmem_max (we are root)
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, agentSockBuf); err != nil {
		qemuEnd.Close()
		return nil, nil, fmt.Errorf("agent channel: SO_SNDBUFFORCE: %w", err)
	}
	if hostEnd, err = net.FileConn(host); err != nil {
		qemuEnd.Close()
		return nil, nil, fmt.Errorf("agent channel: %w", err)
	}
	return qemuEnd, hostEnd, nil
}

// stallConn is the host end of the agent channel. Normally it only
// passes reads through; the "slow host reader" case makes it pause after
// every so many bytes, as a descheduled test process would, so that
// QEMU's writes to the socket block (EAGAIN) while the guest keeps
// writing: the channel must hold the guest back then, never drop bytes.
type stallConn struct {
	net.Conn
	mu    sync.Mutex
	every int           // pause after this many bytes read (0: never)
	pause time.Duration // how long
	read  int           // bytes read since the last pause
}

// stall makes Read pause for pause after every every bytes (every 0:
// stop stalling).
func (c *stallConn) stall(every int, pause time.Duration) {
	c.mu.Lock()
	c.every, c.pause, c.read = every, pause, 0
	c.mu.Unlock()
}

func (c *stallConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	var sleep time.Duration
	if c.every > 0 && c.read >= c.every {
		sleep, c.read = c.pause, 0
	}
	c.mu.Unlock()
	time.Sleep(sleep)
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read += n
	c.mu.Unlock()
	return n, err
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
