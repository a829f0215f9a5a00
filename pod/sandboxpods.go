// This file owns what the CRI server (package cri) needs of the core beyond
// the REST API's view: pods of type "sandbox" (a Kubernetes pod sandbox
// keeps its sandbox while its containers come and go), signals to execs,
// and images given to a running sandbox.

package pod

import (
	"context"
	"fmt"
	"net"

	"github.com/hyperhq/hyperd-go/sandbox"
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

// PrepareContainer makes a container of a running pod startable in the
// pod's current sandbox: its image's root file system and the sources of
// its volumes are given to the sandbox if the sandbox was created without
// them (a CRI sandbox starts with no container, and the kubelet adds them
// one by one), and the sandbox's handle, which now lists them, is saved. A sandbox that cannot take a disk
// while it runs (sandbox.DiskAdder) makes this a NotImplementedError.
func (d *Daemon) PrepareContainer(ctx context.Context, ref string) error {
	return d.withCtr(ref, func(c *ctrState, p *podState) error {
		d.mu.Lock()
		sb := p.sb
		d.mu.Unlock()
		if sb == nil {
			return conflict("conflict: pod %s is not running", p.rec.ID)
		}
		fs, err := d.imageRootfs(ctx, c)
		if err != nil {
			return err
		}
		disks := []sandbox.Disk{{HostPath: fs[0], ReadOnly: true}}
		d.mu.Lock()
		refs, specVols := c.rec.Spec.Volumes, p.rec.Spec.Volumes
		d.mu.Unlock()
		if len(refs) > 0 {
			vols, err := d.prepareVolumes(p.rec.ID, specVols)
			if err != nil {
				return err
			}
			for _, ref := range refs {
				if v, ok := vols[ref.Volume]; ok {
					disks = append(disks, sandbox.Disk{HostPath: v.Source})
				}
			}
		}
		added := false
		for _, dk := range disks {
			if _, err := sb.DiskSource(dk.HostPath); err == nil {
				continue
			}
			a, ok := sb.(sandbox.DiskAdder)
			if !ok {
				return &NotImplementedError{Msg: fmt.Sprintf("the %s driver cannot give %s (of container %s, image %s) to the running sandbox of pod %s (no disk hotplug): a container with an image or volume the pod did not start with cannot start in it", d.drv.Name(), dk.HostPath, c.rec.Name, c.rec.Image, p.rec.ID)}
			}
			if err := a.AddDisk(ctx, dk); err != nil {
				return fmt.Errorf("container %s: %w", c.rec.Name, err)
			}
			added = true
		}
		if !added {
			return nil
		}
		h := sb.Handle()
		d.mu.Lock()
		if p.sb == sb {
			p.rec.Handle = &h
			d.savePod(p)
		}
		d.mu.Unlock()
		return nil
	})
}

// DialPod connects to a TCP port inside a running pod's network namespace
// (through the agent: the CRI's PortForward).
func (d *Daemon) DialPod(ctx context.Context, ref string, port int) (net.Conn, error) {
	d.mu.Lock()
	p, err := d.findPod(ref)
	var sb sandbox.Sandbox
	if err == nil {
		sb = p.sb
	}
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if sb == nil {
		return nil, conflict("conflict: pod %s is not running", ref)
	}
	return sb.Agent().Dial(ctx, "tcp", port)
}

// AddVolumes adds volumes to a pod's spec (the CRI's container mounts,
// known only when each container is created); their names must be new in
// the pod. A running sandbox is given their sources when a container that
// mounts them starts (PrepareContainer).
func (d *Daemon) AddVolumes(podRef string, vols []VolumeSpec) error {
	return d.withPod(podRef, func(p *podState) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		have := map[string]bool{}
		for _, v := range p.rec.Spec.Volumes {
			have[v.Name] = true
		}
		for _, v := range vols {
			if err := checkName("volume name", v.Name, maxIDLen); err != nil {
				return err
			}
			if have[v.Name] {
				return conflict("conflict: pod %s already has a volume %s", p.rec.ID, v.Name)
			}
			switch v.Format {
			case "", "vfs":
			default:
				return specErr("bad parameter: volume %q: format %q: only host directories (vfs) can be added to a pod", v.Name, v.Format)
			}
			have[v.Name] = true
		}
		p.rec.Spec.Volumes = append(p.rec.Spec.Volumes, vols...)
		d.savePod(p)
		return nil
	})
}

// RemoveVolumes drops volumes from a pod's spec (those AddVolumes added
// for a container that is gone: a later start prepares every volume of the
// pod, and a host directory removed meanwhile would fail it). Unknown
// names are ignored.
func (d *Daemon) RemoveVolumes(podRef string, names []string) error {
	return d.withPod(podRef, func(p *podState) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		drop := map[string]bool{}
		for _, n := range names {
			drop[n] = true
		}
		kept := p.rec.Spec.Volumes[:0:0]
		for _, v := range p.rec.Spec.Volumes {
			if !drop[v.Name] {
				kept = append(kept, v)
			}
		}
		p.rec.Spec.Volumes = kept
		d.savePod(p)
		return nil
	})
}
