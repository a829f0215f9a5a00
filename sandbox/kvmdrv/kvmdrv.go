package kvmdrv

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hyperhq/hyperd-go/internal/consolelog"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// AgentPort is the vsock port the guest agent listens on.
const AgentPort = 1024

// ReadyPort is the host vsock port the agent connects to once it listens on
// AgentPort: the daemon waits for that connection (on the unix socket
// <uds>_1025) instead of polling the guest with CONNECTs. Polling is not
// only slower; on software-nested KVM every host connection to a guest
// that has not set up its vsock device measurably stalls the boot.
const ReadyPort = 1025

// Dialer opens a new byte stream to the guest agent.
type Dialer func(ctx context.Context) (net.Conn, error)

// Connector makes an agent client (agent/client in the daemon) that opens
// its connections with dial: one for control, one per stream.
type Connector func(ctx context.Context, dial Dialer) (sandbox.Agent, error)

// agentDialer reaches the agent port through the VM's hybrid vsock socket.
func agentDialer(uds string) Dialer {
	return func(ctx context.Context) (net.Conn, error) { return DialVsock(ctx, uds, AgentPort) }
}

// BaseCmdline is the kernel command line of every pod VM, tuned for one:
//
//	console=ttyS0  the kernel's messages and the agent's go to the VMM's
//	               8250, which writes the pod's console.log
//	quiet          only warnings and worse reach it: every console byte is
//	               a VM exit to the VMM (and under nested or emulated KVM a
//	               costly one), and a boot prints ~10 KiB; panics, oopses
//	               and the agent's own lines still show
//	reboot=k       a reboot resets through the i8042 line (the FADT's reset
//	               register), which ends the VM process
//	panic=-1       a panic reboots at once, so the VM stops with the panic
//	               on the console (ExitPanic) instead of hanging
//	pci=off        the VMM has no PCI bus: no config-space probing
//
// Driver.Cmdline (hyperd --kernel-args) is appended, so loglevel=7 there
// brings the whole boot log back.
const BaseCmdline = "console=ttyS0 quiet reboot=k panic=-1 pci=off"

// Driver starts VMs as "hyperd vm run" child processes.
type Driver struct {
	Hyperd        string // the hyperd binary; default os.Executable()
	Kernel        string // guest vmlinux
	Initrd        string // agent initramfs
	Cmdline       string // extra kernel command line
	DefaultVCPU   int
	DefaultMemMiB int
	BootTimeout   time.Duration // default 30s
	// BootRetries is how many more boots a pod's VM gets when its guest
	// crashes (triple fault, crash event, a kernel panic) before its agent
	// answered, or does not answer within
	// BootTimeout. On real hardware either is the kernel's or the image's
	// doing and would only repeat, so hyperd's default is 0; the nested
	// test runner's emulated SVM crashes or wedges a guest now and then on
	// its own (e2e/nested, DefaultCPU).
	BootRetries int
	Log         *slog.Logger // for the retries; nil = slog.Default()
	Connect     Connector
	// ConsoleMax caps a VM's console log (console.log and console.log.1,
	// written by the VM process, which outlives the daemon); 0 means
	// consolelog.DefaultMax (1 MiB).
	ConsoleMax int64
	// Jail confines each VM process (jail.go); nil runs it unconfined.
	Jail *Jail
	// TemplateDir keeps the VM templates (template.go); "" boots every
	// pod VM cold.
	TemplateDir string

	tmplOnce   sync.Once
	templates  *templates
	generation atomic.Uint64
}

func (d *Driver) Name() string      { return "kvm" }
func (d *Driver) Isolation() string { return "kvm virtual machine (hyperd VMM, one process per VM)" }

const (
	consoleLog = "console.log"
	// vmmLog is the VM process's own stdout and stderr: what it says
	// before its console log is open (bad flags), Go runtime failures,
	// and a copy of its notes and stop line. The guest cannot write there.
	vmmLog    = "vmm.log"
	vsockSock = "vsock.sock"
)

func (d *Driver) hyperd() (string, error) {
	if d.Hyperd != "" {
		return d.Hyperd, nil
	}
	return os.Executable()
}

// Create boots a VM for cfg and connects to its agent.
func (d *Driver) Create(ctx context.Context, cfg sandbox.Config) (sandbox.Sandbox, error) {
	if d.Connect == nil {
		return nil, errors.New("kvm driver: no agent connector configured")
	}
	if d.Kernel == "" || d.Initrd == "" {
		return nil, errors.New("kvm driver: no guest kernel/initrd configured (--kernel/--initrd, or run make kernel)")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("kvm driver: sandbox config has no state dir")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("kvm driver: %w", err)
	}
	vcpu, mem := cfg.VCPU, cfg.MemoryMiB
	if vcpu <= 0 {
		vcpu = max(d.DefaultVCPU, 1)
	}
	if mem <= 0 {
		mem = d.DefaultMemMiB
		if mem <= 0 {
			mem = 128
		}
	}
	bin, err := d.hyperd()
	if err != nil {
		return nil, err
	}
	uds := filepath.Join(cfg.StateDir, vsockSock)
	if d.Jail != nil {
		// the VMM's sockets live in its jail dir (prepareJail's), where it
		// can reach them
		uds = filepath.Join(jailDir(cfg.StateDir), vsockSock)
	}
	if err := checkSocketPaths(uds); err != nil {
		return nil, err
	}
	var jl *vmJail
	if d.Jail != nil {
		if jl, err = d.prepareJail(cfg, mem); err != nil {
			return nil, err
		}
	}
	console := filepath.Join(cfg.StateDir, consoleLog)
	readySock := fmt.Sprintf("%s_%d", uds, ReadyPort)
	os.Remove(readySock)
	ready, err := net.Listen("unix", readySock)
	if err != nil {
		return nil, fmt.Errorf("kvm driver: ready socket: %w", err)
	}
	defer func() {
		ready.Close()
		os.Remove(readySock)
	}()
	if err := jl.allow(readySock); err != nil {
		return nil, err
	}
	// the same for every pod (the hostname comes with the pod's setup), so
	// a template's kernel command line is every pod's
	cmdline := strings.TrimSpace(BaseCmdline + " " + d.Cmdline)
	// the flags of a booted and of a restored VM alike: its sockets, logs,
	// jail, taps and disks
	common := []string{"--vsock", uds, "--console-log", console,
		"--console-max", strconv.FormatInt(cmp.Or(d.ConsoleMax, consolelog.DefaultMax), 10),
		"--control", controlPath(uds)}
	common = append(common, jl.args()...)
	var files []*os.File // the VM process's fds 3...: its taps
	nNets := 0
	if cfg.Network != nil {
		var netArgs []string
		var err error
		if files, netArgs, err = plumbNetwork(cfg.Network, 3); err != nil {
			return nil, fmt.Errorf("kvm driver: pod network: %w", err)
		}
		defer func() {
			for _, f := range files {
				f.Close() // the VM process has its own copies
			}
		}()
		common = append(common, netArgs...)
		nNets = len(cfg.Network.Interfaces)
	}
	var disks []string
	for _, dk := range cfg.Disks {
		spec := dk.HostPath
		if dk.ReadOnly {
			spec += ",ro"
		}
		common = append(common, "--disk", spec)
		disks = append(disks, dk.HostPath)
	}
	if ok, why := d.templateFits(len(disks), nNets); ok {
		s, err := d.restoreFromTemplate(ctx, cfg, bin, cmdline, common, files, uds, console, disks, jl, vcpu, mem)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		d.log().Warn("pod VM: not restored from a VM template; booting it cold", "pod", cfg.ID, "err", err)
	} else if d.TemplateDir != "" {
		d.log().Info("pod VM boots cold", "pod", cfg.ID, "why", why)
	}
	// empty disk slots for disks given later (AddDisk), as a template has
	args := append([]string{"vm", "run", "--kernel", d.Kernel, "--initrd", d.Initrd, "--append", cmdline,
		"--mem", fmt.Sprintf("%dM", mem), "--cpus", strconv.Itoa(vcpu),
		"--disk-slots", strconv.Itoa(coldDiskSlots(len(disks), nNets))}, common...)
	for attempt := 0; ; attempt++ {
		s, err := d.boot(ctx, cfg, bin, args, files, uds, console, disks, ready, jl)
		var stopped *sandbox.ExitError
		crashed := errors.As(err, &stopped) && (stopped.Reason == sandbox.ExitCrash || stopped.Reason == sandbox.ExitPanic)
		if err != nil && attempt < d.BootRetries && ctx.Err() == nil && (crashed || errors.Is(err, errBootTimeout)) {
			kept := fmt.Sprintf("%s.failed-%d", console, attempt+1)
			os.Rename(console, kept)
			log := d.Log
			if log == nil {
				log = slog.Default()
			}
			log.Warn("pod VM crashed or did not answer while booting; booting it again (--boot-retries)", "pod", cfg.ID, "attempt", attempt+1, "of", d.BootRetries+1, "console", kept, "err", err)
			continue
		}
		if err != nil {
			return nil, err // not a typed nil *vmSandbox in the interface
		}
		s.boot = "cold"
		return s, nil
	}
}

// errBootTimeout marks a boot whose agent did not answer in time.
var errBootTimeout = errors.New("did not answer")

// boot starts one VM process and waits for its agent.
func (d *Driver) boot(ctx context.Context, cfg sandbox.Config, bin string, args []string, files []*os.File, uds, console string, disks []string, ready net.Listener, jl *vmJail) (*vmSandbox, error) {
	start := time.Now()
	// the VM process writes the console log itself (capped, see
	// consolelog); until it has opened it, no earlier boot's may show
	if err := os.Remove(console + ".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("kvm driver: console log: %w", err)
	}
	if err := os.WriteFile(console, nil, 0o600); err != nil {
		return nil, fmt.Errorf("kvm driver: console log: %w", err)
	}
	out, err := os.OpenFile(filepath.Join(filepath.Dir(console), vmmLog), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kvm driver: VM process log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = files
	// Own session: the VM outlives the daemon and its signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// jailed: its own session too, in fresh namespaces and its cgroup
	cg, err := jl.start(cmd)
	if err != nil {
		out.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		jl.started(cg, false)
		return nil, fmt.Errorf("kvm driver: starting the VM process: %w", err)
	}
	out.Close()
	jl.started(cg, true)
	s := &vmSandbox{id: cfg.ID, pid: cmd.Process.Pid, uds: uds, control: controlPath(uds), console: console, disks: disks, cgroup: cg, Exit: sandbox.NewExit()}
	go func() {
		err := cmd.Wait()
		s.removeSocket()
		s.removeCgroup()
		s.Exited(exitError(err, true, console))
	}()
	if cfg.Started != nil {
		cfg.Started(s.Handle())
	}
	timeout := d.bootTimeout()
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var agent sandbox.Agent
	if ready != nil {
		agent, err = d.waitAgent(bctx, s, ready)
	} else {
		agent, err = d.pollAgent(bctx, s)
	}
	if err != nil {
		var stopped *sandbox.ExitError
		if errors.As(err, &stopped) {
			s.removeSocket()
			return nil, fmt.Errorf("kvm driver: the VM of pod %s stopped before its agent answered: %w", cfg.ID, err)
		}
		s.kill()
		<-s.Done()
		s.removeSocket()
		return nil, fmt.Errorf("kvm driver: the guest agent of pod %s %w within %v: %v; console tail:\n%s", cfg.ID, errBootTimeout, timeout, err, tail(console, 30))
	}
	s.agent = agent
	s.ready = true
	// hostname, DNS, clock, entropy and the guest's side of the pod network
	ps := podSetup(cfg)
	if ready == nil {
		// restored: a new generation makes the agent reseed the guest's RNG
		ps.Generation = d.generation.Add(1)
	}
	if err := agent.Setup(bctx, ps); err != nil {
		s.kill()
		<-s.Done()
		s.removeSocket()
		return nil, fmt.Errorf("kvm driver: pod %s setup in the guest: %w", cfg.ID, err)
	}
	how := "booted"
	if ready == nil {
		how = "restored"
	}
	d.log().Info("pod VM ready", "pod", cfg.ID, "how", how, "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

// waitAgent waits for the agent's ready connection, then connects to it
// and pings it, unless the VM dies or ctx ends first.
func (d *Driver) waitAgent(ctx context.Context, s *vmSandbox, ready net.Listener) (sandbox.Agent, error) {
	got := make(chan error, 1)
	go func() {
		c, err := ready.Accept()
		if err == nil {
			c.Close()
		}
		got <- err
	}()
	// a VM that died or timed out leaves the listener (Create closes it) for
	// the next boot (--boot-retries): the pending Accept must not take that
	// boot's ready connection
	abandon := func() {
		if ul, ok := ready.(*net.UnixListener); ok {
			ul.SetDeadline(time.Now())
			<-got
			ul.SetDeadline(time.Time{})
		}
	}
	select {
	case <-s.Done():
		abandon()
		return nil, s.Err()
	case <-ctx.Done():
		abandon()
		return nil, fmt.Errorf("%w: no ready signal from the agent (vsock host port %d)", ctx.Err(), ReadyPort)
	case err := <-got:
		if err != nil {
			return nil, err
		}
	}
	a, err := d.dialAgent(ctx, s.uds)
	if err != nil {
		return nil, fmt.Errorf("the agent signalled ready but %w", err)
	}
	return a, nil
}

// dialAgent connects to the agent of the VM whose hybrid vsock socket is
// uds and pings it; the agent is closed again if the ping fails.
func (d *Driver) dialAgent(ctx context.Context, uds string) (sandbox.Agent, error) {
	a, err := d.Connect(ctx, agentDialer(uds))
	if err != nil {
		return nil, fmt.Errorf("connecting to port %d failed: %w", AgentPort, err)
	}
	if _, err := a.Ping(ctx); err != nil {
		a.Close()
		return nil, fmt.Errorf("agent ping: %w", err)
	}
	return a, nil
}

// maxSocketPath is the longest path a unix socket may have: sockaddr_un's
// sun_path is 108 bytes with the terminating NUL (unix(7)).
const maxSocketPath = 107

// checkSocketPaths refuses a VM whose sockets could not be made: the
// longest is a guest-initiated connection's listener, <uds>_<port> with a
// 32-bit port. Its length is the data root's plus the pod id's, both
// chosen by the user, so it is their request that cannot be met (the
// kernel's EINVAL, later, would say nothing of why).
func checkSocketPaths(uds string) error {
	longest := len(uds) + len("_4294967295")
	if longest <= maxSocketPath {
		return nil
	}
	return &sandbox.ConfigError{Msg: fmt.Sprintf("kvm driver: the pod VM's unix socket paths would be up to %d bytes (%s_<port>), over the %d a unix socket path may have: use a pod id %d characters shorter, or a shorter --data-root",
		longest, uds, maxSocketPath, longest-maxSocketPath)}
}

// DialVsock connects to guest port through the VM's hybrid vsock socket
// (CONNECT <port>\n → OK <hostport>\n).
func DialVsock(ctx context.Context, uds string, port int) (net.Conn, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", uds)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, err
	}
	// Read the reply byte by byte so no stream data is consumed.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := c.Read(b); err != nil {
			c.Close()
			return nil, fmt.Errorf("vsock CONNECT %d: %w", port, err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	if !strings.HasPrefix(string(line), "OK ") {
		c.Close()
		return nil, fmt.Errorf("vsock CONNECT %d: answered %q", port, line)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// Reattach finds a VM a previous daemon started.
func (d *Driver) Reattach(ctx context.Context, h sandbox.Handle) (sandbox.Sandbox, error) {
	if d.Connect == nil {
		return nil, errors.New("kvm driver: no agent connector configured")
	}
	pid, err := strconv.Atoi(h.Data["pid"])
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("kvm driver: handle of %s has no pid", h.ID)
	}
	s := &vmSandbox{id: h.ID, pid: pid, uds: h.Data["vsock"], control: h.Data["control"], console: h.Data["console"], cgroup: h.Data["cgroup"], boot: h.Data["boot"], Exit: sandbox.NewExit()}
	if h.Data["disks"] != "" {
		s.disks = strings.Split(h.Data["disks"], "\n")
	}
	if !s.alive() {
		s.removeSocket()
		s.removeCgroup()
		return nil, fmt.Errorf("kvm driver: the VM process %d of %s is gone; console tail:\n%s", pid, h.ID, tail(s.console, 20))
	}
	if h.Data["agent"] != "ready" {
		// A handle from Config.Started: the previous daemon died while the
		// guest was booting. Its ready signal went to that daemon's socket,
		// so this VM can never be adopted: release it.
		s.destroy()
		return nil, fmt.Errorf("kvm driver: the VM of %s was still booting when the previous daemon stopped; it was killed; console tail:\n%s", h.ID, tail(s.console, 20))
	}
	a, err := d.dialAgent(ctx, s.uds)
	if err != nil {
		s.destroy()
		return nil, fmt.Errorf("kvm driver: reconnecting to the agent of %s failed (%w); its VM was killed; console tail:\n%s", h.ID, err, tail(s.console, 20))
	}
	s.agent, s.ready = a, true
	go s.watch()
	return s, nil
}

// destroy kills a VM process that is not our child (a previous daemon's)
// and waits until it is gone, then removes its vsock socket.
func (s *vmSandbox) destroy() {
	s.kill()
	for i := 0; i < 500 && s.alive(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	s.removeSocket()
	s.removeCgroup()
	// host-side listeners for guest-initiated connections (<uds>_<port>),
	// e.g. the ready socket of the daemon that started the VM
	if ls, err := filepath.Glob(s.uds + "_*"); err == nil {
		for _, l := range ls {
			os.Remove(l)
		}
	}
}

type vmSandbox struct {
	id      string
	pid     int
	uds     string
	control string // the VM process's control socket (hotplug.go); "" for a VM an older hyperd started
	console string
	mu      sync.Mutex
	disks   []string // by slot: Config's, then AddDisk's (guarded by mu)
	cgroup  string   // the jailed VM's cgroup v2 directory, or ""
	boot    string   // "cold", or "template <name>" when restored from one
	agent   sandbox.Agent
	ready   bool // the agent answered (Handle says so: Reattach adopts only such VMs)
	*sandbox.Exit
}

func (s *vmSandbox) ID() string { return s.id }

func (s *vmSandbox) Handle() sandbox.Handle {
	s.mu.Lock()
	disks := strings.Join(s.disks, "\n")
	s.mu.Unlock()
	h := sandbox.Handle{Driver: "kvm", ID: s.id, Data: map[string]string{
		"pid": strconv.Itoa(s.pid), "vsock": s.uds, "console": s.console, "disks": disks,
	}}
	if s.control != "" {
		h.Data["control"] = s.control
	}
	if s.cgroup != "" {
		h.Data["cgroup"] = s.cgroup
	}
	if s.boot != "" {
		h.Data["boot"] = s.boot
	}
	if s.ready {
		h.Data["agent"] = "ready"
	}
	return h
}

func (s *vmSandbox) Agent() sandbox.Agent { return s.agent }

// alive reports whether pid is still our VM process (not a reused pid).
func (s *vmSandbox) alive() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", s.pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	return len(args) > 3 && args[1] == "vm" && args[2] == "run" && strings.Contains(string(b), s.uds)
}

// watch polls a reattached (non-child) VM process for its exit.
func (s *vmSandbox) watch() {
	for s.alive() {
		time.Sleep(500 * time.Millisecond)
	}
	s.removeSocket()
	s.removeCgroup()
	s.Exited(exitError(nil, false, s.console))
}

// removeSocket removes the VM's hybrid vsock and control sockets once the
// VM process is gone: a VMM that was SIGKILLed (the OOM killer, an
// operator) could not remove them itself. (The <uds>_<port> listeners are the daemon's own.)
func (s *vmSandbox) removeSocket() {
	os.Remove(s.uds)
	if s.control != "" {
		os.Remove(s.control)
	}
}

func (s *vmSandbox) kill() { syscall.Kill(s.pid, syscall.SIGKILL) }

// Stop asks the agent to power the guest off, waits for the VM process
// until ctx ends, then kills it.
func (s *vmSandbox) Stop(ctx context.Context) error {
	s.Shutdown(ctx, s.agent, s.kill)
	s.removeSocket()
	return nil
}

// HostStats reads the VM process's RSS and CPU time from /proc.
func (s *vmSandbox) HostStats() (sandbox.HostStats, error) {
	var st sandbox.HostStats
	f, err := sandbox.ProcStat(s.pid)
	if err != nil {
		return st, fmt.Errorf("kvm driver: VM process %d: %w", s.pid, err)
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	rss, _ := strconv.ParseUint(f[21], 10, 64)
	st.CPUSeconds = float64(utime+stime) / 100 // USER_HZ
	st.RSSBytes = rss * uint64(os.Getpagesize())
	return st, nil
}

// tail returns the last n lines of a console log (its rotated half
// included; see consolelog), from its last 64 KiB.
func tail(path string, n int) string {
	b, err := consolelog.Tail(path, 64<<10)
	if err != nil {
		return fmt.Sprintf("(no console log: %v)", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	lines := strings.Split(string(b), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
