// This file owns restart recovery: loading every record from the store and
// reattaching (or failing) the sandboxes of the pods a previous daemon left
// running.

package pod

import (
	"context"
	"fmt"
	"time"
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
	if p.rec.sandboxIdles() {
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
