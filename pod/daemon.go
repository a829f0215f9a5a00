// This file owns the Daemon type, its Config and per-pod/container/exec
// state, opening and closing it (New, Close), and the lookups (findPod,
// findCtr, findExec, withPod).

package pod

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// Config configures a Daemon.
type Config struct {
	DataRoot      string
	Driver        sandbox.Driver
	Images        Images // may be nil: image-backed operations then fail clearly
	Logger        *slog.Logger
	DefaultVCPU   int
	DefaultMemory int // MiB
	// DriverWarning is reported in /info (e.g. auto fell back to local).
	DriverWarning string
	// StopTimeout is how long a stop waits for SIGTERM before SIGKILL.
	StopTimeout time.Duration
	// LogLimits is the default cap of a container's log (zero:
	// DefaultLogLimits); a pod's log.config overrides it.
	LogLimits LogLimits
	// Networking says pods get a network (the driver is wrapped by package
	// network); without it a pod's "interfaces" are refused.
	Networking bool
}

// Daemon is the daemon core. All methods are safe for concurrent use.
type Daemon struct {
	cfg    Config
	drv    sandbox.Driver
	img    Images
	st     *store
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// reattaching counts the reattaches under way (recover.go)
	reattaching sync.WaitGroup

	mu    sync.Mutex
	pods  map[string]*podState
	ctrs  map[string]*ctrState
	execs map[string]*execState

	// testHook, set by tests only (export_test.go) before the daemon is
	// used, is called at race windows: "ctr-resolved" (withCtr found the
	// container and is about to wait for its pod's lock).
	testHook func(event, id string)
}

func (d *Daemon) hookAt(event, id string) {
	if d.testHook != nil {
		d.testHook(event, id)
	}
}

type podState struct {
	op  sync.Mutex // serializes lifecycle operations of this pod
	rec PodRecord  // guarded by Daemon.mu
	sb  sandbox.Sandbox
	fwd *forwarder
	// stopping: an explicit stop/remove is under way; exits don't restart.
	stopping bool
}

type ctrState struct {
	rec      ContainerRecord // guarded by Daemon.mu
	logs     *logFile
	exited   chan struct{} // closed when the current run exits
	follow   chan struct{} // closed when the current log follower ended
	stopReq  bool
	waiters  []*attachWaiter
	attached sync.WaitGroup
}

type execState struct {
	rec  ExecRecord
	done chan struct{}
}

type attachWaiter struct {
	ctx   context.Context
	stdin bool
	ch    chan attachResult
}

type attachResult struct {
	stdio sandbox.Stdio
	err   error
}

// New opens the state under cfg.DataRoot and restores every record; pods
// whose sandbox was running are reattached or marked failed with the reason.
func New(cfg Config) (*Daemon, error) {
	if cfg.Driver == nil {
		return nil, errors.New("no sandbox driver")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DefaultVCPU <= 0 {
		cfg.DefaultVCPU = 1
	}
	if cfg.DefaultMemory <= 0 {
		cfg.DefaultMemory = 128
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	for _, d := range []string{cfg.DataRoot, filepath.Join(cfg.DataRoot, "pods")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	st, err := openStore(filepath.Join(cfg.DataRoot, "state.db"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{cfg: cfg, drv: cfg.Driver, img: cfg.Images, st: st, log: cfg.Logger, ctx: ctx, cancel: cancel,
		pods: map[string]*podState{}, ctrs: map[string]*ctrState{}, execs: map[string]*execState{}}
	if err := d.restore(); err != nil {
		cancel()
		st.close()
		return nil, err
	}
	return d, nil
}

// Close stops following sandboxes and closes the state. Sandboxes are left
// running so the next daemon can reattach them (their records stay).
func (d *Daemon) Close() error {
	d.cancel()
	d.mu.Lock()
	for _, p := range d.pods {
		if p.fwd != nil {
			p.fwd.closeAll()
		}
	}
	d.mu.Unlock()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.log.Warn("shutdown: some background work did not finish in 5s")
	}
	d.mu.Lock()
	for _, p := range d.pods {
		if p.sb != nil {
			p.sb.Agent().Close()
		}
	}
	for _, c := range d.ctrs {
		if c.logs != nil {
			c.logs.close()
		}
	}
	d.mu.Unlock()
	return d.st.close()
}

// DriverName is the sandbox driver in use.
func (d *Daemon) DriverName() string { return d.drv.Name() }

// Isolation is the driver's honest description of its isolation.
func (d *Daemon) Isolation() string { return d.drv.Isolation() }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (d *Daemon) podDir(id string) string { return filepath.Join(d.cfg.DataRoot, "pods", id) }

func (d *Daemon) findPod(ref string) (*podState, error) {
	if ref == "" {
		return nil, specErr("bad parameter: no pod id given")
	}
	if p, ok := d.pods[ref]; ok {
		return p, nil
	}
	for _, p := range d.pods {
		if p.rec.Name == ref {
			return p, nil
		}
	}
	return nil, notFound("pod %s not found", ref)
}

func (d *Daemon) findCtr(ref string) (*ctrState, error) {
	if ref == "" {
		return nil, specErr("bad parameter: no container id given")
	}
	if c, ok := d.ctrs[ref]; ok {
		return c, nil
	}
	var match *ctrState
	for id, c := range d.ctrs {
		if c.rec.Name == ref || c.rec.Name == strings.TrimPrefix(ref, "/") {
			return c, nil
		}
		if len(ref) >= 4 && strings.HasPrefix(id, ref) {
			if match != nil {
				return nil, specErr("bad parameter: container id prefix %s is ambiguous", ref)
			}
			match = c
		}
	}
	if match != nil {
		return match, nil
	}
	return nil, notFound("container %s not found", ref)
}

func (d *Daemon) findExec(cref, ref string) (*execState, error) {
	e, ok := d.execs[ref]
	if !ok {
		return nil, notFound("exec %s not found", ref)
	}
	if cref != "" {
		c, err := d.findCtr(cref)
		if err != nil {
			return nil, err
		}
		if c.rec.ID != e.rec.ContainerID {
			return nil, notFound("exec %s not found in container %s", ref, cref)
		}
	}
	return e, nil
}

func (d *Daemon) nameTaken(name string) bool {
	for _, c := range d.ctrs {
		if c.rec.Name == name {
			return true
		}
	}
	return false
}

// withPod runs f on the pod ref names, holding the pod's operation lock
// (one start/stop/remove at a time per pod).
func (d *Daemon) withPod(ref string, f func(p *podState) error) error {
	d.mu.Lock()
	p, err := d.findPod(ref)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	p.op.Lock()
	defer p.op.Unlock()
	return f(p)
}

func copyMap(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}
