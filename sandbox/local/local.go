package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hyperhq/hyperd-go/agent/client"
	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/internal/netns"
	"github.com/hyperhq/hyperd-go/internal/userns"
	"github.com/hyperhq/hyperd-go/sandbox"
	"golang.org/x/sys/unix"
)

// Name of the driver.
const Name = "local"

// Files in Config.StateDir.
const (
	socketName = "agent.sock"
	logName    = "agent.log"
	agentDir   = "agent"
)

// Driver starts the hyper-agent binary as a host process in new
// pid/mount/uts/ipc/net namespaces and talks to it over a unix socket.
type Driver struct {
	// AgentPath is the hyper-agent binary.
	AgentPath string
	// CgroupParent is the cgroup v2 directory pods are placed under
	// (default /sys/fs/cgroup/hyperd); it must be on a writable cgroup2
	// hierarchy: the pod's limits are enforced there.
	CgroupParent string
	// StartTimeout bounds the wait for the agent's socket (default 10s).
	StartTimeout time.Duration
	// UserNS, when set, puts every container in a user namespace with
	// this mapping (the agent's --userns): a container's root is an
	// unprivileged host uid.
	UserNS *userns.Map
	// PodPids caps the processes of a pod's containers together
	// (cgroup pids.max; default DefaultPodPids). A pod's vCPUs and memory
	// (sandbox.Config) bound its containers' CPU time and memory the same
	// way, as the VM does for the kvm driver.
	PodPids int
}

// DefaultPodPids is a pod's process cap when Driver.PodPids is 0: roomy for
// any service, low enough that a fork bomb cannot take the host's pids.
const DefaultPodPids = 16384

// New returns a local driver running agentPath.
func New(agentPath string) *Driver { return &Driver{AgentPath: agentPath} }

var _ sandbox.Driver = (*Driver)(nil)

// Name implements sandbox.Driver.
func (d *Driver) Name() string { return Name }

// Isolation implements sandbox.Driver.
func (d *Driver) Isolation() string {
	if d.UserNS != nil {
		return "namespaces (no VM): user/pid/mount/uts/ipc/net namespaces on the host kernel, container root is host uid " + strconv.FormatUint(uint64(d.UserNS.Host), 10)
	}
	return "namespaces (no VM): pid/mount/uts/ipc/net namespaces on the host kernel"
}

func (d *Driver) cgroupParent() string {
	if d.CgroupParent != "" {
		return d.CgroupParent
	}
	return "/sys/fs/cgroup/hyperd"
}

// Create implements sandbox.Driver.
func (d *Driver) Create(ctx context.Context, cfg sandbox.Config) (sandbox.Sandbox, error) {
	if cfg.ID == "" || strings.ContainsAny(cfg.ID, "/\x00") || cfg.ID == "." || cfg.ID == ".." {
		return nil, fmt.Errorf("local driver: bad sandbox id %q", cfg.ID)
	}
	if cfg.StateDir == "" {
		return nil, errors.New("local driver: sandbox config has no state dir")
	}
	if d.AgentPath == "" {
		return nil, errors.New("local driver: no agent binary configured")
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, agentDir), 0o700); err != nil {
		return nil, fmt.Errorf("local driver: %w", err)
	}
	sock := filepath.Join(cfg.StateDir, socketName)
	if len(sock) >= 108 {
		return nil, fmt.Errorf("local driver: socket path %s is too long for a unix socket", sock)
	}
	os.Remove(sock)
	logf, err := os.OpenFile(filepath.Join(cfg.StateDir, logName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local driver: %w", err)
	}
	defer logf.Close()
	cg := filepath.Join(d.cgroupParent(), cfg.ID)
	pids := d.PodPids
	if pids <= 0 {
		pids = DefaultPodPids
	}
	lim := limits{memMiB: cfg.MemoryMiB, cpus: cfg.VCPU, pids: pids}
	args := []string{"--socket", sock, "--state-dir", filepath.Join(cfg.StateDir, agentDir), "--cgroup-root", cg}
	if d.UserNS != nil {
		args = append(args, "--userns", d.UserNS.String())
	}
	v2 := unifiedCgroups()
	if v2 {
		args = append(args, "--memory-mib", strconv.Itoa(lim.memMiB), "--cpus", strconv.Itoa(lim.cpus), "--pids", strconv.Itoa(lim.pids))
	} else {
		for _, dk := range cfg.Disks {
			var st unix.Stat_t
			if unix.Stat(dk.HostPath, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
				lim.blockDevs = append(lim.blockDevs, st.Rdev)
			}
		}
	}
	cmd := exec.Command(d.AgentPath, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     true, // outlives a daemon killed with -9
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET,
	}
	start := cmd.Start
	if cfg.Network != nil {
		// the pod's network namespace (CNI's): the agent is started from
		// a thread inside it and inherits it, instead of a new empty one
		cmd.SysProcAttr.Cloneflags &^= unix.CLONE_NEWNET
		start = func() error { return netns.Do(cfg.Network.Netns, cmd.Start) }
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("local driver: start agent: %w", err)
	}
	s := &localSandbox{id: cfg.ID, stateDir: cfg.StateDir, sock: sock, pid: cmd.Process.Pid, cgroup: cg, Exit: sandbox.NewExit(), disks: cfg.Disks}
	s.start, _ = procStart(s.pid)
	go func() {
		err := cmd.Wait()
		s.Exited(fmt.Errorf("agent process exited: %v", err))
	}()
	if !v2 {
		// before the agent starts any container: they inherit these
		if s.cgroupsV1, err = setupV1(cfg.ID, s.pid, lim); err != nil {
			s.kill()
			<-s.Done()
			return nil, fmt.Errorf("local driver: %w", err)
		}
	}
	if cfg.Started != nil {
		cfg.Started(s.Handle())
	}
	if err := d.connect(ctx, s); err != nil {
		s.kill()
		<-s.Done()
		return nil, fmt.Errorf("local driver: %w (agent log %s: %s)", err, filepath.Join(cfg.StateDir, logName), tailFile(filepath.Join(cfg.StateDir, logName)))
	}
	// the namespace's interfaces are configured already (by CNI): the
	// agent only writes resolv.conf. No Time or Entropy: the agent runs on
	// the host, whose clock and RNG are not the pod's to set.
	if err := s.agent.Setup(ctx, protocol.PodSetup{Hostname: cfg.Hostname, DNS: cfg.DNS, DNSSearch: cfg.DNSSearch, DNSOptions: cfg.DNSOptions}); err != nil {
		s.Stop(context.Background())
		return nil, fmt.Errorf("local driver: pod setup: %w", err)
	}
	return s, nil
}

func (d *Driver) connect(ctx context.Context, s *localSandbox) error {
	to := d.StartTimeout
	if to == 0 {
		to = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	dial := client.UnixDialer(s.sock)
	for {
		if _, err := os.Stat(s.sock); err == nil {
			c, err := client.New(ctx, dial)
			if err == nil {
				if _, err = c.Ping(ctx); err == nil {
					s.agent = c
					return nil
				}
				c.Close()
			}
		}
		select {
		case <-s.Done():
			return s.Err()
		case <-ctx.Done():
			return fmt.Errorf("agent did not answer: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Reattach implements sandbox.Driver.
func (d *Driver) Reattach(ctx context.Context, h sandbox.Handle) (sandbox.Sandbox, error) {
	if h.Driver != Name {
		return nil, fmt.Errorf("local driver: handle of driver %q", h.Driver)
	}
	pid, err := strconv.Atoi(h.Data["pid"])
	if err != nil || pid <= 1 {
		return nil, fmt.Errorf("local driver: handle without a valid pid")
	}
	s := &localSandbox{id: h.ID, stateDir: h.Data["state_dir"], sock: h.Data["socket"], pid: pid, cgroup: h.Data["cgroup"], Exit: sandbox.NewExit()}
	for _, p := range strings.Split(h.Data["disks"], "\x00") {
		if p != "" {
			s.disks = append(s.disks, sandbox.Disk{HostPath: p})
		}
	}
	for _, p := range strings.Split(h.Data["cgroups_v1"], "\x00") {
		if p != "" && strings.HasPrefix(p, cgroupV1Root+"/") && filepath.Base(p) == h.ID {
			s.cgroupsV1 = append(s.cgroupsV1, p)
		}
	}
	start, err := procStart(pid)
	if err != nil || strconv.FormatUint(start, 10) != h.Data["start"] {
		s.removeCgroups() // the pod died with its agent: nothing else will
		return nil, fmt.Errorf("local driver: agent process %d of %s is gone", pid, h.ID)
	}
	s.start = start
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("local driver: agent process %d: %w", pid, err)
	}
	s.pidfd = pfd
	go func() {
		fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			break
		}
		s.Exited(errors.New("agent process exited"))
	}()
	c, err := client.New(ctx, client.UnixDialer(s.sock))
	if err == nil {
		if _, err = c.Ping(ctx); err != nil {
			c.Close()
		}
	}
	if err != nil {
		// alive but unreachable: release it rather than leak it
		dead, cancel := context.WithCancel(context.Background())
		cancel()
		s.Stop(dead)
		return nil, fmt.Errorf("local driver: reconnecting to the agent of %s failed (%w); its process was killed", h.ID, err)
	}
	s.agent = c
	return s, nil
}

type localSandbox struct {
	id       string
	stateDir string
	sock     string
	pid      int
	start    uint64
	pidfd    int
	cgroup   string
	// cgroupsV1 are the pod's cgroup v1 directories (cgroups.go), none
	// on a cgroup v2 host
	cgroupsV1 []string
	disks     []sandbox.Disk
	agent     *client.Client
	*sandbox.Exit
}

func (s *localSandbox) ID() string { return s.id }

func (s *localSandbox) Handle() sandbox.Handle {
	var disks []string
	for _, d := range s.disks {
		disks = append(disks, d.HostPath)
	}
	return sandbox.Handle{Driver: Name, ID: s.id, Data: map[string]string{
		"pid": strconv.Itoa(s.pid), "start": strconv.FormatUint(s.start, 10), "socket": s.sock,
		"state_dir": s.stateDir, "cgroup": s.cgroup, "disks": strings.Join(disks, "\x00"),
		"cgroups_v1": strings.Join(s.cgroupsV1, "\x00"),
	}}
}

func (s *localSandbox) Agent() sandbox.Agent { return s.agent }

// DiskSource: the local agent sees host directories in place.
func (s *localSandbox) DiskSource(hostPath string) (string, error) {
	for _, d := range s.disks {
		if d.HostPath == hostPath {
			return hostPath, nil
		}
	}
	return "", fmt.Errorf("local driver: %s is not a disk of sandbox %s", hostPath, s.id)
}

func (s *localSandbox) kill() {
	if s.pidfd > 0 {
		unix.PidfdSendSignal(s.pidfd, unix.SIGKILL, nil, 0)
		return
	}
	select {
	case <-s.Done():
	default:
		unix.Kill(s.pid, unix.SIGKILL) // our child: not reaped before done closes
	}
}

// Stop implements sandbox.Sandbox.
func (s *localSandbox) Stop(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	var agent sandbox.Agent // not a typed nil *client.Client
	if s.agent != nil {
		agent = s.agent
	}
	s.Shutdown(ctx, agent, s.kill)
	if s.pidfd > 0 {
		unix.Close(s.pidfd)
	}
	os.Remove(s.sock)
	os.RemoveAll(filepath.Join(s.stateDir, agentDir))
	s.removeCgroups()
	return nil
}

// removeCgroups removes the pod's cgroups once its processes are gone.
func (s *localSandbox) removeCgroups() {
	if s.cgroup != "" {
		if ents, err := os.ReadDir(s.cgroup); err == nil {
			for _, e := range ents {
				if e.IsDir() {
					os.Remove(filepath.Join(s.cgroup, e.Name()))
				}
			}
		}
		os.Remove(s.cgroup)
	}
	removeV1(s.cgroupsV1)
}

// HostStats implements sandbox.Sandbox: the agent process (with its reaped
// children's CPU) from /proc.
func (s *localSandbox) HostStats() (sandbox.HostStats, error) {
	f, err := sandbox.ProcStat(s.pid)
	if err != nil {
		return sandbox.HostStats{}, err
	}
	num := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
	const clk = 100 // USER_HZ
	cpu := float64(num(11)+num(12)+num(13)+num(14)) / clk
	return sandbox.HostStats{RSSBytes: num(21) * uint64(os.Getpagesize()), CPUSeconds: cpu}, nil
}

func procStart(pid int) (uint64, error) {
	f, err := sandbox.ProcStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func tailFile(p string) string {
	b, _ := os.ReadFile(p)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}
