package pod

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// ImageConfig is the part of an image's config the daemon uses. Its fields
// mirror image.ImageConfig so the image store's type converts directly.
type ImageConfig struct {
	Cmd          []string
	Entrypoint   []string
	Env          []string
	WorkingDir   string
	User         string
	ExposedPorts map[string]struct{}
	Volumes      map[string]struct{}
	Labels       map[string]string
	StopSignal   string
}

// ImageRef is a resolved image.
type ImageRef struct {
	ID       string
	RepoTags []string
	Config   ImageConfig
}

// CommitOptions name the image a commit creates.
type CommitOptions struct {
	Repo, Tag, Comment, Author string
	Config                     *ImageConfig
}

// ErrImageNotFound is returned (wrapped) by Images.Resolve for unknown refs.
var ErrImageNotFound = errors.New("image not found")

// Images is the narrow view of the image store the daemon core needs.
type Images interface {
	// Resolve finds a local image by reference or id.
	Resolve(ref string) (ImageRef, error)
	// RootfsDir is the flattened rootfs directory of an image (local driver).
	RootfsDir(ctx context.Context, id string) (string, error)
	// DiskImage is a read-only disk image of the rootfs (kvm driver).
	DiskImage(ctx context.Context, id string) (path, fstype string, err error)
	// Commit creates an image from parent + a layer tar; returns the new id.
	Commit(ctx context.Context, parentID string, layer io.Reader, opt CommitOptions) (string, error)
}

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

	mu    sync.Mutex
	pods  map[string]*podState
	ctrs  map[string]*ctrState
	execs map[string]*execState
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

// --- persistence helpers (caller holds d.mu) ---

func (d *Daemon) savePod(p *podState) {
	if err := d.st.put(bPods, p.rec.ID, &p.rec); err != nil {
		d.log.Error("persist pod", "pod", p.rec.ID, "err", err)
	}
}

func (d *Daemon) saveCtr(c *ctrState) {
	if err := d.st.put(bContainers, c.rec.ID, &c.rec); err != nil {
		d.log.Error("persist container", "container", c.rec.ID, "err", err)
	}
}

func (d *Daemon) saveExec(e *execState) {
	if err := d.st.put(bExecs, e.rec.ID, &e.rec); err != nil {
		d.log.Error("persist exec", "exec", e.rec.ID, "err", err)
	}
}

// --- lookups (caller holds d.mu) ---

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

// --- restore ---

func (d *Daemon) restore() error {
	pods, err := loadAll[PodRecord](d.st, bPods)
	if err != nil {
		return err
	}
	ctrs, err := loadAll[ContainerRecord](d.st, bContainers)
	if err != nil {
		return err
	}
	execs, err := loadAll[ExecRecord](d.st, bExecs)
	if err != nil {
		return err
	}
	logs, err := loadAll[LogIndex](d.st, bLogs)
	if err != nil {
		return err
	}
	logIdx := map[string]LogIndex{}
	for _, l := range logs {
		logIdx[l.ContainerID] = l
	}
	for _, r := range pods {
		d.pods[r.ID] = &podState{rec: r}
	}
	for _, r := range ctrs {
		if _, ok := d.pods[r.PodID]; !ok {
			d.log.Warn("restore: container of unknown pod dropped", "container", r.ID, "pod", r.PodID)
			d.st.del(bContainers, r.ID)
			continue
		}
		c := &ctrState{rec: r, exited: make(chan struct{}), follow: make(chan struct{})}
		close(c.follow)
		if r.Exited || r.Phase == PhaseSucceeded || r.Phase == PhaseFailed {
			close(c.exited)
		}
		lf, err := d.openLogs(r.ID, logIdx[r.ID])
		if err != nil {
			d.log.Error("restore: container log", "container", r.ID, "err", err)
		}
		c.logs = lf
		d.ctrs[r.ID] = c
	}
	for _, r := range execs {
		e := &execState{rec: r, done: make(chan struct{})}
		if r.Exited {
			close(e.done)
		}
		d.execs[r.ID] = e
	}
	for _, p := range d.pods {
		d.restorePod(p)
	}
	d.log.Info("state restored", "pods", len(d.pods), "containers", len(d.ctrs), "execs", len(d.execs))
	return nil
}

func (d *Daemon) restorePod(p *podState) {
	switch p.rec.State {
	case StatePending, StateStopped:
		if p.rec.Handle == nil {
			return
		}
	}
	if p.rec.Handle == nil {
		d.failPodLocked(p, "SandboxLost", "the daemon restarted while the pod was starting, before its sandbox existed")
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, 15*time.Second)
	sb, err := d.drv.Reattach(ctx, *p.rec.Handle)
	cancel()
	if p.rec.SandboxKept && p.rec.State == StateStopped {
		// a stopped pod's idle sandbox (stopVM=no): adopt it, or forget it
		if err != nil {
			d.log.Warn("restore: the kept sandbox of a stopped pod is gone", "pod", p.rec.ID, "err", err)
			p.rec.Handle, p.rec.SandboxKept = nil, false
		} else {
			p.sb = sb
			d.watchSandbox(p, sb)
		}
		d.savePod(p)
		return
	}
	if err != nil {
		d.log.Warn("restore: sandbox gone, pod marked failed", "pod", p.rec.ID, "err", err)
		d.failPodLocked(p, "SandboxLost", fmt.Sprintf("reattach after daemon restart failed: %v", err))
		return
	}
	if p.rec.State == StatePending || p.rec.State == StateStopped || p.rec.State == StateStopping {
		// it was being started or stopped: finish the stop.
		d.log.Info("restore: stopping sandbox of a pod that was not running", "pod", p.rec.ID)
		sctx, cancel := context.WithTimeout(d.ctx, 15*time.Second)
		sb.Stop(sctx)
		cancel()
		d.failPodLocked(p, "Stopped", "the daemon restarted while the pod was being started or stopped")
		return
	}
	p.sb = sb
	d.log.Info("restore: sandbox reattached", "pod", p.rec.ID, "driver", sb.Handle().Driver)
	p.fwd = newForwarder(sb.Agent(), d.log)
	for _, pm := range p.rec.PortMappings {
		pairs, _ := ExpandPortMapping(pm)
		if err := p.fwd.add(pairs); err != nil {
			d.log.Warn("restore: port mapping", "pod", p.rec.ID, "err", err)
		}
	}
	for _, cid := range p.rec.Containers {
		c := d.ctrs[cid]
		if c == nil || !c.rec.InSandbox {
			continue
		}
		if c.rec.Phase == PhaseRunning {
			d.watchContainer(p, c, sb, true)
		}
	}
	for _, e := range d.execs {
		if e.rec.PodID == p.rec.ID && e.rec.Started && !e.rec.Exited {
			d.watchExec(sb, e)
		}
	}
	d.watchSandbox(p, sb)
}

// failPodLocked marks a pod stopped+failed and its unfinished containers
// and execs failed. Caller holds d.mu (or is single-threaded in restore).
func (d *Daemon) failPodLocked(p *podState, reason, msg string) {
	now := time.Now()
	p.rec.State, p.rec.Phase, p.rec.Reason, p.rec.Message = StateStopped, "Failed", reason, msg
	p.rec.Finished = now
	p.rec.Handle = nil
	p.sb = nil
	for _, cid := range p.rec.Containers {
		c := d.ctrs[cid]
		if c == nil {
			continue
		}
		c.rec.InSandbox = false
		if c.rec.Phase == PhaseRunning || (c.rec.Phase == PhasePending && !c.rec.Started.IsZero()) {
			c.rec.Phase, c.rec.Exited, c.rec.ExitCode = PhaseFailed, true, 255
			c.rec.Reason, c.rec.Message, c.rec.Finished = reason, msg, now
			select {
			case <-c.exited:
			default:
				close(c.exited)
			}
		}
		if c.logs != nil {
			c.logs.setLive(false)
		}
		d.saveCtr(c)
	}
	for _, e := range d.execs {
		if e.rec.PodID == p.rec.ID && !e.rec.Exited {
			e.rec.Exited, e.rec.ExitCode, e.rec.Reason = true, 255, reason+": "+msg
			close(e.done)
			d.saveExec(e)
		}
	}
	d.savePod(p)
}

func (d *Daemon) openLogs(cid string, idx LogIndex) (*logFile, error) {
	dir := filepath.Join(d.cfg.DataRoot, "logs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, cid+".log")
	var last time.Time
	lf, err := openLogFile(path, idx, func(li LogIndex) {
		// persist the index at most every 200ms per container
		if li.Last.Sub(last) < 200*time.Millisecond && !last.IsZero() {
			return
		}
		last = li.Last
		li.ContainerID = cid
		d.st.put(bLogs, cid, li)
	})
	if err != nil {
		return nil, err
	}
	return lf, nil
}

// --- images ---

func (d *Daemon) resolveImage(ref string) (ImageRef, error) {
	if d.img == nil {
		return ImageRef{}, &NotImplementedError{Msg: "no image store is available in this daemon"}
	}
	im, err := d.img.Resolve(ref)
	if err != nil {
		if errors.Is(err, ErrImageNotFound) {
			return ImageRef{}, notFound("image %s not found locally (pull or load it first)", ref)
		}
		return ImageRef{}, err
	}
	return im, nil
}

// ImageInUse reports whether any container record uses the image id.
func (d *Daemon) ImageInUse(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.ctrs {
		if c.rec.ImageID == id || strings.TrimPrefix(c.rec.ImageID, "sha256:") == strings.TrimPrefix(id, "sha256:") {
			return true
		}
	}
	return false
}

// newContainer builds a container record from a validated spec.
func (d *Daemon) newContainer(podID string, spec ContainerSpec) (*ctrState, error) {
	im, err := d.resolveImage(spec.Image)
	if err != nil {
		return nil, err
	}
	var args []string
	switch {
	case len(spec.Entrypoint) > 0:
		args = append(append(args, spec.Entrypoint...), spec.Command...)
	case len(spec.Command) > 0:
		args = append(append(args, im.Config.Entrypoint...), spec.Command...)
	default:
		args = append(append(args, im.Config.Entrypoint...), im.Config.Cmd...)
	}
	if len(args) == 0 {
		return nil, specErr("bad parameter: container %q: no command specified (image %s has no CMD or ENTRYPOINT)", spec.Name, spec.Image)
	}
	env := append([]string(nil), im.Config.Env...)
	for _, e := range spec.Envs {
		kv := e.Env + "=" + e.Value
		replaced := false
		for i, old := range env {
			if strings.HasPrefix(old, e.Env+"=") {
				env[i], replaced = kv, true
			}
		}
		if !replaced {
			env = append(env, kv)
		}
	}
	if !hasEnv(env, "PATH") {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if spec.Tty && !hasEnv(env, "TERM") {
		env = append(env, "TERM=xterm")
	}
	wd := spec.Workdir
	if wd == "" {
		wd = im.Config.WorkingDir
	}
	if wd == "" {
		wd = "/"
	}
	user := im.Config.User
	if spec.User.Name != "" {
		user = spec.User.Name
		if spec.User.Group != "" {
			user += ":" + spec.User.Group
		}
	}
	sig := 15
	if s := spec.StopSignal; s != "" {
		sig, _ = ParseSignal(s)
	} else if s := im.Config.StopSignal; s != "" {
		if n, err := ParseSignal(s); err == nil {
			sig = n
		}
	}
	id := spec.ID
	if id == "" {
		id = randomHex(32)
	}
	c := &ctrState{rec: ContainerRecord{ID: id, Name: spec.Name, PodID: podID, Spec: spec, Image: spec.Image,
		ImageID: im.ID, Args: args, Env: env, Workdir: wd, User: user, StopSignal: sig, Phase: PhasePending,
		Created: time.Now()}, exited: make(chan struct{}), follow: make(chan struct{})}
	close(c.follow)
	return c, nil
}

func hasEnv(env []string, k string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, k+"=") {
			return true
		}
	}
	return false
}

// --- pods ---

// CreatePod validates and records a pod (state pending). It returns the pod id.
func (d *Daemon) CreatePod(spec *PodSpec) (string, error) {
	if err := spec.Normalize(); err != nil {
		return "", err
	}
	var ctrs []*ctrState
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.pods[spec.ID]; ok {
		return "", conflict("conflict: pod %s already exists", spec.ID)
	}
	for _, p := range d.pods {
		if p.rec.Name == spec.ID {
			return "", conflict("conflict: pod name %s already in use", spec.ID)
		}
	}
	seen := map[string]bool{}
	for _, cs := range spec.Containers {
		if d.nameTaken(cs.Name) {
			return "", conflict("conflict: container name %s already in use", cs.Name)
		}
		if cs.ID != "" {
			if _, ok := d.ctrs[cs.ID]; ok || seen[cs.ID] {
				return "", conflict("conflict: container id %s already in use", cs.ID)
			}
			seen[cs.ID] = true
		}
		c, err := d.newContainer(spec.ID, cs)
		if err != nil {
			return "", err
		}
		ctrs = append(ctrs, c)
	}
	pms := append([]PortMapping(nil), spec.PortMappings...)
	for _, cs := range spec.Containers {
		pms = append(pms, cs.Ports...)
	}
	if err := d.checkPortConflicts(spec.ID, pms); err != nil {
		return "", err
	}
	if spec.Resource.VCPU == 0 {
		spec.Resource.VCPU = d.cfg.DefaultVCPU
	}
	if spec.Resource.Memory == 0 {
		spec.Resource.Memory = d.cfg.DefaultMemory
	}
	p := &podState{rec: PodRecord{ID: spec.ID, Name: spec.ID, Spec: *spec, VMID: "vm-" + RandomLetters(10),
		State: StatePending, Phase: "Pending", Created: time.Now(), Labels: copyMap(spec.Labels),
		PortMappings: pms, Driver: d.drv.Name(), Isolation: d.drv.Isolation()}}
	for _, c := range ctrs {
		lf, err := d.openLogs(c.rec.ID, LogIndex{})
		if err != nil {
			return "", err
		}
		c.logs = lf
		p.rec.Containers = append(p.rec.Containers, c.rec.ID)
	}
	for _, c := range ctrs {
		d.ctrs[c.rec.ID] = c
		c.logs.setLive(true)
		d.saveCtr(c)
	}
	d.pods[p.rec.ID] = p
	d.savePod(p)
	d.log.Info("pod created", "pod", p.rec.ID, "containers", len(ctrs))
	return p.rec.ID, nil
}

func copyMap(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// checkPortConflicts: caller holds d.mu.
func (d *Daemon) checkPortConflicts(podID string, pms []PortMapping) error {
	used := map[string]string{}
	for _, p := range d.pods {
		for _, pm := range p.rec.PortMappings {
			pairs, _ := ExpandPortMapping(pm)
			for _, pp := range pairs {
				used[pairKey(pp)] = p.rec.ID
			}
		}
	}
	mine := map[string]bool{}
	for _, pm := range pms {
		pairs, err := ExpandPortMapping(pm)
		if err != nil {
			return err
		}
		for _, pp := range pairs {
			k := pairKey(pp)
			if owner, ok := used[k]; ok && owner != podID {
				return conflict("conflict: host port %s is already mapped by pod %s", k, owner)
			}
			if mine[k] {
				return conflict("conflict: host port %s is mapped twice", k)
			}
			mine[k] = true
		}
	}
	return nil
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

// StartPod boots the pod's sandbox and starts its containers.
func (d *Daemon) StartPod(ctx context.Context, ref string) error {
	return d.withPod(ref, func(p *podState) error { return d.startPodLocked(ctx, p) })
}

func (d *Daemon) startPodLocked(ctx context.Context, p *podState) error {
	d.mu.Lock()
	switch p.rec.State {
	case StateRunning, StatePaused:
		d.mu.Unlock()
		return conflict("conflict: pod %s is already running", p.rec.ID)
	case StateStopping:
		d.mu.Unlock()
		return conflict("conflict: pod %s is stopping", p.rec.ID)
	}
	if _, gone := d.pods[p.rec.ID]; !gone {
		d.mu.Unlock()
		return notFound("pod %s not found", p.rec.ID)
	}
	spec := p.rec.Spec
	var ctrs []*ctrState
	for _, cid := range p.rec.Containers {
		if c := d.ctrs[cid]; c != nil {
			ctrs = append(ctrs, c)
		}
	}
	p.stopping = false
	p.rec.State, p.rec.Phase, p.rec.Reason, p.rec.Message = StatePending, "Pending", "", ""
	d.savePod(p)
	d.mu.Unlock()

	fail := func(err error) error {
		reason := "StartFailed"
		var stopped *sandbox.ExitError
		if errors.As(err, &stopped) {
			reason = stopped.Reason // e.g. GuestPanic: the VM stopped while booting
		}
		d.mu.Lock()
		d.failPodLocked(p, reason, err.Error())
		for _, c := range ctrs {
			d.failWaiters(c, err)
		}
		d.mu.Unlock()
		d.log.Error("pod start failed", "pod", p.rec.ID, "err", err)
		return err
	}
	// Storage: image rootfs per container, pod volumes.
	cfg := sandbox.Config{ID: p.rec.ID, Hostname: spec.Hostname, VCPU: spec.Resource.VCPU, MemoryMiB: spec.Resource.Memory,
		DNS: spec.DNS, DNSSearch: spec.DNSSearch, StateDir: filepath.Join(d.podDir(p.rec.ID), "sandbox")}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fail(err)
	}
	rootfs := map[string][2]string{} // container id -> host path, fstype
	for _, c := range ctrs {
		if d.img == nil {
			return fail(&NotImplementedError{Msg: "no image store is available in this daemon"})
		}
		var path, fstype string
		var err error
		if d.drv.Name() == "kvm" {
			path, fstype, err = d.img.DiskImage(ctx, c.rec.ImageID)
		} else {
			path, err = d.img.RootfsDir(ctx, c.rec.ImageID)
		}
		if err != nil {
			return fail(fmt.Errorf("rootfs of image %s for container %s: %w", c.rec.Image, c.rec.Name, err))
		}
		rootfs[c.rec.ID] = [2]string{path, fstype}
		if !hasDisk(cfg.Disks, path) {
			cfg.Disks = append(cfg.Disks, sandbox.Disk{HostPath: path, ReadOnly: true})
		}
	}
	volPaths := map[string]VolumeSpec{}
	for _, v := range spec.Volumes {
		vs, err := d.prepareVolume(p.rec.ID, v)
		if err != nil {
			return fail(err)
		}
		volPaths[v.Name] = vs
		cfg.Disks = append(cfg.Disks, sandbox.Disk{HostPath: vs.Source})
	}
	files := map[string][]byte{}
	for _, f := range spec.Files {
		b, err := fileContent(ctx, f)
		if err != nil {
			return fail(specErr("bad parameter: file %s: %v", f.Name, err))
		}
		files[f.Name] = b
	}
	if sb := d.keptSandbox(p, cfg.Disks); sb != nil {
		d.mu.Lock()
		p.rec.SandboxKept = false
		p.rec.Started, p.rec.Finished = time.Now(), time.Time{}
		d.savePod(p)
		d.mu.Unlock()
		d.log.Info("reusing the pod's kept sandbox", "pod", p.rec.ID, "sandbox", sb.ID())
		return d.startContainers(ctx, p, sb, ctrs, spec, rootfs, volPaths, files, fail, false)
	}
	cfg.Started = func(h sandbox.Handle) {
		// persisted while still Pending: a daemon killed during the boot
		// finds this sandbox on restart and releases it (restorePod)
		d.mu.Lock()
		p.rec.Handle = &h
		d.savePod(p)
		d.mu.Unlock()
	}
	sb, err := d.drv.Create(ctx, cfg)
	if err != nil {
		return fail(fmt.Errorf("create %s sandbox: %w", d.drv.Name(), err))
	}
	h := sb.Handle()
	d.mu.Lock()
	p.sb, p.rec.Handle = sb, &h
	p.rec.Started = time.Now()
	p.rec.Finished = time.Time{}
	d.savePod(p)
	d.mu.Unlock()
	d.log.Info("sandbox created", "pod", p.rec.ID, "driver", d.drv.Name(), "sandbox", sb.ID())
	return d.startContainers(ctx, p, sb, ctrs, spec, rootfs, volPaths, files, fail, true)
}

// keptSandbox returns the idle sandbox a stopVM=no stop left, if it can
// serve this start (alive, every disk attached); one that cannot is
// stopped and forgotten.
func (d *Daemon) keptSandbox(p *podState, disks []sandbox.Disk) sandbox.Sandbox {
	d.mu.Lock()
	sb := p.sb
	d.mu.Unlock()
	if sb == nil {
		return nil
	}
	ok := true
	select {
	case <-sb.Done():
		ok = false
	default:
	}
	for _, dk := range disks {
		if _, err := sb.DiskSource(dk.HostPath); err != nil {
			ok = false // e.g. a container added while stopped: its image is not attached
		}
	}
	if ok {
		return sb
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	sb.Stop(ctx)
	cancel()
	d.mu.Lock()
	p.sb, p.rec.Handle, p.rec.SandboxKept = nil, nil, false
	d.savePod(p)
	d.mu.Unlock()
	return nil
}

// startContainers adds and starts the pod's containers in sb, then its
// port mappings; the pod is Running after that. watch: sb is new (its
// watcher is started here; a reused sandbox has one).
func (d *Daemon) startContainers(ctx context.Context, p *podState, sb sandbox.Sandbox, ctrs []*ctrState, spec PodSpec,
	rootfs map[string][2]string, volPaths map[string]VolumeSpec, files map[string][]byte, fail func(error) error, watch bool) error {
	ag := sb.Agent()
	for _, c := range ctrs {
		cs, err := d.agentSpec(sb, c, spec.Hostname, rootfs[c.rec.ID], volPaths, files)
		if err != nil {
			sb.Stop(context.Background())
			return fail(err)
		}
		if err := d.addAndStart(ctx, p, c, sb, cs, true); err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			sb.Stop(sctx)
			cancel()
			return fail(err)
		}
	}
	fwd := newForwarder(ag, d.log)
	d.mu.Lock()
	pms := append([]PortMapping(nil), p.rec.PortMappings...)
	d.mu.Unlock()
	for _, pm := range pms {
		pairs, _ := ExpandPortMapping(pm)
		if err := fwd.add(pairs); err != nil {
			fwd.closeAll()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			sb.Stop(sctx)
			cancel()
			return fail(err)
		}
	}
	d.mu.Lock()
	p.fwd = fwd
	p.rec.State, p.rec.Phase = StateRunning, "Running"
	d.savePod(p)
	d.mu.Unlock()
	if watch {
		d.watchSandbox(p, sb)
	}
	d.log.Info("pod started", "pod", p.rec.ID)
	return nil
}

// prepareVolume resolves a pod volume to what the driver can attach: with
// the local driver a host directory (a fresh one under the pod's dir when
// the volume has no source); with kvm a disk image file (a fresh sparse
// ext4 image when there is no source; host directories cannot be shared
// into the VM: there is no 9p/virtiofs).
func (d *Daemon) prepareVolume(podID string, v VolumeSpec) (VolumeSpec, error) {
	kvm := d.drv.Name() == "kvm"
	if v.Source == "" {
		dir := filepath.Join(d.podDir(podID), "volumes")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return v, err
		}
		if !kvm {
			v.Source = filepath.Join(dir, v.Name)
			return v, os.MkdirAll(v.Source, 0o755)
		}
		v.Source, v.Format, v.Fstype = filepath.Join(dir, v.Name+".img"), "raw", "ext4"
		if _, err := os.Stat(v.Source); err == nil {
			return v, nil
		}
		f, err := os.Create(v.Source)
		if err != nil {
			return v, err
		}
		f.Truncate(1 << 30)
		f.Close()
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", v.Source).CombinedOutput(); err != nil {
			os.Remove(v.Source)
			return v, fmt.Errorf("volume %s: mkfs.ext4: %v: %s", v.Name, err, out)
		}
		return v, nil
	}
	st, err := os.Stat(v.Source)
	if err != nil {
		return v, specErr("bad parameter: volume %s: source %s: %v", v.Name, v.Source, err)
	}
	if kvm && st.IsDir() {
		return v, specErr("bad parameter: volume %s: host directory %s cannot be shared into a VM (kvm driver); use a raw disk image", v.Name, v.Source)
	}
	if !kvm && !st.IsDir() {
		return v, specErr("bad parameter: volume %s: the local driver shares host directories; %s is not one", v.Name, v.Source)
	}
	return v, nil
}

func hasDisk(ds []sandbox.Disk, p string) bool {
	for _, d := range ds {
		if d.HostPath == p {
			return true
		}
	}
	return false
}

func fileContent(ctx context.Context, f FileSpec) ([]byte, error) {
	if f.URI != "" {
		return fetchURI(ctx, f.URI)
	}
	if f.Encoding == "base64" {
		return decodeB64(f.Content)
	}
	return []byte(f.Content), nil
}

// agentSpec builds what the agent needs for one container.
func (d *Daemon) agentSpec(sb sandbox.Sandbox, c *ctrState, hostname string, rootfs [2]string, vols map[string]VolumeSpec, files map[string][]byte) (sandbox.ContainerSpec, error) {
	d.mu.Lock()
	r := c.rec
	d.mu.Unlock()
	src, err := sb.DiskSource(rootfs[0])
	if err != nil {
		return sandbox.ContainerSpec{}, fmt.Errorf("rootfs of %s: %w", r.Name, err)
	}
	cs := sandbox.ContainerSpec{ID: r.ID, Hostname: hostname, Rootfs: src, RootfsType: rootfs[1], ReadOnlyFS: r.Spec.ReadOnly,
		Sysctl:  r.Spec.Sysctl,
		Process: sandbox.Process{Args: r.Args, Env: r.Env, Cwd: r.Workdir, User: r.User, Tty: r.Spec.Tty, OpenStdin: true}}
	for _, v := range r.Spec.Volumes {
		vs, ok := vols[v.Volume]
		if !ok {
			return cs, specErr("bad parameter: container %s: volume %s does not exist in the pod", r.Name, v.Volume)
		}
		vsrc, err := sb.DiskSource(vs.Source)
		if err != nil {
			return cs, fmt.Errorf("volume %s: %w", v.Volume, err)
		}
		fstype := ""
		if vs.Format == "raw" || vs.Format == "qcow2" {
			fstype = vs.Fstype
			if fstype == "" {
				fstype = "ext4"
			}
		}
		cs.Mounts = append(cs.Mounts, sandbox.Mount{Source: vsrc, FSType: fstype, Dest: v.Path, ReadOnly: v.ReadOnly})
	}
	for _, f := range r.Spec.Files {
		content, ok := files[f.Filename]
		if !ok {
			return cs, specErr("bad parameter: container %s: file %s does not exist in the pod", r.Name, f.Filename)
		}
		mode := uint32(0o755)
		if f.Perm != "" {
			var m uint32
			fmt.Sscanf(f.Perm, "%o", &m)
			mode = m
		}
		cs.Files = append(cs.Files, sandbox.File{Path: f.Path, Content: content, Mode: mode, UID: atoiOr(f.User, 0), GID: atoiOr(f.Group, 0)})
	}
	return cs, nil
}

// addAndStart adds a container to the sandbox, starts the process, hands
// the agent's stdio to attachers waiting since before the start, and
// watches the process (log follower, exit).
func (d *Daemon) addAndStart(ctx context.Context, p *podState, c *ctrState, sb sandbox.Sandbox, cs sandbox.ContainerSpec, add bool) error {
	ag := sb.Agent()
	if add {
		if err := ag.AddContainer(ctx, cs); err != nil {
			return fmt.Errorf("add container %s: %w", c.rec.Name, err)
		}
		d.mu.Lock()
		c.rec.InSandbox = true
		d.saveCtr(c)
		d.mu.Unlock()
	}
	if err := ag.StartContainer(ctx, c.rec.ID); err != nil {
		return fmt.Errorf("start container %s: %w", c.rec.Name, err)
	}
	// Attachers that waited for the start get the agent's stdio now; the
	// agent replays a process's output from its first byte to every
	// attacher (sandbox.Agent contract), so nothing is lost.
	d.mu.Lock()
	waiters := c.waiters
	c.waiters = nil
	d.mu.Unlock()
	for _, w := range waiters {
		if w.ctx.Err() != nil {
			continue
		}
		st, err := ag.Attach(w.ctx, c.rec.ID, "", w.stdin)
		select {
		case w.ch <- attachResult{st, err}:
		case <-w.ctx.Done():
			if err == nil {
				closeStdio(st)
			}
		}
	}
	d.mu.Lock()
	c.rec.Phase, c.rec.Started, c.rec.Exited, c.rec.ExitCode = PhaseRunning, time.Now(), false, 0
	c.rec.Reason, c.rec.Message, c.rec.Finished = "", "", time.Time{}
	c.stopReq = false
	select {
	case <-c.exited:
		c.exited = make(chan struct{})
	default:
	}
	d.saveCtr(c)
	d.mu.Unlock()
	d.watchContainer(p, c, sb, false)
	return nil
}

func closeStdio(st sandbox.Stdio) {
	if st.Stdin != nil {
		st.Stdin.Close()
	}
	if st.Stdout != nil {
		st.Stdout.Close()
	}
	if st.Stderr != nil {
		st.Stderr.Close()
	}
}

func (d *Daemon) failWaiters(c *ctrState, err error) {
	for _, w := range c.waiters {
		select {
		case w.ch <- attachResult{err: err}:
		default:
		}
	}
	c.waiters = nil
}

// watchContainer follows the container's logs and waits for its exit.
func (d *Daemon) watchContainer(p *podState, c *ctrState, sb sandbox.Sandbox, reattached bool) {
	ag := sb.Agent()
	follow := make(chan struct{})
	d.mu.Lock()
	c.follow = follow
	lf := c.logs
	d.mu.Unlock()
	var after time.Time
	if lf != nil {
		lf.setLive(true)
		if reattached {
			after = lf.lastTime()
		}
	}
	fctx, fcancel := context.WithCancel(d.ctx)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		defer close(follow)
		if lf == nil {
			return
		}
		if err := lf.followAgent(fctx, ag, c.rec.ID, after); err != nil && d.ctx.Err() == nil {
			d.log.Warn("log follower ended", "container", c.rec.ID, "err", err)
		}
	}()
	go func() {
		defer d.wg.Done()
		defer fcancel()
		st, err := ag.Wait(d.ctx, c.rec.ID, "")
		if d.ctx.Err() != nil {
			return // daemon shutting down: the next daemon reattaches
		}
		// let the log follower drain what the process wrote
		select {
		case <-follow:
		case <-time.After(3 * time.Second):
		}
		d.containerExited(p, c, sb, st, err)
	}()
}

func (d *Daemon) containerExited(p *podState, c *ctrState, sb sandbox.Sandbox, st sandbox.ExitStatus, werr error) {
	d.mu.Lock()
	stopReq := c.stopReq
	d.mu.Unlock()
	if !stopReq && d.sandboxDying(sb, werr) {
		d.mu.Lock()
		stopping := p.stopping || p.rec.State == StateStopping
		d.mu.Unlock()
		if !stopping {
			return // the sandbox died under the process: watchSandbox records why
		}
	}
	d.mu.Lock()
	select {
	case <-c.exited:
		// already finished: the pod's sandbox died and failPodLocked
		// recorded why; the lost Wait has nothing to add
		d.mu.Unlock()
		return
	default:
	}
	now := time.Now()
	if werr != nil {
		c.rec.ExitCode, c.rec.Reason, c.rec.Message = 255, "Error", fmt.Sprintf("lost the process: %v", werr)
	} else {
		c.rec.ExitCode = st.Code
		c.rec.Reason = "Completed"
		if st.Code != 0 {
			c.rec.Reason = "Error"
		}
		if st.Signal != 0 {
			c.rec.Reason = fmt.Sprintf("Killed by signal %d", st.Signal)
		}
	}
	if !st.Finished.IsZero() {
		now = st.Finished
	}
	c.rec.Exited, c.rec.Finished = true, now
	c.rec.Phase = PhaseSucceeded
	if c.rec.ExitCode != 0 {
		c.rec.Phase = PhaseFailed
	}
	restart := false
	if !c.stopReq && !p.stopping && p.sb == sb && werr == nil {
		switch c.rec.Spec.RestartPolicy {
		case RestartAlways:
			restart = true
		case RestartOnFailure:
			restart = c.rec.ExitCode != 0
		}
	}
	if !restart && c.logs != nil {
		c.logs.setLive(false)
	}
	close(c.exited)
	d.saveCtr(c)
	code := c.rec.ExitCode
	d.mu.Unlock()
	d.log.Info("container exited", "container", c.rec.ID, "code", code, "restart", restart)
	// give attached clients a moment to drain the output
	drained := make(chan struct{})
	go func() { c.attached.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(3 * time.Second):
	}
	if restart {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.restartContainer(p, c, sb)
		}()
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.maybeFinishPod(p, sb)
	}()
}

func (d *Daemon) restartContainer(p *podState, c *ctrState, sb sandbox.Sandbox) {
	d.mu.Lock()
	n := c.rec.RestartCount
	d.mu.Unlock()
	delay := time.Duration(1<<min(n, 6)) * 100 * time.Millisecond
	select {
	case <-time.After(delay):
	case <-d.ctx.Done():
		return
	}
	p.op.Lock()
	defer p.op.Unlock()
	d.mu.Lock()
	if p.sb != sb || p.stopping || c.stopReq || d.ctrs[c.rec.ID] != c {
		if c.logs != nil {
			c.logs.setLive(false)
		}
		d.mu.Unlock()
		return
	}
	c.rec.RestartCount++
	count := c.rec.RestartCount
	spec := p.rec.Spec
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(d.ctx, 60*time.Second)
	defer cancel()
	err := d.reAdd(ctx, p, c, sb, spec)
	if err != nil {
		d.log.Error("restart container", "container", c.rec.ID, "err", err)
		d.mu.Lock()
		c.rec.Message = "restart failed: " + err.Error()
		if c.logs != nil {
			c.logs.setLive(false)
		}
		d.saveCtr(c)
		d.mu.Unlock()
		go d.maybeFinishPod(p, sb)
		return
	}
	d.log.Info("container restarted", "container", c.rec.ID, "count", count)
}

// reAdd removes the exited container from the sandbox and adds and starts
// it again (restart policy, /container/start of an exited container).
func (d *Daemon) reAdd(ctx context.Context, p *podState, c *ctrState, sb sandbox.Sandbox, spec PodSpec) error {
	ag := sb.Agent()
	d.mu.Lock()
	in := c.rec.InSandbox
	d.mu.Unlock()
	if in {
		if err := ag.RemoveContainer(ctx, c.rec.ID); err != nil {
			d.log.Warn("remove exited container from sandbox", "container", c.rec.ID, "err", err)
		}
		d.mu.Lock()
		c.rec.InSandbox = false
		d.mu.Unlock()
	}
	var path, fstype string
	var err error
	if d.img == nil {
		return &NotImplementedError{Msg: "no image store is available in this daemon"}
	}
	if d.drv.Name() == "kvm" {
		path, fstype, err = d.img.DiskImage(ctx, c.rec.ImageID)
	} else {
		path, err = d.img.RootfsDir(ctx, c.rec.ImageID)
	}
	if err != nil {
		return err
	}
	vols := map[string]VolumeSpec{}
	for _, v := range spec.Volumes {
		vs, err := d.prepareVolume(p.rec.ID, v)
		if err != nil {
			return err
		}
		vols[v.Name] = vs
	}
	files := map[string][]byte{}
	for _, f := range spec.Files {
		b, err := fileContent(ctx, f)
		if err != nil {
			return err
		}
		files[f.Name] = b
	}
	cs, err := d.agentSpec(sb, c, spec.Hostname, [2]string{path, fstype}, vols, files)
	if err != nil {
		return err
	}
	return d.addAndStart(ctx, p, c, sb, cs, true)
}

// maybeFinishPod stops the sandbox once no container runs or will restart.
func (d *Daemon) maybeFinishPod(p *podState, sb sandbox.Sandbox) {
	p.op.Lock()
	defer p.op.Unlock()
	d.mu.Lock()
	if p.sb != sb || p.rec.State != StateRunning {
		d.mu.Unlock()
		return
	}
	allOK := true
	for _, cid := range p.rec.Containers {
		c := d.ctrs[cid]
		if c == nil {
			continue
		}
		if !c.rec.Exited {
			if c.rec.Phase == PhaseRunning || c.rec.InSandbox {
				d.mu.Unlock()
				return
			}
			continue
		}
		if c.logs != nil && c.logs.isLive() {
			d.mu.Unlock() // restarting
			return
		}
		if c.rec.ExitCode != 0 {
			allOK = false
		}
	}
	d.mu.Unlock()
	d.log.Info("all containers exited; stopping sandbox", "pod", p.rec.ID)
	d.stopSandbox(p, sb)
	d.mu.Lock()
	p.rec.Phase, p.rec.Reason = "Succeeded", "Completed"
	if !allOK {
		p.rec.Phase, p.rec.Reason = "Failed", "ContainerFailed"
	}
	d.savePod(p)
	d.mu.Unlock()
}

// stopSandbox stops listeners and the sandbox; caller holds p.op.
func (d *Daemon) stopSandbox(p *podState, sb sandbox.Sandbox) {
	d.mu.Lock()
	p.rec.State = StateStopping
	fwd := p.fwd
	p.fwd = nil
	d.savePod(p)
	d.mu.Unlock()
	if fwd != nil {
		fwd.closeAll()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	err := sb.Stop(ctx)
	cancel()
	if err != nil {
		d.log.Warn("sandbox stop", "pod", p.rec.ID, "err", err)
	}
	d.mu.Lock()
	p.sb, p.rec.Handle, p.rec.SandboxKept = nil, nil, false
	p.rec.State, p.rec.Finished = StateStopped, time.Now()
	d.releaseLocked(p, "SandboxStopped", "the pod's sandbox stopped")
	d.savePod(p)
	d.mu.Unlock()
}

// releaseLocked records that the pod's containers and execs are out of its
// sandbox: what still ran is marked failed with reason/msg.
func (d *Daemon) releaseLocked(p *podState, reason, msg string) {
	for _, cid := range p.rec.Containers {
		if c := d.ctrs[cid]; c != nil {
			c.rec.InSandbox = false
			if c.rec.Phase == PhaseRunning {
				c.rec.Phase, c.rec.Exited, c.rec.ExitCode, c.rec.Finished = PhaseFailed, true, 255, time.Now()
				c.rec.Reason, c.rec.Message = reason, msg
				select {
				case <-c.exited:
				default:
					close(c.exited)
				}
			}
			if c.logs != nil {
				c.logs.setLive(false)
			}
			d.saveCtr(c)
		}
	}
	for _, e := range d.execs {
		if e.rec.PodID == p.rec.ID && !e.rec.Exited {
			e.rec.Exited, e.rec.ExitCode, e.rec.Reason = true, 255, msg
			close(e.done)
			d.saveExec(e)
		}
	}
}

// idleSandbox empties a running pod's sandbox (its containers removed from
// the agent, port forwarders closed) and keeps it for the next start.
func (d *Daemon) idleSandbox(ctx context.Context, p *podState, sb sandbox.Sandbox) {
	d.mu.Lock()
	fwd := p.fwd
	p.fwd = nil
	cids := append([]string(nil), p.rec.Containers...)
	d.mu.Unlock()
	if fwd != nil {
		fwd.closeAll()
	}
	for _, cid := range cids {
		if err := sb.Agent().RemoveContainer(ctx, cid); err != nil {
			d.log.Warn("stop (keep sandbox): remove container from the agent", "container", cid, "err", err)
		}
	}
	d.mu.Lock()
	p.rec.State, p.rec.Finished, p.rec.SandboxKept = StateStopped, time.Now(), true
	d.releaseLocked(p, "Stopped", "the pod was stopped")
	d.savePod(p)
	d.mu.Unlock()
	d.log.Info("pod stopped; its sandbox is kept", "pod", p.rec.ID, "sandbox", sb.ID())
}

// watchSandbox marks the pod failed if its sandbox dies on its own.
func (d *Daemon) watchSandbox(p *podState, sb sandbox.Sandbox) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		select {
		case <-sb.Done():
		case <-d.ctx.Done():
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if p.sb == sb && p.rec.SandboxKept && p.rec.State == StateStopped {
			// the idle sandbox of a stopped pod went away: nothing to fail
			d.log.Warn("the kept sandbox of a stopped pod died", "pod", p.rec.ID, "err", sb.Err())
			p.sb, p.rec.Handle, p.rec.SandboxKept = nil, nil, false
			d.savePod(p)
			return
		}
		if p.sb != sb || p.rec.State == StateStopping || p.stopping {
			return
		}
		msg, reason := "sandbox exited", "SandboxDied"
		err := sb.Err()
		if err != nil {
			msg = err.Error()
		}
		var stopped *sandbox.ExitError
		if errors.As(err, &stopped) {
			reason = stopped.Reason
		}
		d.log.Error("sandbox died", "pod", p.rec.ID, "reason", reason, "err", msg)
		if p.fwd != nil {
			p.fwd.closeAll()
			p.fwd = nil
		}
		running := false
		for _, cid := range p.rec.Containers {
			if c := d.ctrs[cid]; c != nil && c.rec.Phase == PhaseRunning {
				running = true
			}
		}
		d.failPodLocked(p, reason, msg)
		if reason == sandbox.ExitPoweroff && !running {
			// the guest powered off after its work was done: not a failure
			p.rec.Phase = "Succeeded"
			d.savePod(p)
		}
	}()
}

// sandboxDying reports whether a process's end was the sandbox dying: its
// Done is closed, or the wait lost the agent (werr) and Done closes within
// a grace period (the VM process is reaped a moment after its agent's
// connection drops).
func (d *Daemon) sandboxDying(sb sandbox.Sandbox, werr error) bool {
	select {
	case <-sb.Done():
		return true
	default:
	}
	if werr == nil {
		return false
	}
	select {
	case <-sb.Done():
		return true
	case <-time.After(2 * time.Second):
		return false
	case <-d.ctx.Done():
		return false
	}
}

// StopPod stops every container (stop signal, then SIGKILL after the stop
// timeout) and the sandbox. The pod and its records stay.
func (d *Daemon) StopPod(ctx context.Context, ref string) error {
	return d.withPod(ref, func(p *podState) error { return d.stopPodLocked(ctx, p, false) })
}

// StopAll stops every pod that has a sandbox (running, paused, or stopped
// with a kept VM), all at once, and returns how many it stopped (hyperd
// --stop-pods-on-exit at shutdown). Their records stay.
func (d *Daemon) StopAll(ctx context.Context) int {
	d.mu.Lock()
	var ids []string
	for id, p := range d.pods {
		if p.sb != nil {
			ids = append(ids, id)
		}
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.StopPod(ctx, id); err != nil {
				d.log.Warn("stop at shutdown", "pod", id, "err", err)
			}
		}()
	}
	wg.Wait()
	return len(ids)
}

// StopPodKeepSandbox stops the pod's containers but keeps its sandbox (the
// VM, for kvm) running without them, so that the next start reuses it
// (/pod/stop?stopVM=no).
func (d *Daemon) StopPodKeepSandbox(ctx context.Context, ref string) error {
	return d.withPod(ref, func(p *podState) error { return d.stopPodLocked(ctx, p, true) })
}

func (d *Daemon) stopPodLocked(ctx context.Context, p *podState, keepSandbox bool) error {
	d.mu.Lock()
	sb := p.sb
	if sb != nil && p.rec.SandboxKept && p.rec.State == StateStopped {
		d.mu.Unlock()
		if !keepSandbox { // stopVM=yes on a stopped pod whose VM idles
			d.stopSandbox(p, sb)
		}
		return nil
	}
	if sb == nil || p.rec.State != StateRunning && p.rec.State != StatePaused {
		st := p.rec.State
		d.mu.Unlock()
		return conflict("conflict: pod %s is not running (%s)", p.rec.ID, st)
	}
	p.stopping = true
	var ctrs []*ctrState
	for _, cid := range p.rec.Containers {
		if c := d.ctrs[cid]; c != nil {
			c.stopReq = true
			if c.rec.Phase == PhaseRunning {
				ctrs = append(ctrs, c)
			}
		}
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range ctrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.stopProcess(ctx, sb, c)
		}()
	}
	wg.Wait()
	if keepSandbox {
		d.idleSandbox(ctx, p, sb)
	} else {
		d.stopSandbox(p, sb)
	}
	d.mu.Lock()
	allOK := true
	for _, cid := range p.rec.Containers {
		if c := d.ctrs[cid]; c != nil && c.rec.Exited && c.rec.ExitCode != 0 {
			allOK = false
		}
	}
	p.rec.Phase, p.rec.Reason, p.rec.Message = "Failed", "Stopped", "stopped by request"
	if allOK {
		p.rec.Phase = "Succeeded"
	}
	d.savePod(p)
	d.mu.Unlock()
	d.log.Info("pod stopped", "pod", p.rec.ID)
	return nil
}

// stopProcess sends the stop signal, waits the stop timeout, then SIGKILL.
func (d *Daemon) stopProcess(ctx context.Context, sb sandbox.Sandbox, c *ctrState) {
	d.mu.Lock()
	sig, exited := c.rec.StopSignal, c.exited
	d.mu.Unlock()
	if sig == 0 {
		sig = 15
	}
	ag := sb.Agent()
	if err := ag.Signal(ctx, c.rec.ID, "", sig); err != nil {
		d.log.Warn("stop signal", "container", c.rec.ID, "err", err)
	}
	select {
	case <-exited:
		return
	case <-time.After(d.cfg.StopTimeout):
	case <-ctx.Done():
	}
	ag.Signal(context.Background(), c.rec.ID, "", 9)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
}

// RemovePod stops the pod if needed and deletes it with its containers,
// execs, logs and volumes created by the daemon.
func (d *Daemon) RemovePod(ctx context.Context, ref string) error {
	return d.withPod(ref, func(p *podState) error { return d.removePodLocked(ctx, p) })
}

func (d *Daemon) removePodLocked(ctx context.Context, p *podState) error {
	d.mu.Lock()
	running := p.sb != nil
	d.mu.Unlock()
	if running {
		if err := d.stopPodLocked(ctx, p, false); err != nil {
			if _, ok := err.(*ConflictError); !ok {
				return err
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if p.sb != nil {
		return conflict("conflict: pod %s is still running", p.rec.ID)
	}
	var cids, eids []string
	for _, cid := range p.rec.Containers {
		if c := d.ctrs[cid]; c != nil {
			if c.logs != nil {
				c.logs.close()
				os.Remove(c.logs.path)
			}
			delete(d.ctrs, cid)
			cids = append(cids, cid)
		}
	}
	for id, e := range d.execs {
		if e.rec.PodID == p.rec.ID {
			delete(d.execs, id)
			eids = append(eids, id)
		}
	}
	d.st.del(bContainers, cids...)
	d.st.del(bLogs, cids...)
	d.st.del(bExecs, eids...)
	d.st.del(bPods, p.rec.ID)
	delete(d.pods, p.rec.ID)
	os.RemoveAll(d.podDir(p.rec.ID))
	d.log.Info("pod removed", "pod", p.rec.ID)
	return nil
}

// SetLabels adds labels; with override, existing keys are replaced,
// otherwise changing an existing key is a conflict.
func (d *Daemon) SetLabels(ref string, labels map[string]string, override bool) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.findPod(ref)
	if err != nil {
		return "", err
	}
	if p.rec.Labels == nil {
		p.rec.Labels = map[string]string{}
	}
	if !override {
		for k, v := range labels {
			if old, ok := p.rec.Labels[k]; ok && old != v {
				return "", conflict("conflict: label %s already set on pod %s (use override=true)", k, p.rec.ID)
			}
		}
	}
	for k, v := range labels {
		p.rec.Labels[k] = v
	}
	d.savePod(p)
	return p.rec.ID, nil
}

// KillPod sends a signal to one container of the pod, or to all of them.
func (d *Daemon) KillPod(ctx context.Context, ref, container string, sig int) error {
	d.mu.Lock()
	p, err := d.findPod(ref)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	sb := p.sb
	var targets []*ctrState
	for _, cid := range p.rec.Containers {
		c := d.ctrs[cid]
		if c == nil {
			continue
		}
		if container == "" || c.rec.ID == container || c.rec.Name == container {
			targets = append(targets, c)
		}
	}
	d.mu.Unlock()
	if container != "" && len(targets) == 0 {
		return notFound("container %s not found in pod %s", container, ref)
	}
	if sb == nil {
		return conflict("conflict: pod %s is not running", p.rec.ID)
	}
	var errs []error
	for _, c := range targets {
		d.mu.Lock()
		running := c.rec.Phase == PhaseRunning
		if sig == 9 || sig == 15 {
			c.stopReq = true
		}
		d.mu.Unlock()
		if !running {
			continue
		}
		if err := sb.Agent().Signal(ctx, c.rec.ID, "", sig); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// --- port mappings ---

// PortMappings lists a pod's port mappings.
func (d *Daemon) PortMappings(ref string) ([]PortMapping, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.findPod(ref)
	if err != nil {
		return nil, err
	}
	return append([]PortMapping{}, p.rec.PortMappings...), nil
}

// AddPortMappings adds rules; on a running pod the host ports are opened now.
func (d *Daemon) AddPortMappings(ref string, pms []PortMapping) error {
	var pairs []PortPair
	for i := range pms {
		pp, err := ExpandPortMapping(pms[i])
		if err != nil {
			return err
		}
		pms[i] = normPM(pms[i])
		pairs = append(pairs, pp...)
	}
	d.mu.Lock()
	p, err := d.findPod(ref)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	p.op.Lock()
	defer p.op.Unlock()
	d.mu.Lock()
	all := append(append([]PortMapping{}, p.rec.PortMappings...), pms...)
	if err := d.checkPortConflicts(p.rec.ID, all); err != nil {
		d.mu.Unlock()
		return err
	}
	fwd := p.fwd
	d.mu.Unlock()
	if fwd != nil {
		if err := fwd.add(pairs); err != nil {
			return err
		}
	}
	d.mu.Lock()
	p.rec.PortMappings = all
	d.savePod(p)
	d.mu.Unlock()
	return nil
}

// DeletePortMappings removes rules (matched by host port range + protocol).
func (d *Daemon) DeletePortMappings(ref string, pms []PortMapping) error {
	del := map[string]bool{}
	var pairs []PortPair
	for _, pm := range pms {
		pp, err := ExpandPortMapping(pm)
		if err != nil {
			return err
		}
		for _, x := range pp {
			del[pairKey(x)] = true
		}
		pairs = append(pairs, pp...)
	}
	d.mu.Lock()
	p, err := d.findPod(ref)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	p.op.Lock()
	defer p.op.Unlock()
	d.mu.Lock()
	var keep []PortMapping
	found := map[string]bool{}
	for _, pm := range p.rec.PortMappings {
		pp, _ := ExpandPortMapping(pm)
		hit := false
		for _, x := range pp {
			if del[pairKey(x)] {
				hit = true
				found[pairKey(x)] = true
			}
		}
		if !hit {
			keep = append(keep, pm)
		}
	}
	for k := range del {
		if !found[k] {
			d.mu.Unlock()
			return notFound("port mapping for host port %s not found in pod %s", k, p.rec.ID)
		}
	}
	var closePairs []PortPair
	for _, pm := range p.rec.PortMappings {
		pp, _ := ExpandPortMapping(pm)
		for _, x := range pp {
			if found[pairKey(x)] {
				closePairs = append(closePairs, pp...)
				break
			}
		}
	}
	p.rec.PortMappings = keep
	fwd := p.fwd
	d.savePod(p)
	d.mu.Unlock()
	if fwd != nil {
		fwd.remove(closePairs)
	}
	return nil
}

// --- lists ---

// ListPods returns "<podID>:<podName>:<vmID>:<status>" entries.
func (d *Daemon) ListPods(podFilter, vmFilter string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, p := range d.filteredPods(podFilter, vmFilter) {
		out = append(out, strings.Join([]string{p.rec.ID, p.rec.Name, p.rec.VMID, listStatus(p.rec.State)}, ":"))
	}
	return out
}

func listStatus(state string) string {
	switch state {
	case StateStopped:
		return "failed"
	case "":
		return "pending"
	}
	return state
}

// filteredPods are the pods (by creation) matching the /list filters: pod
// id or name, VM id; "" matches all. Caller holds d.mu.
func (d *Daemon) filteredPods(podFilter, vmFilter string) []*podState {
	var out []*podState
	for _, p := range d.sortedPods() {
		if podFilter != "" && p.rec.ID != podFilter && p.rec.Name != podFilter {
			continue
		}
		if vmFilter != "" && p.rec.VMID != vmFilter {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (d *Daemon) sortedPods() []*podState {
	ps := make([]*podState, 0, len(d.pods))
	for _, p := range d.pods {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool {
		if !ps[i].rec.Created.Equal(ps[j].rec.Created) {
			return ps[i].rec.Created.Before(ps[j].rec.Created)
		}
		return ps[i].rec.ID < ps[j].rec.ID
	})
	return ps
}

// ListContainers returns "<cid>:<name>:<podID>:<status>" entries.
func (d *Daemon) ListContainers(podFilter, vmFilter string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, p := range d.filteredPods(podFilter, vmFilter) {
		for _, cid := range p.rec.Containers {
			if c := d.ctrs[cid]; c != nil {
				out = append(out, strings.Join([]string{c.rec.ID, c.rec.Name, p.rec.ID, c.rec.Phase}, ":"))
			}
		}
	}
	return out
}

// ListVMs returns "<vmID>:<podID>:<status>" for pods with a sandbox.
func (d *Daemon) ListVMs(podFilter, vmFilter string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, p := range d.filteredPods(podFilter, vmFilter) {
		if p.sb == nil {
			continue
		}
		st := "associated"
		if p.rec.State == StatePaused {
			st = "paused"
		}
		out = append(out, strings.Join([]string{p.rec.VMID, p.rec.ID, st}, ":"))
	}
	return out
}

// Counts for /info.
func (d *Daemon) Counts() (pods, containers, running int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.pods {
		if p.rec.State == StateRunning || p.rec.State == StatePaused {
			running++
		}
	}
	return len(d.pods), len(d.ctrs), running
}

// Pause is not offered by the sandbox contract.
func (d *Daemon) Pause(ref string, pause bool) error {
	d.mu.Lock()
	_, err := d.findPod(ref)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return &NotImplementedError{Msg: fmt.Sprintf("pause/unpause is not supported by the %s sandbox driver", d.drv.Name())}
}
