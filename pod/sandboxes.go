// This file owns the pods' sandboxes: watching them die, keeping one idle
// for the next start (stopVM=no), stopping them, and releasing (or failing)
// what ran in them.

package pod

import (
	"context"
	"errors"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

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
	forgetSandbox(p)
	d.savePod(p)
	d.mu.Unlock()
	return nil
}

// podEnd says how a pod whose sandbox was stopped (or emptied) ends: its
// phase (succeeded or failed), reason and message. It is called with d.mu
// held, after what still ran in the sandbox was released.
type podEnd func() (to podPhase, reason, msg string)

// stopSandbox stops listeners and the sandbox, and the pod ends as end
// says; caller holds p.op.
func (d *Daemon) stopSandbox(p *podState, sb sandbox.Sandbox, end podEnd) {
	d.mu.Lock()
	d.setPhase(p, podStopping, p.rec.Reason, p.rec.Message)
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
	forgetSandbox(p)
	p.rec.Finished = time.Now()
	d.releaseLocked(p, "SandboxStopped", "the pod's sandbox stopped", false)
	to, reason, msg := end()
	d.setPhase(p, to, reason, msg)
	d.savePod(p)
	d.mu.Unlock()
}

// forgetSandbox: the pod has no sandbox any more, kept or not. Caller holds
// d.mu.
func forgetSandbox(p *podState) { p.sb, p.rec.Handle, p.rec.SandboxKept = nil, nil, false }

// idleSandbox empties a running pod's sandbox (its containers removed from
// the agent, port forwarders closed) and keeps it for the next start; the
// pod ends as end says.
func (d *Daemon) idleSandbox(ctx context.Context, p *podState, sb sandbox.Sandbox, end podEnd) {
	d.mu.Lock()
	fwd := p.fwd
	p.fwd = nil
	cids := append([]string(nil), p.rec.Containers...)
	var follows []chan struct{}
	for _, cid := range cids {
		if c := d.ctrs[cid]; c != nil && c.follow != nil {
			follows = append(follows, c.follow)
		}
	}
	d.mu.Unlock()
	if fwd != nil {
		fwd.closeAll()
	}
	// Removing a container from the agent deletes its output: first let
	// each log follower copy what is left of it (the processes have
	// exited, so the followers reach its end), as a container's exit does.
	drain := time.After(3 * time.Second)
	for _, f := range follows {
		select {
		case <-f:
		case <-drain:
		}
	}
	for _, cid := range cids {
		if err := sb.Agent().RemoveContainer(ctx, cid); err != nil {
			d.log.Warn("stop (keep sandbox): remove container from the agent", "container", cid, "err", err)
		}
	}
	d.mu.Lock()
	p.rec.Finished, p.rec.SandboxKept = time.Now(), true
	d.releaseLocked(p, "Stopped", "the pod was stopped", false)
	to, reason, msg := end()
	d.setPhase(p, to, reason, msg)
	d.savePod(p)
	d.mu.Unlock()
	d.log.Info("pod stopped; its sandbox is kept", "pod", p.rec.ID, "sandbox", sb.ID())
}

// releaseLocked records that the pod's containers and execs are out of its
// sandbox: the containers that still ran are marked failed with reason and
// msg, and the execs that had not exited exited. lost: the sandbox was lost
// under them (failPodLocked); containers started but still pending fail
// too, and the execs' reason names the reason as well as msg. Caller holds
// d.mu.
func (d *Daemon) releaseLocked(p *podState, reason, msg string, lost bool) {
	now := time.Now()
	for _, cid := range p.rec.Containers {
		c := d.ctrs[cid]
		if c == nil {
			continue
		}
		c.rec.InSandbox = false
		if c.rec.Phase == PhaseRunning || (lost && c.rec.Phase == PhasePending && !c.rec.Started.IsZero()) {
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
	execReason := msg
	if lost {
		execReason = reason + ": " + msg
	}
	for _, e := range d.execs {
		if e.rec.PodID == p.rec.ID && !e.rec.Exited {
			e.rec.Exited, e.rec.ExitCode, e.rec.Reason = true, 255, execReason
			close(e.done)
			d.saveExec(e)
		}
	}
}

// failPodLocked marks a pod whose sandbox is lost failed, and its
// unfinished containers and execs failed. Caller holds d.mu (or is
// single-threaded in restore).
func (d *Daemon) failPodLocked(p *podState, reason, msg string) {
	d.endPodLocked(p, podFailed, reason, msg)
}

// endPodLocked is failPodLocked ending the pod as to: failed, or succeeded
// for a guest that powered off after its work was done.
func (d *Daemon) endPodLocked(p *podState, to podPhase, reason, msg string) {
	d.setPhase(p, to, reason, msg)
	p.rec.Finished = time.Now()
	p.rec.Handle = nil
	p.sb = nil
	d.releaseLocked(p, reason, msg, true)
	d.savePod(p)
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
		if p.sb == sb && p.rec.sandboxIdles() {
			// the idle sandbox of a stopped pod went away: nothing to fail
			d.log.Warn("the kept sandbox of a stopped pod died", "pod", p.rec.ID, "err", sb.Err())
			forgetSandbox(p)
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
		to := podFailed
		if reason == sandbox.ExitPoweroff {
			// the guest powered off: not a failure if its work was done
			to = podSucceeded
			for _, cid := range p.rec.Containers {
				if c := d.ctrs[cid]; c != nil && c.rec.Phase == PhaseRunning {
					to = podFailed
				}
			}
		}
		d.endPodLocked(p, to, reason, msg)
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
