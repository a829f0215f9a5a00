package sandbox

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// Driver creates sandboxes. There is one Driver per daemon ("local" or "kvm").
type Driver interface {
	// Name is "local" or "kvm"; it is reported in /info and pod info.
	Name() string
	// Isolation describes the isolation honestly, e.g. "namespaces (no VM)"
	// or "kvm virtual machine".
	Isolation() string
	// Create starts a new sandbox (agent process or VM) and returns once the
	// agent answered a ping, or with an error carrying the reason (for a VM,
	// the tail of its console log).
	Create(ctx context.Context, cfg Config) (Sandbox, error)
	// Reattach reconnects to a sandbox that a previous daemon process created,
	// from the Handle it persisted. It fails if the sandbox is gone, and when
	// the sandbox's process is still there but its agent cannot be reached
	// (or never answered: a handle from Config.Started) it kills that process
	// and releases its resources before failing: nothing is left behind.
	Reattach(ctx context.Context, h Handle) (Sandbox, error)
}

// Config is what a pod asks of its sandbox.
type Config struct {
	ID         string   // pod id; also names the sandbox's state dir
	Hostname   string   // guest hostname
	VCPU       int      // vCPUs (kvm); 0 = driver default
	MemoryMiB  int      // guest memory (kvm); 0 = driver default
	DNS        []string // nameservers written to /etc/resolv.conf
	DNSSearch  []string
	DNSOptions []string // resolv.conf "options"
	// Interface is what the pod asked of its network interface (the
	// original's "interfaces"); nil = the network's choice. The network
	// layer (package network) reads it.
	Interface *InterfaceRequest
	// Network is the pod's network, set up before Create by the network
	// layer; nil = no network (loopback only).
	Network  *Network
	StateDir string // per-sandbox directory the driver may use (sockets, logs, disks)
	Disks    []Disk // block devices / directories known at creation time
	// Started, if set, is called by Create as soon as the sandbox's process
	// exists, before Create waits for the agent, with a Handle the daemon
	// persists: a daemon killed during a slow boot then finds the process
	// on restart (Reattach) and releases it instead of leaking it.
	Started func(Handle)
}

// Disk is a host file or directory given to the sandbox. For the local driver
// a directory is used in place; for kvm a file is attached as virtio-blk.
type Disk struct {
	HostPath string
	ReadOnly bool
}

// Handle is what the daemon persists to find a sandbox again after a restart.
type Handle struct {
	Driver string            `json:"driver"`
	ID     string            `json:"id"`
	Data   map[string]string `json:"data,omitempty"` // driver specific (pid, socket path ...)
}

// Sandbox is one running pod sandbox with its agent.
type Sandbox interface {
	ID() string
	Handle() Handle
	// Agent is the connected agent client for this sandbox.
	Agent() Agent
	// DiskSource returns how the agent sees a Disk given in Config.Disks (a
	// directory path for local, /dev/vdX for kvm).
	DiskSource(hostPath string) (string, error)
	// Done is closed when the sandbox died or was stopped; Err then says why.
	Done() <-chan struct{}
	Err() error
	// Stop asks the agent to power off, waits up to the context deadline,
	// then kills the sandbox and releases every resource.
	Stop(ctx context.Context) error
	// Stats of the sandbox itself (VMM RSS / CPU for kvm, agent process for local).
	HostStats() (HostStats, error)
}

// ExitError is what Sandbox.Err returns when a sandbox stopped by itself
// and the driver knows why: Reason is one of the Exit* reasons below (it
// becomes the pod's failure reason), Error() the details (for a VM, with
// the tail of its console).
type ExitError struct {
	Reason string
	Detail string
}

func (e *ExitError) Error() string { return e.Detail }

// ConfigError is a Create refused because the sandbox's configuration
// cannot be met by this driver, whatever the host's state: the caller's
// request is at fault (HTTP 400), not the daemon.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

// Reasons of an ExitError.
const (
	ExitPoweroff = "GuestPoweroff" // the guest powered off (agent shutdown, poweroff in the guest)
	ExitPanic    = "GuestPanic"    // the guest kernel panicked
	ExitReset    = "GuestReset"    // the guest rebooted
	ExitCrash    = "GuestCrash"    // triple fault or crash event
	ExitVMM      = "VMMError"      // the VMM failed (vCPU error, emulation failure)
	ExitKilled   = "SandboxKilled" // the sandbox process was killed or stopped from outside
)

// HostStats are the host-side costs of a sandbox.
type HostStats struct {
	RSSBytes   uint64
	CPUSeconds float64
}

// Agent is the daemon's view of the guest agent (see agent/PROTOCOL.md).
// All methods are safe for concurrent use.
type Agent interface {
	Version(ctx context.Context) (string, error)
	Ping(ctx context.Context) (time.Duration, error)
	// Setup configures the pod once its agent answers (OpSetupPod: hostname,
	// DNS, the guest's network, and in a VM the clock and the RNG); the
	// driver calls it from Create before the daemon sees the sandbox.
	Setup(ctx context.Context, s protocol.PodSetup) error

	AddContainer(ctx context.Context, spec ContainerSpec) error
	// StartContainer starts the container's main process. Output produced from
	// the first byte is delivered to streams opened with Attach/Logs before or
	// after the start.
	StartContainer(ctx context.Context, id string) error
	Exec(ctx context.Context, containerID, execID string, p Process) error
	Signal(ctx context.Context, containerID, execID string, sig int) error
	// Wait blocks until the container (execID == "") or exec exits.
	Wait(ctx context.Context, containerID, execID string) (ExitStatus, error)
	Resize(ctx context.Context, containerID, execID string, width, height int) error
	// Attach opens the stdio of a container or exec process. Closing stdin's
	// writer propagates EOF to the process. Several attachers may coexist.
	Attach(ctx context.Context, containerID, execID string, stdin bool) (Stdio, error)
	// Logs streams the container's captured output with timestamps.
	Logs(ctx context.Context, containerID string, opt LogOptions) (LogReader, error)
	Stats(ctx context.Context) (PodStats, error)
	// Dial connects to a port inside the pod's network namespace.
	Dial(ctx context.Context, network string, port int) (net.Conn, error)
	// Commit streams the container's changes as an OCI layer tar (uncompressed,
	// with OCI whiteouts).
	Commit(ctx context.Context, containerID string) (io.ReadCloser, error)
	RemoveContainer(ctx context.Context, id string) error
	Shutdown(ctx context.Context) error
	Close() error
}

// ContainerSpec is one container as the agent needs it.
type ContainerSpec struct {
	ID       string
	Hostname string
	// Rootfs is the read-only lower: a directory (local) or block device (kvm).
	Rootfs     string
	RootfsType string // "" = directory, else fs type of the block device (ext4, erofs)
	Mounts     []Mount
	Files      []File
	Process    Process
	ReadOnlyFS bool
	Sysctl     map[string]string
}

// Mount is a volume bound into the container.
type Mount struct {
	Source   string // directory or block device as the agent sees it
	FSType   string // "" = bind a directory
	Dest     string
	ReadOnly bool
}

// File is a file written into the container before it starts.
type File struct {
	Path    string
	Content []byte
	Mode    uint32
	UID     int
	GID     int
}

// Process describes a container's main process or an exec.
type Process struct {
	Args      []string
	Env       []string // KEY=VALUE
	Cwd       string
	User      string // name, uid, uid:gid or name:group as in Docker
	Tty       bool
	OpenStdin bool
	Width     int // initial tty size
	Height    int
}

// ExitStatus of a process.
type ExitStatus struct {
	Code     int // 128+signal when killed by a signal
	Signal   int
	Finished time.Time
	Started  time.Time
}

// Stdio is an attached process's streams. With a tty Stdout carries the
// terminal output and Stderr is nil.
type Stdio struct {
	Stdin  io.WriteCloser // nil when stdin was not requested
	Stdout io.ReadCloser
	Stderr io.ReadCloser
}

// LogOptions selects captured output.
type LogOptions struct {
	Stdout, Stderr bool
	Follow         bool
	Tail           int // <0: all
	Since          time.Time
}

// LogReader yields captured output records.
type LogReader interface {
	Next() (LogRecord, error) // io.EOF at the end (never when following, until the process exits)
	Close() error
}

// LogRecord is one chunk of captured output.
type LogRecord struct {
	Stream string // "stdout" or "stderr"
	Time   time.Time
	Data   []byte
}

// PodStats are figures from the guest (cgroup v2) per container.
type PodStats struct {
	Time       time.Time
	Containers []ContainerStats
	CPUCount   int
	MemTotal   uint64
	// MemAvailable is MemAvailable of the pod's /proc/meminfo (in a VM, the
	// guest's memory not in use); 0 if the agent did not say.
	MemAvailable uint64
}

// ContainerStats from the container's cgroup.
type ContainerStats struct {
	ID          string
	CPUUsageNS  uint64
	CPUUserNS   uint64
	CPUSystemNS uint64
	MemoryUsage uint64
	MemoryLimit uint64
	WorkingSet  uint64
	Pids        uint64
	// Source is where the agent read the figures: "cgroup" (cgroup v2) or
	// "proc" (summed over the container's processes; no cgroup2 available,
	// so no limit and RSS as memory).
	Source string
}
