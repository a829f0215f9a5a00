// This file owns one running L1: QEMU (TCG, emulated SVM) booting the
// runner's kernel and initramfs, the commands run in it, the liveness
// signals (heartbeat serial port, l1init's ping, vCPU registers over QMP),
// and its shutdown.
package nested

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Forward exposes a TCP port of L1 on host loopback (QEMU hostfwd).
type Forward struct {
	HostPort, GuestPort int
}

// Config of one L1.
type Config struct {
	QEMU   string // qemu-system-x86_64 ("" = from PATH)
	Kernel string // a bzImage (build/vmlinuz)
	Initrd string // the cpio Build wrote
	// MemMiB and CPUs size L1: 2 vCPUs with thread=multi (one vCPU froze
	// for good once a pod VM ran in it).
	MemMiB, CPUs int
	// Append is added to the kernel command line, after DefaultAppend.
	Append string
	// Dir receives console.log (L1's kernel and l1init), heartbeat.log and
	// the QMP socket.
	Dir      string
	Forwards []Forward
	// BootTimeout bounds QEMU start → l1init answering a ping.
	BootTimeout time.Duration
	// Console, if set, gets a copy of L1's console as it comes.
	Console io.Writer
	// TCGThread is QEMU's -accel tcg,thread= ("" = multi).
	TCGThread string
	// CPU is QEMU's -cpu for L1 ("" = DefaultCPU).
	CPU string
}

// DefaultCPU is L1's CPU model: everything TCG emulates, SVM with nested
// paging included, but no XSAVE, none of the AVX family that needs it, and
// no 5-level paging.
//
// With plain "max" (QEMU 7.2's TCG exposes XSAVE, AVX and AVX2) pod VMs in
// L1 died at random early in their boot: a triple fault (KVM_EXIT_SHUTDOWN,
// the vCPU already reset to 0xfff0, the console cut mid-line) or a vCPU
// spinning for good at 100% guest time, at a different point each time.
// Measured 2026-11-30, the real kernel booted to its init, one guest at a
// time in an otherwise idle L1: our VMM failed 8 of 76 boots (1 and 2
// vCPUs, with and without THP in L1, with nopcid). With XSAVE and AVX
// hidden from L1, nothing else changed: 0 of 45. The guest's extended FPU
// state across nested world switches in QEMU 7.2's TCG (which gained AVX
// in that release) is the suspect, not our VMM: the only place it touches
// a guest's FPU state is its instruction assist, which ran 0 times in
// every one of those boots. QEMU microvm with KVM as the VMM in the
// same L1 died too (5 of 25 with XSAVE, 1 of 15 without), always while
// probing its serial port: a failure of its own, not this one.
//
// No LA57 either. With it L1 runs with 5-level paging, so its KVM builds
// 5-level nested page tables for every pod VM (get_npt_level follows the
// host), a mode TCG's SVM emulation rarely meets. With it, a pod VM that
// ran while others started and exited went bad: in CI, TestE2ERoutes' pod
// was gone after a second pod's VM exited; here (2026-11-30) a 4-pass run
// of that test hung L1 in its 2nd pass (both L1 vCPUs in __schedule with
// interrupts off, the heartbeat stopped); with QEMU 10.0 from backports
// the long-running pod's vCPU took #PFs in a loop (9 million injected,
// KVM debugfs pf_guest) until L1 itself died on a stack guard page; and a
// churn test (a long-running pod, other pods run --rm one after another,
// an exec into the first after each) lost a VM in 1 of 9 runs. With
// 4-level paging in L1, nothing else changed: the churn test 16 of 16 on
// QEMU 7.2 and on 10.0, and the e2e Pods suite (kill -9 of hyperd,
// reattach, exec after restart) and TestE2ERoutes passed.
const DefaultCPU = "max,-la57,-xsave,-xsavec,-xsaveopt,-xsaves,-avx,-avx2,-fma,-f16c"

// DefaultAppend is on L1's kernel command line before Config.Append:
// kvm_amd.npt=0, L1's KVM runs pod VMs on shadow page tables instead of
// nested paging (l1init passes the parameter when it loads kvm_amd).
//
// With nested paging, a pod VM's saved state was now and then replaced by
// L1's own, as L1 stood just after its VMRUN: in CI and in repeated boots
// of vmm TestBootLinux in L1, a guest stopped for good with RIP at
// __svm_vcpu_run+0x9c in L1's kvm_amd (the instruction after VMRUN), L1's
// CS, RSP and CR3, RAX holding the VMCB's address, and KVM seeing nested
// page faults at L1 page-table addresses (its first exit with that RIP
// was NPF info1 0x200000006, a fault during the walk of L1's page tables
// through the nested ones). Measured 2026-12-01, repeated TestBootLinux
// (Debian's kernel, then ours) in one L1: with nested paging 3 of 100
// boots failed (that once; a guest #PF storm that overflowed its kernel
// stack in error_entry once; once unknown); with npt=0, 0 of 194 (one more
// failed on a vsock bug of ours, since fixed). QEMU 7.2's TCG writes a
// guest's state into its VMCB at each #VMEXIT and reads it at each VMRUN,
// and nested paging is where its emulation walks two sets of page tables;
// L1's KVM never writes L1's own registers there.
const DefaultAppend = "kvm_amd.npt=0"

// L1 is a booted L1 guest.
type L1 struct {
	cfg     Config
	cmd     *exec.Cmd
	port    int // host port forwarded to l1init
	exited  chan struct{}
	waitErr error
	Booted  time.Duration // QEMU start → first pong

	stopTail chan struct{}
	tailDone chan struct{}
}

// ErrHung is returned (wrapped) when L1 itself stopped: no heartbeat on its
// serial port, whatever the command was doing.
var ErrHung = errors.New("L1 hung")

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Boot starts QEMU and waits for l1init to answer.
func Boot(ctx context.Context, cfg Config) (*L1, error) {
	if cfg.QEMU == "" {
		q, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return nil, fmt.Errorf("nested: qemu-system-x86_64 is needed (apt-get install qemu-system-x86): %w", err)
		}
		cfg.QEMU = q
	}
	if cfg.MemMiB == 0 {
		cfg.MemMiB = 4096
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.CPU == "" {
		cfg.CPU = DefaultCPU
	}
	if cfg.TCGThread == "" {
		cfg.TCGThread = "multi"
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 3 * time.Minute
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	fwd := fmt.Sprintf("user,id=n0,ipv6=off,hostfwd=tcp:127.0.0.1:%d-:%d", port, GuestPort)
	for _, f := range cfg.Forwards {
		fwd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", f.HostPort, f.GuestPort)
	}
	console := filepath.Join(cfg.Dir, "console.log")
	hb := filepath.Join(cfg.Dir, "heartbeat.log")
	os.Remove(filepath.Join(cfg.Dir, "qmp.sock"))
	// nokaslr: in 31 REST walks four failures (an L1 hang, two pod VMs
	// triple-faulting early in their boot) all came with KASLR on in L1,
	// none in 16 runs with nokaslr (issue #11).
	// maxcpus=1: the other vCPUs come online once l1init has held its
	// KVM VM (l1init onlineCPUs).
	// DefaultAppend first, so that Append can override what it sets.
	line := "console=ttyS0 panic=-1 nokaslr maxcpus=1 quiet loglevel=4 " + DefaultAppend + " " + cfg.Append
	args := []string{
		"-M", "q35", "-accel", "tcg,thread=" + cfg.TCGThread, "-cpu", cfg.CPU,
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemMiB),
		"-kernel", cfg.Kernel, "-initrd", cfg.Initrd, "-append", line,
		"-display", "none", "-vga", "none", "-nodefaults", "-no-reboot",
		"-serial", "file:" + console, "-serial", "file:" + hb,
		"-netdev", fwd, "-device", "virtio-net-pci,netdev=n0,romfile=",
		"-qmp", "unix:" + filepath.Join(cfg.Dir, "qmp.sock") + ",server=on,wait=off",
	}
	l := &L1{cfg: cfg, port: port, exited: make(chan struct{}), stopTail: make(chan struct{}), tailDone: make(chan struct{})}
	l.cmd = exec.Command(cfg.QEMU, args...)
	qlog, err := os.Create(filepath.Join(cfg.Dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	l.cmd.Stdout, l.cmd.Stderr = qlog, qlog
	start := time.Now()
	if err := l.cmd.Start(); err != nil {
		qlog.Close()
		return nil, err
	}
	go func() {
		l.waitErr = l.cmd.Wait()
		qlog.Close()
		close(l.exited)
	}()
	go l.tail(console)
	deadline := time.Now().Add(cfg.BootTimeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := l.Ping(pctx)
		cancel()
		if err == nil {
			l.Booted = time.Since(start)
			return l, nil
		}
		select {
		case <-l.exited:
			l.stopTailing()
			return nil, fmt.Errorf("nested: QEMU exited during L1 boot (%v): %s\nconsole tail:\n%s", l.waitErr, l.qemuLog(), l.ConsoleTail(30))
		case <-ctx.Done():
			l.Kill()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			regs, _ := l.Registers()
			l.Kill()
			return nil, fmt.Errorf("nested: L1 did not answer within %v; console tail:\n%s\nvCPU registers:\n%s", cfg.BootTimeout, l.ConsoleTail(30), regs)
		}
	}
}

// tail copies the console file to cfg.Console as it grows.
func (l *L1) tail(p string) {
	defer close(l.tailDone)
	if l.cfg.Console == nil {
		return
	}
	var f *os.File
	for f == nil {
		f, _ = os.Open(p)
		if f == nil {
			select {
			case <-l.stopTail:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	defer f.Close()
	buf := make([]byte, 32<<10)
	for {
		n, _ := f.Read(buf)
		if n > 0 {
			l.cfg.Console.Write(buf[:n])
			continue
		}
		select {
		case <-l.stopTail:
			io.Copy(l.cfg.Console, f)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *L1) stopTailing() {
	select {
	case <-l.stopTail:
	default:
		close(l.stopTail)
	}
	<-l.tailDone
}

func (l *L1) qemuLog() string {
	b, _ := os.ReadFile(filepath.Join(l.cfg.Dir, "qemu.log"))
	return strings.TrimSpace(string(b))
}

// ConsoleTail is the last n lines of L1's console.
func (l *L1) ConsoleTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(l.cfg.Dir, "console.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// heartbeatAge is how long ago L1's heartbeat port last grew.
func (l *L1) heartbeatAge() time.Duration {
	st, err := os.Stat(filepath.Join(l.cfg.Dir, "heartbeat.log"))
	if err != nil {
		return time.Duration(1<<62 - 1)
	}
	return time.Since(st.ModTime())
}

func (l *L1) dial(ctx context.Context, req Request) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", l.port))
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Ping asks l1init for its uptime: a liveness probe through L1's network
// and l1init only (never through hyperd).
func (l *L1) Ping(ctx context.Context) (string, error) {
	c, err := l.dial(ctx, Request{Ping: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	typ, p, err := ReadFrame(c)
	if err != nil {
		return "", err
	}
	if typ != FramePong {
		return "", fmt.Errorf("nested: ping answered with frame %d", typ)
	}
	return strings.TrimSpace(string(p)), nil
}

// Cmd is a command to run in L1.
type Cmd struct {
	Argv []string
	Env  []string
	Dir  string
}

// Run runs a command in L1, streaming its output, and returns its exit
// status. When ctx ends first the connection is closed (l1init kills the
// command's process group) and the error says whether L1 itself was still
// alive. When L1's heartbeat stops for hangAfter, Run returns an ErrHung
// error with the vCPU registers and the console tail, instead of waiting
// out ctx.
func (l *L1) Run(ctx context.Context, c Cmd, stdout, stderr io.Writer) (int, error) {
	const hangAfter = 45 * time.Second
	conn, err := l.dial(ctx, Request{Argv: c.Argv, Env: c.Env, Dir: c.Dir})
	if err != nil {
		return -1, fmt.Errorf("nested: reaching l1init: %w", err)
	}
	defer conn.Close()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		br := bufio.NewReaderSize(conn, 64<<10)
		for {
			typ, p, err := ReadFrame(br)
			if err != nil {
				// say what became of L1: gone, hung or alive
				select {
				case <-l.exited:
				case <-time.After(2 * time.Second):
				}
				state := "QEMU still running"
				select {
				case <-l.exited:
					state = fmt.Sprintf("QEMU exited: %v", l.waitErr)
				default:
					pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					if up, perr := l.Ping(pctx); perr == nil {
						state += ", l1init answers (uptime " + up + ")"
					} else {
						state += fmt.Sprintf(", l1init does not answer (%v), heartbeat %v ago", perr, l.heartbeatAge().Round(time.Second))
					}
					cancel()
				}
				done <- result{-1, fmt.Errorf("nested: connection to l1init lost while %q ran: %w (%s); L1 console tail:\n%s", c.Argv, err, state, l.ConsoleTail(40))}
				return
			}
			switch typ {
			case FrameStdout:
				stdout.Write(p)
			case FrameStderr:
				stderr.Write(p)
			case FrameExit:
				var e Exit
				if err := json.Unmarshal(p, &e); err != nil {
					done <- result{-1, fmt.Errorf("nested: bad exit frame: %w", err)}
					return
				}
				if e.Error != "" {
					done <- result{-1, fmt.Errorf("nested: %s: %s", c.Argv[0], e.Error)}
					return
				}
				if e.CodePatches != "" {
					done <- result{e.Code, &CodePatchError{Argv: c.Argv, Code: e.Code, Trace: e.CodePatches}}
					return
				}
				done <- result{e.Code, nil}
				return
			}
		}
	}()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			return r.code, r.err
		case <-l.exited:
			return -1, fmt.Errorf("nested: QEMU exited (%v) while %q ran: %s\nL1 console tail:\n%s", l.waitErr, c.Argv, l.qemuLog(), l.ConsoleTail(40))
		case <-ctx.Done():
			conn.Close()
			pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			up, perr := l.Ping(pctx)
			cancel()
			alive := fmt.Sprintf("L1 alive: uptime %s, heartbeat %v ago", up, l.heartbeatAge().Round(time.Second))
			if perr != nil {
				regs, _ := l.Registers()
				alive = fmt.Sprintf("L1 did not answer a ping (%v), heartbeat %v ago; vCPU registers:\n%s", perr, l.heartbeatAge().Round(time.Second), regs)
			}
			return -1, fmt.Errorf("nested: %q: %w (%s)", c.Argv, ctx.Err(), alive)
		case <-tick.C:
			if age := l.heartbeatAge(); age > hangAfter {
				regs, _ := l.Registers()
				why := ErrHung
				apics, lost := l.lostInterrupts()
				if lost != "" {
					why = fmt.Errorf("%w: %s", ErrLostInterrupt, lost)
				}
				return -1, fmt.Errorf("nested: %q: %w: no heartbeat for %v (the L1 kernel stopped, not the command); vCPU registers:\n%s\nL1 local APICs:\n%s\nL1 console tail:\n%s",
					c.Argv, why, age.Round(time.Second), regs, apics, l.ConsoleTail(40))
			}
		}
	}
}

// Registers returns every vCPU's registers from QEMU's monitor (QMP
// human-monitor-command "info registers -a"), to tell a stuck L1 kernel
// from an idle one.
func (l *L1) Registers() (string, error) {
	return l.monitor(`{"execute":"query-status"}`,
		`{"execute":"human-monitor-command","arguments":{"command-line":"info registers -a"}}`)
}

// Close powers L1 off through l1init and waits for QEMU; past 30 s it is
// killed.
func (l *L1) Close() error {
	defer l.stopTailing()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := l.dial(ctx, Request{Poweroff: true})
	cancel()
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		ReadFrame(c)
		c.Close()
	}
	select {
	case <-l.exited:
		return nil
	case <-time.After(30 * time.Second):
		l.Kill()
		return errors.New("nested: L1 did not power off within 30s; killed")
	}
}

// Kill stops QEMU at once.
func (l *L1) Kill() {
	if l.cmd.Process != nil {
		l.cmd.Process.Kill()
	}
	<-l.exited
	l.stopTailing()
}

// Attach returns a handle on an L1 that another process booted, reached on
// host port port (its l1init forward) with its work directory dir: for
// looking into a running suite (nestedrun --attach).
func Attach(port int, dir string) *L1 {
	return &L1{cfg: Config{Dir: dir}, port: port, exited: make(chan struct{}), stopTail: make(chan struct{}), tailDone: make(chan struct{})}
}
