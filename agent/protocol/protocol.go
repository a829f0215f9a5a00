package protocol

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Version is the protocol version. A peer refuses a hello with another
// major version.
const Version = 1

// MaxFrame caps one frame's payload; a larger length prefix is an error
// before anything is allocated.
const MaxFrame = 16 << 20

// Connection kinds named in the Hello frame.
const (
	KindControl = "control"
	KindStdin   = "stdin"
	KindStdout  = "stdout"
	KindStderr  = "stderr"
	KindLogs    = "logs"
	KindDial    = "dial"
	KindCommit  = "commit"
)

// Operations on the control connection.
const (
	OpVersion  = "version"
	OpPing     = "ping"
	OpAdd      = "add"
	OpStart    = "start"
	OpExec     = "exec"
	OpSignal   = "signal"
	OpWait     = "wait"
	OpResize   = "resize"
	OpStats    = "stats"
	OpRemove   = "remove"
	OpShutdown = "shutdown"
	OpSetupPod = "setup"
	OpStage    = "stage"
)

// Error codes.
const (
	CodeBadRequest = "bad_request"
	CodeNotFound   = "not_found"
	CodeConflict   = "conflict"
	CodeInternal   = "internal"
	CodeVersion    = "version"
)

// ErrFrameTooLarge is returned for a length prefix above MaxFrame.
var ErrFrameTooLarge = errors.New("protocol: frame too large")

// Hello is the first frame on every connection.
type Hello struct {
	Version   int    `json:"version"`
	Kind      string `json:"kind"`
	Container string `json:"container,omitempty"`
	Exec      string `json:"exec,omitempty"`
	// Logs
	Logs *LogOptions `json:"logs,omitempty"`
	// Dial
	Network string `json:"network,omitempty"`
	Port    int    `json:"port,omitempty"`
}

// HelloReply answers a Hello. After an OK reply, stdio, dial and commit
// connections carry raw bytes; logs connections carry LogRecord frames.
type HelloReply struct {
	Version int    `json:"version"`
	Agent   string `json:"agent,omitempty"`
	// Tty is set on stdout replies of a tty process (no stderr stream).
	Tty   bool   `json:"tty,omitempty"`
	Error *Error `json:"error,omitempty"`
}

// Request is one control request.
type Request struct {
	ID   uint64          `json:"id"`
	Op   string          `json:"op"`
	Body json.RawMessage `json:"body,omitempty"`
}

// Response answers the Request with the same ID.
type Response struct {
	ID     uint64          `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Error is a typed error reply.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(code, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

// VersionReply is the result of OpVersion.
type VersionReply struct {
	Protocol int    `json:"protocol"`
	Agent    string `json:"agent"`
}

// ContainerRef names a container or one of its execs.
type ContainerRef struct {
	Container string `json:"container"`
	Exec      string `json:"exec,omitempty"`
}

// ExecRequest starts an exec process.
type ExecRequest struct {
	Container string  `json:"container"`
	Exec      string  `json:"exec"`
	Process   Process `json:"process"`
}

// SignalRequest signals a container's main process or an exec.
type SignalRequest struct {
	Container string `json:"container"`
	Exec      string `json:"exec,omitempty"`
	Signal    int    `json:"signal"`
}

// ResizeRequest resizes a process's tty.
type ResizeRequest struct {
	Container string `json:"container"`
	Exec      string `json:"exec,omitempty"`
	Width     int    `json:"width"`
	Height    int    `json:"height"`
}

// ExitStatus is the result of OpWait.
type ExitStatus struct {
	Code     int       `json:"code"`
	Signal   int       `json:"signal,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
}

// PodSetup is the body of OpSetupPod: hostname, DNS, the guest's network,
// and in a VM the identity a VM restored from a template must not share
// with its siblings (clock, RNG).
type PodSetup struct {
	Hostname   string   `json:"hostname,omitempty"`
	DNS        []string `json:"dns,omitempty"`
	DNSSearch  []string `json:"dns_search,omitempty"`
	DNSOptions []string `json:"dns_options,omitempty"` // resolv.conf "options"
	// Interfaces are the pod's network interfaces for the agent to
	// configure (in a VM: the NIC with that MAC gets the name, MTU and
	// addresses, and is brought up); empty where the pod's network
	// namespace is configured already (the local driver).
	Interfaces []Interface `json:"interfaces,omitempty"`
	// Routes are added after the interfaces (a default route has Dst
	// 0.0.0.0/0 or ::/0).
	Routes []Route `json:"routes,omitempty"`
	// Time is the host's wall clock when it sent the setup, in Unix
	// nanoseconds; 0 = leave the guest's clock. The agent of a VM sets
	// CLOCK_REALTIME to it unless the guest's clock is within
	// ClockSlack of it already (a VM restored from a template wakes up
	// with the template's wall clock). Refused by an agent that does not
	// own its machine (local mode).
	Time int64 `json:"time,omitempty"`
	// Entropy is random data from the host (crypto/rand; at most
	// EntropyMax bytes) that the agent of a VM mixes into the kernel's
	// RNG, crediting it, and then reseeds the kernel's CRNG with: VMs
	// restored from one template diverge at once. Refused by an agent
	// that does not own its machine (local mode).
	Entropy []byte `json:"entropy,omitempty"`
	// Generation counts the restores of a VM (0 = none given). A setup
	// whose Generation differs from the last one the agent saw reseeds
	// the CRNG even without Entropy; one repeating the last Generation
	// leaves the RNG alone (its Entropy was mixed in already).
	Generation uint64 `json:"generation,omitempty"`
}

// EntropyMax bounds PodSetup.Entropy.
const EntropyMax = 4096

// ClockSlack is how far a guest's clock may be from PodSetup.Time for
// the agent to leave it alone.
const ClockSlack = time.Second

// Interface is one network interface of PodSetup.
type Interface struct {
	Name  string   `json:"name"`
	MAC   string   `json:"mac"`
	MTU   int      `json:"mtu,omitempty"`
	Addrs []string `json:"addrs"` // CIDR
}

// Route is one route of PodSetup; Gateway "" is on-link.
type Route struct {
	Dst     string `json:"dst"`
	Gateway string `json:"gateway,omitempty"`
}

// ContainerSpec is the body of OpAdd.
type ContainerSpec struct {
	ID         string            `json:"id"`
	Hostname   string            `json:"hostname,omitempty"`
	Rootfs     string            `json:"rootfs"`
	RootfsType string            `json:"rootfs_type,omitempty"`
	Mounts     []Mount           `json:"mounts,omitempty"`
	Files      []File            `json:"files,omitempty"`
	Process    Process           `json:"process"`
	ReadOnlyFS bool              `json:"readonly_fs,omitempty"`
	Sysctl     map[string]string `json:"sysctl,omitempty"`
}

// Mount is a volume.
type Mount struct {
	Source   string `json:"source"`
	FSType   string `json:"fstype,omitempty"`
	Dest     string `json:"dest"`
	ReadOnly bool   `json:"readonly,omitempty"`
}

// File is written into the container before it starts: its Content, or
// the file staged under the name Staged (OpStage) for content too big for
// one frame.
type File struct {
	Path    string `json:"path"`
	Content []byte `json:"content,omitempty"`
	Staged  string `json:"staged,omitempty"`
	Mode    uint32 `json:"mode,omitempty"`
	UID     int    `json:"uid,omitempty"`
	GID     int    `json:"gid,omitempty"`
}

// StageChunk is OpStage's body: a piece of a file the agent keeps for a
// coming OpAdd (File.Staged names it), written at the end of what came
// before under Name, or from scratch without Append. Data is at most
// StageChunkMax bytes.
type StageChunk struct {
	Name   string `json:"name"`
	Data   []byte `json:"data"`
	Append bool   `json:"append,omitempty"`
}

// StageChunkMax bounds one StageChunk's data.
const StageChunkMax = 1 << 20

// Process is a main process or exec.
type Process struct {
	Args      []string `json:"args"`
	Env       []string `json:"env,omitempty"`
	Cwd       string   `json:"cwd,omitempty"`
	User      string   `json:"user,omitempty"`
	Tty       bool     `json:"tty,omitempty"`
	OpenStdin bool     `json:"open_stdin,omitempty"`
	Width     int      `json:"width,omitempty"`
	Height    int      `json:"height,omitempty"`
}

// LogOptions select captured output on a logs connection.
type LogOptions struct {
	Stdout bool      `json:"stdout"`
	Stderr bool      `json:"stderr"`
	Follow bool      `json:"follow,omitempty"`
	Tail   int       `json:"tail"`
	Since  time.Time `json:"since,omitempty"`
}

// LogRecord is one frame on a logs connection.
type LogRecord struct {
	Stream string    `json:"stream"`
	Time   time.Time `json:"time"`
	Data   []byte    `json:"data"`
}

// PodStats is the result of OpStats.
type PodStats struct {
	Time       time.Time        `json:"time"`
	Containers []ContainerStats `json:"containers"`
	CPUCount   int              `json:"cpu_count"`
	MemTotal   uint64           `json:"mem_total"`
	// MemAvailable is the pod's MemAvailable (/proc/meminfo): in a VM,
	// the guest memory not in use; 0 if unknown.
	MemAvailable uint64 `json:"mem_available,omitempty"`
}

// ContainerStats from cgroup v2 (or /proc, see Source).
type ContainerStats struct {
	ID          string `json:"id"`
	CPUUsageNS  uint64 `json:"cpu_usage_ns"`
	CPUUserNS   uint64 `json:"cpu_user_ns"`
	CPUSystemNS uint64 `json:"cpu_system_ns"`
	MemoryUsage uint64 `json:"memory_usage"`
	MemoryLimit uint64 `json:"memory_limit"`
	WorkingSet  uint64 `json:"working_set"`
	Pids        uint64 `json:"pids"`
	// Source says where the figures come from: "cgroup" (cgroup v2),
	// "proc" (summed over the container's processes in /proc because no
	// writable cgroup2 was available: no limit, RSS as memory).
	Source string `json:"source,omitempty"`
}

// ReadFrame reads one length-prefixed frame. It never allocates more than
// MaxFrame, and only as much as the peer actually sent (the buffer grows
// with the data read, so a lying length prefix costs nothing).
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, ErrFrameTooLarge
	}
	const chunk = 64 << 10
	buf := make([]byte, 0, min(int(n), chunk))
	for len(buf) < int(n) {
		want := min(int(n)-len(buf), chunk)
		if cap(buf)-len(buf) < want {
			nb := make([]byte, len(buf), min(int(n), 2*cap(buf)+want))
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):len(buf)+want])
		buf = buf[:len(buf)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

// WriteFrame writes p as one frame.
func WriteFrame(w io.Writer, p []byte) error {
	if len(p) > MaxFrame {
		return ErrFrameTooLarge
	}
	b := make([]byte, 4+len(p))
	binary.BigEndian.PutUint32(b, uint32(len(p)))
	copy(b[4:], p)
	_, err := w.Write(b)
	return err
}

// ReadJSON reads one frame and decodes it into v.
func ReadJSON(r io.Reader, v any) error {
	b, err := ReadFrame(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("protocol: bad frame: %w", err)
	}
	return nil
}

// WriteJSON encodes v as one frame.
func WriteJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return WriteFrame(w, b)
}

// DecodeRequest decodes and validates a control request frame.
func DecodeRequest(b []byte) (Request, error) {
	var req Request
	if err := json.Unmarshal(b, &req); err != nil {
		return Request{}, fmt.Errorf("protocol: bad request: %w", err)
	}
	if req.Op == "" {
		return Request{}, errors.New("protocol: request without op")
	}
	return req, nil
}

// DecodeHello decodes and validates a hello frame.
func DecodeHello(b []byte) (Hello, error) {
	var h Hello
	if err := json.Unmarshal(b, &h); err != nil {
		return Hello{}, fmt.Errorf("protocol: bad hello: %w", err)
	}
	if h.Version != Version {
		return Hello{}, fmt.Errorf("protocol: version %d, agent speaks %d", h.Version, Version)
	}
	switch h.Kind {
	case KindControl, KindStdin, KindStdout, KindStderr, KindLogs, KindDial, KindCommit:
	default:
		return Hello{}, fmt.Errorf("protocol: unknown connection kind %q", h.Kind)
	}
	return h, nil
}
