// This file owns what the CRI server (package cri) needs of the core beyond
// the REST API's view: pods of type "sandbox" (a Kubernetes pod sandbox
// keeps its sandbox while its containers come and go) and signals to execs.

package pod

import (
	"context"
)

// PodTypeSandbox is the pod type ("type" in podArgs) of a pod that keeps
// its sandbox running, from StartPod to StopPod or RemovePod, whatever its
// containers do: the CRI's PodSandbox, whose containers the kubelet
// creates, starts and removes one by one and restarts by creating new ones.
// A pod of any other type stops its sandbox once no container runs or
// will restart (maybeFinishPod).
const PodTypeSandbox = "sandbox"

// keepsSandbox: the pod's sandbox outlives its containers.
func (r *PodRecord) keepsSandbox() bool { return r.Spec.Type == PodTypeSandbox }

// SignalExec sends sig to a running exec's process (the CRI's ExecSync
// kills an exec past its timeout).
func (d *Daemon) SignalExec(ctx context.Context, ref, execID string, sig int) error {
	d.mu.Lock()
	e, err := d.findExec(ref, execID)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	p := d.pods[e.rec.PodID]
	if p == nil || p.sb == nil || e.rec.Exited {
		d.mu.Unlock()
		return conflict("conflict: exec %s is not running", execID)
	}
	sb, cid := p.sb, e.rec.ContainerID
	d.mu.Unlock()
	return sb.Agent().Signal(ctx, cid, execID, sig)
}
