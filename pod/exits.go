// This file owns a container's run in its sandbox: adding and starting it,
// following its log and waiting for its exit, the restart policy, and
// finishing the pod once no container runs or will restart.

package pod

import (
	"context"
	"fmt"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

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
		n, err := lf.followAgent(fctx, ag, c.rec.ID, after)
		if err != nil && d.ctx.Err() == nil {
			d.log.Warn("log follower ended", "container", c.rec.ID, "records", n, "err", err)
		} else {
			d.log.Debug("log follower ended", "container", c.rec.ID, "records", n)
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
	rootfs, err := d.imageRootfs(ctx, c)
	if err != nil {
		return err
	}
	vols, err := d.prepareVolumes(p.rec.ID, spec.Volumes)
	if err != nil {
		return err
	}
	files, _, err := fileContents(ctx, spec.Files)
	if err != nil {
		return err
	}
	cs, err := d.agentSpec(sb, c, spec.Hostname, rootfs, vols, files)
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
	if p.sb != sb || p.rec.State != StateRunning || p.rec.keepsSandbox() {
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
	d.stopSandbox(p, sb, func() (podPhase, string, string) {
		if !allOK {
			return podFailed, "ContainerFailed", p.rec.Message
		}
		return podSucceeded, "Completed", p.rec.Message
	})
}
