// This file owns the pod lifecycle: create, start (in a new or a kept
// sandbox), stop (with or without keeping the sandbox), remove, kill and
// pause of pods.

package pod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

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

// CreatePod validates and records a pod (state pending). It returns the pod id.
func (d *Daemon) CreatePod(spec *PodSpec) (string, error) {
	if err := spec.Normalize(); err != nil {
		return "", err
	}
	if len(spec.Interfaces) > 0 && !d.cfg.Networking {
		return "", specErr("bad parameter: interfaces: pod networking is off in this daemon (hyperd --network none)")
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
		Created: time.Now(), Labels: copyMap(spec.Labels),
		PortMappings: pms, Driver: d.drv.Name(), Isolation: d.drv.Isolation()}}
	d.setPhase(p, podPending, "", "")
	for _, c := range ctrs {
		lf, err := d.openLogs(c.rec.ID, spec.Log, LogIndex{})
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
	d.setPhase(p, podPending, "", "")
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
		DNS: spec.DNS, DNSSearch: spec.DNSSearch, DNSOptions: spec.DNSOptions, StateDir: filepath.Join(d.podDir(p.rec.ID), "sandbox")}
	if len(spec.Interfaces) > 0 {
		r := spec.Interfaces[0].request()
		cfg.Interface = &r
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fail(err)
	}
	rootfs := map[string][2]string{} // container id -> host path, fstype
	for _, c := range ctrs {
		fs, err := d.imageRootfs(ctx, c)
		if _, ok := err.(*NotImplementedError); ok {
			return fail(err)
		}
		if err != nil {
			return fail(fmt.Errorf("rootfs of image %s for container %s: %w", c.rec.Image, c.rec.Name, err))
		}
		rootfs[c.rec.ID] = fs
		if !hasDisk(cfg.Disks, fs[0]) {
			cfg.Disks = append(cfg.Disks, sandbox.Disk{HostPath: fs[0], ReadOnly: true})
		}
	}
	volPaths, err := d.prepareVolumes(p.rec.ID, spec.Volumes)
	if err != nil {
		return fail(err)
	}
	for _, v := range spec.Volumes {
		cfg.Disks = append(cfg.Disks, sandbox.Disk{HostPath: volPaths[v.Name].Source})
	}
	files, failed, err := fileContents(ctx, spec.Files)
	if err != nil {
		return fail(specErr("bad parameter: file %s: %v", failed, err))
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
		var ce *sandbox.ConfigError
		if errors.As(err, &ce) {
			// the request's fault: a 400, as a bad spec is
			return fail(specErr("create %s sandbox: %s", d.drv.Name(), ce.Msg))
		}
		return fail(fmt.Errorf("create %s sandbox: %w", d.drv.Name(), err))
	}
	h := sb.Handle()
	d.mu.Lock()
	p.sb, p.rec.Handle = sb, &h
	p.rec.Boot = h.Data["boot"]
	p.rec.Started = time.Now()
	p.rec.Finished = time.Time{}
	d.savePod(p)
	d.mu.Unlock()
	d.log.Info("sandbox created", "pod", p.rec.ID, "driver", d.drv.Name(), "sandbox", sb.ID())
	return d.startContainers(ctx, p, sb, ctrs, spec, rootfs, volPaths, files, fail, true)
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
	if !d.setPhase(p, podRunning, "", "") {
		// the sandbox died under the start (watchSandbox ended the pod)
		err := fmt.Errorf("pod %s ended while it started: %s: %s", p.rec.ID, p.rec.Reason, p.rec.Message)
		d.mu.Unlock()
		fwd.closeAll()
		return err
	}
	p.fwd = fwd
	d.savePod(p)
	d.mu.Unlock()
	if watch {
		d.watchSandbox(p, sb)
	}
	d.log.Info("pod started", "pod", p.rec.ID)
	return nil
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
	parallel(ids, func(id string) {
		if err := d.StopPod(ctx, id); err != nil {
			d.log.Warn("stop at shutdown", "pod", id, "err", err)
		}
	})
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
	if sb != nil && p.rec.sandboxIdles() {
		d.mu.Unlock()
		if !keepSandbox { // stopVM=yes on a stopped pod whose VM idles
			d.stopSandbox(p, sb, func() (podPhase, string, string) {
				return outcome(p.rec.Phase), p.rec.Reason, p.rec.Message // the stop's that kept it
			})
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
	parallel(ctrs, func(c *ctrState) { d.stopProcess(ctx, sb, c) })
	end := func() (podPhase, string, string) {
		to := podSucceeded
		for _, cid := range p.rec.Containers {
			if c := d.ctrs[cid]; c != nil && c.rec.Exited && c.rec.ExitCode != 0 {
				to = podFailed
			}
		}
		return to, "Stopped", "stopped by request"
	}
	if keepSandbox {
		d.idleSandbox(ctx, p, sb, end)
	} else {
		d.stopSandbox(p, sb, end)
	}
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
				c.logs.remove()
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

// parallel runs f on every x at once and waits for all of them.
func parallel[T any](xs []T, f func(T)) {
	var wg sync.WaitGroup
	for _, x := range xs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(x)
		}()
	}
	wg.Wait()
}
