// This file owns the container and exec operations: create, start, stop,
// kill, remove, rename, logs, exit codes, attach, resize, exec and commit.

package pod

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// CreateContainer adds a container to an existing pod (pending until started).
func (d *Daemon) CreateContainer(podRef string, spec *ContainerSpec) (string, error) {
	d.mu.Lock()
	p, err := d.findPod(podRef)
	d.mu.Unlock()
	if err != nil {
		return "", err
	}
	p.op.Lock()
	defer p.op.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pods[p.rec.ID] != p {
		return "", notFound("pod %s not found", podRef)
	}
	vols, files := map[string]bool{}, map[string]bool{}
	for _, v := range p.rec.Spec.Volumes {
		vols[v.Name] = true
	}
	for _, f := range p.rec.Spec.Files {
		files[f.Name] = true
	}
	if p.rec.Spec.Tty {
		spec.Tty = true
	}
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = p.rec.Spec.RestartPolicy
	}
	if err := spec.normalize(p.rec.ID, len(p.rec.Containers), vols, files); err != nil {
		return "", err
	}
	if d.nameTaken(spec.Name) {
		return "", conflict("conflict: container name %s already in use", spec.Name)
	}
	if spec.ID != "" {
		if _, ok := d.ctrs[spec.ID]; ok {
			return "", conflict("conflict: container id %s already in use", spec.ID)
		}
	}
	if err := d.checkPortConflicts(p.rec.ID, append(append([]PortMapping{}, p.rec.PortMappings...), spec.Ports...)); err != nil {
		return "", err
	}
	c, err := d.newContainer(p.rec.ID, *spec)
	if err != nil {
		return "", err
	}
	lf, err := d.openLogs(c.rec.ID, p.rec.Spec.Log, LogIndex{})
	if err != nil {
		return "", err
	}
	c.logs = lf
	lf.setLive(true)
	d.ctrs[c.rec.ID] = c
	p.rec.Containers = append(p.rec.Containers, c.rec.ID)
	p.rec.Spec.Containers = append(p.rec.Spec.Containers, c.rec.Spec)
	p.rec.PortMappings = append(p.rec.PortMappings, spec.Ports...)
	d.saveCtr(c)
	d.savePod(p)
	return c.rec.ID, nil
}

func (d *Daemon) ctrAndPod(ref string) (*ctrState, *podState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.findCtr(ref)
	if err != nil {
		return nil, nil, err
	}
	p := d.pods[c.rec.PodID]
	if p == nil {
		return nil, nil, notFound("pod of container %s not found", ref)
	}
	return c, p, nil
}

// withCtr runs f on the container ref names and its pod, holding the pod's
// operation lock (see withPod). The container is resolved before that lock
// is taken, and a remove of the container or its pod (which holds the lock
// while it talks to the sandbox) may finish in between: f only runs on the
// container and pod still registered (the same objects: a container re-created
// under the same name meanwhile is another one). Without this check a start
// queued behind a remove brought the removed container back: added and
// started in the sandbox and its record saved again.
func (d *Daemon) withCtr(ref string, f func(c *ctrState, p *podState) error) error {
	c, p, err := d.ctrAndPod(ref)
	if err != nil {
		return err
	}
	d.hookAt("ctr-resolved", c.rec.ID)
	p.op.Lock()
	defer p.op.Unlock()
	d.mu.Lock()
	current := d.ctrs[c.rec.ID] == c && d.pods[p.rec.ID] == p
	d.mu.Unlock()
	if !current {
		return notFound("container %s not found (it was removed while this request waited for its pod)", ref)
	}
	return f(c, p)
}

// StartContainer starts a created (or exited) container in its running pod.
// If the pod is not running, it is started (which starts all its containers).
func (d *Daemon) StartContainer(ctx context.Context, ref string) error {
	return d.withCtr(ref, func(c *ctrState, p *podState) error {
		d.mu.Lock()
		sb := p.sb
		phase := c.rec.Phase
		spec := p.rec.Spec
		d.mu.Unlock()
		if phase == PhaseRunning {
			return conflict("conflict: container %s is already running", c.rec.ID)
		}
		if sb == nil {
			return d.startPodLocked(ctx, p)
		}
		if c.logs != nil {
			c.logs.setLive(true)
		}
		if err := d.reAdd(ctx, p, c, sb, spec); err != nil {
			if c.logs != nil {
				c.logs.setLive(false)
			}
			return err
		}
		return nil
	})
}

// runningCtr is the container ref names and its pod's sandbox, if the
// container runs (a conflict if not). stop: a stop of the container is
// requested (its exit then does not restart it), running or not.
func (d *Daemon) runningCtr(ref string, stop bool) (*ctrState, sandbox.Sandbox, error) {
	c, p, err := d.ctrAndPod(ref)
	if err != nil {
		return nil, nil, err
	}
	d.mu.Lock()
	sb := p.sb
	running := c.rec.Phase == PhaseRunning
	if stop {
		c.stopReq = true
	}
	d.mu.Unlock()
	if sb == nil || !running {
		return nil, nil, conflict("conflict: container %s is not running", c.rec.ID)
	}
	return c, sb, nil
}

// StopContainer stops one container (stop signal, SIGKILL after the timeout).
func (d *Daemon) StopContainer(ctx context.Context, ref string) error {
	c, sb, err := d.runningCtr(ref, true)
	if err != nil {
		return err
	}
	d.stopProcess(ctx, sb, c)
	return nil
}

// KillContainer signals a container's main process.
func (d *Daemon) KillContainer(ctx context.Context, ref string, sig int) error {
	c, sb, err := d.runningCtr(ref, sig == 9 || sig == 15)
	if err != nil {
		return err
	}
	return sb.Agent().Signal(ctx, c.rec.ID, "", sig)
}

// RemoveContainer removes a container that is not running from its pod.
func (d *Daemon) RemoveContainer(ctx context.Context, ref string) error {
	return d.withCtr(ref, func(c *ctrState, p *podState) error {
		d.mu.Lock()
		if c.rec.Phase == PhaseRunning {
			d.mu.Unlock()
			return conflict("conflict: container %s is running; stop it first", c.rec.ID)
		}
		sb, in := p.sb, c.rec.InSandbox
		d.mu.Unlock()
		if sb != nil && in {
			if err := sb.Agent().RemoveContainer(ctx, c.rec.ID); err != nil {
				d.log.Warn("remove container from sandbox", "container", c.rec.ID, "err", err)
			}
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		delete(d.ctrs, c.rec.ID)
		var keep []string
		var keepSpec []ContainerSpec
		for i, cid := range p.rec.Containers {
			if cid != c.rec.ID {
				keep = append(keep, cid)
				if i < len(p.rec.Spec.Containers) {
					keepSpec = append(keepSpec, p.rec.Spec.Containers[i])
				}
			}
		}
		p.rec.Containers = keep
		if len(p.rec.Spec.Containers) == len(keep)+1 {
			p.rec.Spec.Containers = keepSpec
		}
		var eids []string
		for id, e := range d.execs {
			if e.rec.ContainerID == c.rec.ID {
				delete(d.execs, id)
				eids = append(eids, id)
			}
		}
		if c.logs != nil {
			c.logs.remove()
		}
		d.st.del(bExecs, eids...)
		d.st.del(bContainers, c.rec.ID)
		d.st.del(bLogs, c.rec.ID)
		d.savePod(p)
		return nil
	})
}

// RenameContainer changes a container's name.
func (d *Daemon) RenameContainer(oldName, newName string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.findCtr(oldName)
	if err != nil {
		return "", err
	}
	newName = strings.TrimPrefix(newName, "/")
	if err := checkName("container name", newName, maxNameLen); err != nil {
		return "", err
	}
	if c.rec.Name == newName {
		return c.rec.ID, nil
	}
	if d.nameTaken(newName) {
		return "", conflict("conflict: container name %s already in use", newName)
	}
	c.rec.Name = newName
	c.rec.Spec.Name = newName
	if p := d.pods[c.rec.PodID]; p != nil {
		for i, cid := range p.rec.Containers {
			if cid == c.rec.ID && i < len(p.rec.Spec.Containers) {
				p.rec.Spec.Containers[i].Name = newName
			}
		}
		d.savePod(p)
	}
	d.saveCtr(c)
	return c.rec.ID, nil
}

// ContainerTty reports whether a container (or exec) has a tty.
func (d *Daemon) ContainerTty(ref, execID string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if execID != "" {
		e, err := d.findExec(ref, execID)
		if err != nil {
			return false, err
		}
		return e.rec.Tty, nil
	}
	c, err := d.findCtr(ref)
	if err != nil {
		return false, err
	}
	return c.rec.Spec.Tty, nil
}

// LogOptions select persisted output.
type LogOptions struct {
	Stdout, Stderr bool
	Follow         bool
	Tail           int // <0 all
	Since          time.Time
}

// Logs calls fn for every persisted record of the container (and, with
// Follow, for new ones until the container exits or ctx ends).
func (d *Daemon) Logs(ctx context.Context, ref string, opt LogOptions, fn func(LogEntry) error) error {
	d.mu.Lock()
	c, err := d.findCtr(ref)
	var lf *logFile
	if err == nil {
		lf = c.logs
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if lf == nil {
		return fmt.Errorf("container %s has no log", ref)
	}
	return lf.read(ctx, opt.Stdout, opt.Stderr, opt.Tail, opt.Since, opt.Follow, fn)
}

// ExitCode blocks until the container (or exec) exits and returns its code.
func (d *Daemon) ExitCode(ctx context.Context, ref, execID string) (int, error) {
	d.mu.Lock()
	var ch chan struct{}
	if execID != "" {
		e, err := d.findExec(ref, execID)
		if err != nil {
			d.mu.Unlock()
			return 0, err
		}
		ch = e.done
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		return e.rec.ExitCode, nil
	}
	c, err := d.findCtr(ref)
	if err != nil {
		d.mu.Unlock()
		return 0, err
	}
	ch = c.exited
	d.mu.Unlock()
	for {
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		d.mu.Lock()
		if c.rec.Exited && (c.logs == nil || !c.logs.isLive()) {
			code := c.rec.ExitCode
			d.mu.Unlock()
			return code, nil
		}
		// restarting: wait for the next run's exit
		ch = c.exited
		d.mu.Unlock()
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Attach opens a container's (execID == "") stdio. On a container that has
// not started yet it waits until the pod starts it, attaching before the
// process runs so no output is lost. release must be called when the
// caller finished copying the streams.
func (d *Daemon) Attach(ctx context.Context, ref, execID string, stdin bool) (st sandbox.Stdio, tty bool, release func(), err error) {
	d.mu.Lock()
	c, err := d.findCtr(ref)
	if err != nil {
		d.mu.Unlock()
		return st, false, nil, err
	}
	p := d.pods[c.rec.PodID]
	if execID != "" {
		e, err := d.findExec(ref, execID)
		if err != nil {
			d.mu.Unlock()
			return st, false, nil, err
		}
		sb := p.sb
		d.mu.Unlock()
		if sb == nil || e.rec.Exited {
			return st, false, nil, conflict("conflict: exec %s is not running", execID)
		}
		st, err = sb.Agent().Attach(ctx, c.rec.ID, execID, stdin)
		return st, e.rec.Tty, func() {}, err
	}
	tty = c.rec.Spec.Tty
	if p.sb != nil && c.rec.InSandbox {
		sb := p.sb
		c.attached.Add(1)
		d.mu.Unlock()
		st, err = sb.Agent().Attach(ctx, c.rec.ID, "", stdin)
		if err != nil {
			c.attached.Done()
			return st, tty, nil, err
		}
		return st, tty, c.attached.Done, nil
	}
	if c.rec.Phase != PhasePending && c.rec.Exited && p.rec.State == StateStopped {
		d.mu.Unlock()
		return st, tty, nil, conflict("conflict: container %s is not running (its pod is stopped)", c.rec.ID)
	}
	w := &attachWaiter{ctx: ctx, stdin: stdin, ch: make(chan attachResult)}
	c.waiters = append(c.waiters, w)
	c.attached.Add(1)
	d.mu.Unlock()
	select {
	case r := <-w.ch:
		if r.err != nil {
			c.attached.Done()
			return st, tty, nil, r.err
		}
		return r.stdio, tty, c.attached.Done, nil
	case <-ctx.Done():
		// the client went: no record of it stays behind
		d.mu.Lock()
		c.waiters = slices.DeleteFunc(c.waiters, func(x *attachWaiter) bool { return x == w })
		d.mu.Unlock()
		c.attached.Done()
		return st, tty, nil, ctx.Err()
	}
}

// Resize changes the tty size of a container or exec.
func (d *Daemon) Resize(ctx context.Context, ref, execID string, w, h int) error {
	c, p, err := d.ctrAndPod(ref)
	if err != nil {
		return err
	}
	d.mu.Lock()
	sb := p.sb
	if execID != "" {
		if _, err := d.findExec(ref, execID); err != nil {
			d.mu.Unlock()
			return err
		}
	}
	d.mu.Unlock()
	if sb == nil {
		return conflict("conflict: pod %s is not running", p.rec.ID)
	}
	return sb.Agent().Resize(ctx, c.rec.ID, execID, w, h)
}

// ExecCreate records an exec in a running container.
func (d *Daemon) ExecCreate(ref string, cmd []string, tty bool) (string, error) {
	if len(cmd) == 0 {
		return "", specErr("bad parameter: exec needs a command")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.findCtr(ref)
	if err != nil {
		return "", err
	}
	if c.rec.Phase != PhaseRunning {
		return "", conflict("conflict: container %s is not running", c.rec.ID)
	}
	e := &execState{rec: ExecRecord{ID: "exec-" + RandomLetters(10), ContainerID: c.rec.ID, PodID: c.rec.PodID, Cmd: cmd, Tty: tty, Created: time.Now()}, done: make(chan struct{})}
	d.execs[e.rec.ID] = e
	d.saveExec(e)
	return e.rec.ID, nil
}

// ExecStart starts the exec and returns its attached stdio.
func (d *Daemon) ExecStart(ctx context.Context, ref, execID string) (sandbox.Stdio, bool, error) {
	d.mu.Lock()
	e, err := d.findExec(ref, execID)
	if err != nil {
		d.mu.Unlock()
		return sandbox.Stdio{}, false, err
	}
	c := d.ctrs[e.rec.ContainerID]
	p := d.pods[e.rec.PodID]
	if c == nil || p == nil || p.sb == nil || c.rec.Phase != PhaseRunning {
		d.mu.Unlock()
		return sandbox.Stdio{}, false, conflict("conflict: container of exec %s is not running", execID)
	}
	if e.rec.Started {
		d.mu.Unlock()
		return sandbox.Stdio{}, false, conflict("conflict: exec %s was already started", execID)
	}
	e.rec.Started = true
	d.saveExec(e)
	sb := p.sb
	proc := sandbox.Process{Args: e.rec.Cmd, Env: c.rec.Env, Cwd: c.rec.Workdir, User: c.rec.User, Tty: e.rec.Tty, OpenStdin: true}
	d.mu.Unlock()
	ag := sb.Agent()
	if err := ag.Exec(ctx, c.rec.ID, execID, proc); err != nil {
		d.mu.Lock()
		e.rec.Exited, e.rec.ExitCode, e.rec.Reason = true, 126, err.Error()
		close(e.done)
		d.saveExec(e)
		d.mu.Unlock()
		return sandbox.Stdio{}, false, err
	}
	st, err := ag.Attach(ctx, c.rec.ID, execID, true)
	d.watchExec(sb, e)
	return st, e.rec.Tty, err
}

func (d *Daemon) watchExec(sb sandbox.Sandbox, e *execState) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		st, err := sb.Agent().Wait(d.ctx, e.rec.ContainerID, e.rec.ID)
		if d.ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if e.rec.Exited {
			return
		}
		e.rec.Exited, e.rec.ExitCode = true, st.Code
		if err != nil {
			e.rec.ExitCode, e.rec.Reason = 255, err.Error()
		}
		close(e.done)
		d.saveExec(e)
	}()
}

// Commit streams the container's changes from the agent into a new image.
func (d *Daemon) Commit(ctx context.Context, ref string, opt CommitOptions) (string, error) {
	c, p, err := d.ctrAndPod(ref)
	if err != nil {
		return "", err
	}
	if d.img == nil {
		return "", errNoImageStore()
	}
	d.mu.Lock()
	sb, in, imageID := p.sb, c.rec.InSandbox, c.rec.ImageID
	d.mu.Unlock()
	if sb == nil || !in {
		return "", conflict("conflict: container %s has no live sandbox to commit from (its pod is not running)", c.rec.ID)
	}
	rc, err := sb.Agent().Commit(ctx, c.rec.ID)
	if err != nil {
		return "", fmt.Errorf("commit %s: %w", c.rec.ID, err)
	}
	defer rc.Close()
	return d.img.Commit(ctx, imageID, rc, opt)
}
