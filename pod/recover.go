// This file owns restart recovery: loading every record from the store and
// reattaching (or failing) the sandboxes of the pods a previous daemon left
// running, in the background and in parallel (the pods are marked while
// they reattach; reattaching.go is their placeholder sandbox).

package pod

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

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
		lf, err := d.openLogs(r.ID, d.pods[r.PodID].rec.Spec.Log, logIdx[r.ID])
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
	var todo []*podState
	for _, p := range d.pods {
		if d.restorePod(p) {
			todo = append(todo, p)
		}
	}
	d.reattachAll(todo)
	d.log.Info("state restored", "pods", len(d.pods), "containers", len(d.ctrs), "execs", len(d.execs), "reattaching", len(todo))
	return nil
}

// reattachParallel bounds the reattaches under way at once.
const reattachParallel = 8

// reattachTimeout bounds one pod's reattach (a silent guest's agent).
const reattachTimeout = 15 * time.Second

// ReasonReattaching is a pod's status reason while the daemon reattaches its
// sandbox after a restart.
const ReasonReattaching = "Reattaching"

// restorePod settles a pod that needs no sandbox (or whose sandbox cannot
// exist) and reports whether its sandbox must be reattached.
func (d *Daemon) restorePod(p *podState) (reattach bool) {
	switch p.rec.State {
	case StatePending, StateStopped:
		if p.rec.Handle == nil {
			return false
		}
	}
	if p.rec.Handle == nil {
		d.failPodLocked(p, "SandboxLost", "the daemon restarted while the pod was starting, before its sandbox existed")
		return false
	}
	return true
}

// reattachAll reattaches the pods' sandboxes in the background, at most
// reattachParallel at once, so New returns (and the API is served) at
// once. Until its reattach ends a pod is marked: its status reason is
// Reattaching, its operation lock is held (start, stop, remove... wait for
// the outcome), and its sandbox is a reattaching placeholder whose agent
// calls wait for the outcome too, bounded by their context; then they go to
// the reattached sandbox, or fail with a 409 saying the sandbox was lost.
// Waiting rather than failing at once: the wait is bounded by
// reattachTimeout, clients (hyperctl, Docker's) do not retry a 503, and the
// answer after the wait is the true one.
func (d *Daemon) reattachAll(pods []*podState) {
	sem := make(chan struct{}, reattachParallel)
	for _, p := range pods {
		p.op.Lock() // released by reattachPod
		h := *p.rec.Handle
		ph := newReattaching(p.rec.ID, h)
		p.sb = ph
		reason, msg := p.rec.Reason, p.rec.Message
		p.rec.Reason, p.rec.Message = ReasonReattaching, "the daemon restarted; reattaching the pod's sandbox"
		if wasLive(p.rec) {
			// its port mappings listen at once; their connections wait for
			// the reattach like every agent call
			p.fwd = newForwarder(ph, d.log)
			for _, pm := range p.rec.PortMappings {
				pairs, _ := ExpandPortMapping(pm)
				if err := p.fwd.add(pairs); err != nil {
					d.log.Warn("restore: port mapping", "pod", p.rec.ID, "err", err)
				}
			}
		}
		d.wg.Add(1)
		d.reattaching.Add(1)
		go func() {
			defer d.wg.Done()
			defer d.reattaching.Done()
			defer p.op.Unlock()
			sem <- struct{}{}
			defer func() { <-sem }()
			sb, err := d.reattachPod(p, h, reason, msg)
			ph.resolve(sb, err)
		}()
	}
}

// reattachPod reattaches one pod's sandbox and settles the pod: running
// again with its watchers, or failed; a pod that was not running has its
// sandbox stopped. It returns the sandbox the pod keeps, or why it has
// none. Caller holds p.op.
func (d *Daemon) reattachPod(p *podState, h sandbox.Handle, reason, msg string) (sandbox.Sandbox, error) {
	// not d.ctx: a driver kills a sandbox whose reattach was cancelled, and
	// a daemon that stops must leave the sandboxes to the next one
	ctx, cancel := context.WithTimeout(context.Background(), reattachTimeout)
	sb, err := d.drv.Reattach(ctx, h)
	cancel()
	d.mu.Lock()
	if d.ctx.Err() != nil {
		// the daemon is closing: touch nothing, the next one reattaches
		d.mu.Unlock()
		if err == nil {
			sb.Agent().Close()
		}
		return nil, errors.New("the daemon is shutting down")
	}
	p.rec.Reason, p.rec.Message = reason, msg
	if p.rec.sandboxIdles() {
		// a stopped pod's idle sandbox (stopVM=no): adopt it, or forget it
		defer d.mu.Unlock()
		if err != nil {
			d.log.Warn("restore: the kept sandbox of a stopped pod is gone", "pod", p.rec.ID, "err", err)
			forgetSandbox(p)
			d.savePod(p)
			return nil, conflict("conflict: pod %s is stopped; its kept sandbox was lost at the daemon restart: %v", p.rec.ID, err)
		}
		p.sb = sb
		d.watchSandbox(p, sb)
		d.savePod(p)
		return sb, nil
	}
	if err != nil {
		defer d.mu.Unlock()
		if p.fwd != nil {
			p.fwd.closeAll()
			p.fwd = nil
		}
		d.log.Warn("restore: sandbox gone, pod marked failed", "pod", p.rec.ID, "err", err)
		d.failPodLocked(p, "SandboxLost", fmt.Sprintf("reattach after daemon restart failed: %v", err))
		return nil, conflict("conflict: pod %s is not running: its sandbox was lost at the daemon restart: %v", p.rec.ID, err)
	}
	if !wasLive(p.rec) {
		// it was being started or stopped: finish the stop.
		p.sb = nil
		d.mu.Unlock()
		d.log.Info("restore: stopping sandbox of a pod that was not running", "pod", p.rec.ID)
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		sb.Stop(sctx)
		cancel()
		d.mu.Lock()
		defer d.mu.Unlock()
		d.failPodLocked(p, "Stopped", "the daemon restarted while the pod was being started or stopped")
		return nil, conflict("conflict: pod %s is not running: the daemon restarted while it was being started or stopped", p.rec.ID)
	}
	p.sb = sb
	d.log.Info("restore: sandbox reattached", "pod", p.rec.ID, "driver", sb.Handle().Driver)
	var ctrs []*ctrState
	for _, cid := range p.rec.Containers {
		if c := d.ctrs[cid]; c != nil && c.rec.InSandbox && c.rec.Phase == PhaseRunning {
			ctrs = append(ctrs, c)
		}
	}
	var execs []*execState
	for _, e := range d.execs {
		if e.rec.PodID == p.rec.ID && e.rec.Started && !e.rec.Exited {
			execs = append(execs, e)
		}
	}
	d.mu.Unlock()
	for _, c := range ctrs {
		d.watchContainer(p, c, sb, true)
	}
	for _, e := range execs {
		d.watchExec(sb, e)
	}
	d.watchSandbox(p, sb)
	return sb, nil
}

// wasLive: the pod was running (or paused) when the previous daemon left,
// its sandbox is to be adopted as it is; else it was being started or
// stopped (or idles, stopped with its sandbox kept).
func wasLive(r PodRecord) bool {
	switch r.State {
	case StatePending, StateStopped, StateStopping:
		return false
	}
	return true
}

// WaitReattached waits until every reattach New started has ended (its pod
// settled, its watchers started), or ctx ends.
func (d *Daemon) WaitReattached(ctx context.Context) error {
	done := make(chan struct{})
	go func() { d.reattaching.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
