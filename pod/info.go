// This file owns the info documents: pod and container info, and pod stats.

package pod

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// Info documents, JSON keys as the original hyperd's (lowerCamel).

type PodInfo struct {
	PodID      string        `json:"podID"`
	Kind       string        `json:"kind"`
	APIVersion string        `json:"apiVersion"`
	VM         string        `json:"vm"`
	CreatedAt  int64         `json:"createdAt"`
	PodName    string        `json:"podName"`
	Spec       PodInfoSpec   `json:"spec"`
	Status     PodInfoStatus `json:"status"`
	// Extensions: the sandbox driver, so nobody mistakes namespaces for a VM.
	Driver    string `json:"driver"`
	Isolation string `json:"isolation"`
	// Boot says how the pod's (last) VM started: "cold" (booted its
	// kernel) or "template <name>" (restored from a VM template); empty
	// for drivers without VMs and pods never started.
	Boot string `json:"boot,omitempty"`
}

type PodInfoSpec struct {
	Volumes      []VolumeSpec      `json:"volumes"`
	Containers   []ContainerDetail `json:"containers"`
	Labels       map[string]string `json:"labels"`
	Vcpu         int               `json:"vcpu"`
	Memory       int               `json:"memory"`
	PortMappings []PortMapping     `json:"portmappings"`
}

type PodInfoStatus struct {
	Phase           string            `json:"phase"`
	Message         string            `json:"message"`
	Reason          string            `json:"reason"`
	HostIP          string            `json:"hostIP"`
	PodIP           []string          `json:"podIP"`
	StartTime       string            `json:"startTime"`
	ContainerStatus []ContainerStatus `json:"containerStatus"`
	FinishTime      string            `json:"finishTime"`
}

type ContainerDetail struct {
	Name            string            `json:"name"`
	ContainerID     string            `json:"containerID"`
	Image           string            `json:"image"`
	ImageID         string            `json:"imageID"`
	WorkingDir      string            `json:"workingDir"`
	User            string            `json:"user"`
	Tty             bool              `json:"tty"`
	Commands        []string          `json:"commands"`
	Args            []string          `json:"args"`
	Ports           []PortMapping     `json:"ports"`
	Env             []EnvVar          `json:"env"`
	VolumeMounts    []VolumeMount     `json:"volumeMounts"`
	Labels          map[string]string `json:"labels"`
	RestartPolicy   string            `json:"restartPolicy"`
	RestartCount    int               `json:"restartCount"`
	StopSignal      int               `json:"stopSignal"`
	ReadOnlyRootfs  bool              `json:"readOnly"`
	ResolvedCommand []string          `json:"-"`
}

type VolumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
	ReadOnly  bool   `json:"readOnly"`
}

type ContainerStatus struct {
	Name        string       `json:"name"`
	ContainerID string       `json:"containerID"`
	Phase       string       `json:"phase"`
	Waiting     WaitingState `json:"waiting"`
	Running     RunningState `json:"running"`
	Terminated  TermState    `json:"terminated"`
}

type WaitingState struct {
	Reason string `json:"reason"`
}

type RunningState struct {
	StartedAt string `json:"startedAt"`
}

type TermState struct {
	ExitCode   int    `json:"exitCode"`
	Reason     string `json:"reason"`
	Message    string `json:"message"`
	StartedAt  string `json:"startedAt"`
	FinishedAt string `json:"finishedAt"`
}

type ContainerInfo struct {
	Container ContainerDetail `json:"container"`
	CreatedAt int64           `json:"createdAt"`
	PodID     string          `json:"podID"`
	Status    ContainerStatus `json:"status"`
}

func rfc(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// caller holds d.mu
func (d *Daemon) detail(c *ctrState) ContainerDetail {
	r := c.rec
	cd := ContainerDetail{Name: r.Name, ContainerID: r.ID, Image: r.Image, ImageID: r.ImageID, WorkingDir: r.Workdir,
		User: r.User, Tty: r.Spec.Tty, Ports: r.Spec.Ports, Labels: r.Spec.Labels, RestartPolicy: r.Spec.RestartPolicy,
		RestartCount: r.RestartCount, StopSignal: r.StopSignal, ReadOnlyRootfs: r.Spec.ReadOnly,
		Env: []EnvVar{}, VolumeMounts: []VolumeMount{}, Commands: []string{}, Args: []string{}}
	if len(r.Args) > 0 {
		cd.Commands = r.Args[:1]
		cd.Args = append([]string{}, r.Args[1:]...)
	}
	for _, e := range r.Env {
		k, v, _ := cut(e, '=')
		cd.Env = append(cd.Env, EnvVar{Env: k, Value: v})
	}
	for _, v := range r.Spec.Volumes {
		cd.VolumeMounts = append(cd.VolumeMounts, VolumeMount{Name: v.Volume, MountPath: v.Path, ReadOnly: v.ReadOnly})
	}
	if cd.Ports == nil {
		cd.Ports = []PortMapping{}
	}
	if cd.Labels == nil {
		cd.Labels = map[string]string{}
	}
	return cd
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// caller holds d.mu
func (d *Daemon) status(c *ctrState) ContainerStatus {
	r := c.rec
	cs := ContainerStatus{Name: r.Name, ContainerID: r.ID, Phase: r.Phase}
	switch {
	case r.Phase == PhaseRunning:
		cs.Running.StartedAt = rfc(r.Started)
	case r.Exited:
		cs.Terminated = TermState{ExitCode: r.ExitCode, Reason: r.Reason, Message: r.Message, StartedAt: rfc(r.Started), FinishedAt: rfc(r.Finished)}
	default:
		cs.Waiting.Reason = "Pending"
		if r.Message != "" {
			cs.Waiting.Reason = r.Message
		}
	}
	return cs
}

// PodInfo returns the original's pod info document.
func (d *Daemon) PodInfo(ref string) (*PodInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.findPod(ref)
	if err != nil {
		return nil, err
	}
	r := p.rec
	vm := ""
	if p.sb != nil {
		vm = r.VMID
	}
	pi := &PodInfo{PodID: r.ID, Kind: "Pod", APIVersion: "v1", VM: vm, CreatedAt: r.Created.Unix(), PodName: r.Name,
		Spec: PodInfoSpec{Volumes: r.Spec.Volumes, Labels: copyMap(r.Labels), Vcpu: r.Spec.Resource.VCPU, Memory: r.Spec.Resource.Memory,
			PortMappings: r.PortMappings, Containers: []ContainerDetail{}},
		Status: PodInfoStatus{Phase: r.Phase, Message: r.Message, Reason: r.Reason, PodIP: []string{}, StartTime: rfc(r.Started),
			FinishTime: rfc(r.Finished), ContainerStatus: []ContainerStatus{}},
		Driver: r.Driver, Isolation: r.Isolation}
	pi.Boot = r.Boot
	if pi.Spec.Volumes == nil {
		pi.Spec.Volumes = []VolumeSpec{}
	}
	if pi.Spec.PortMappings == nil {
		pi.Spec.PortMappings = []PortMapping{}
	}
	if p.sb != nil {
		pi.Status.HostIP = "127.0.0.1"
		if n, ok := p.sb.(sandbox.Networked); ok && n.Network() != nil {
			for _, i := range n.Network().Interfaces {
				for _, a := range i.Addrs {
					ip, _, _ := strings.Cut(a, "/")
					pi.Status.PodIP = append(pi.Status.PodIP, ip)
				}
			}
		}
	}
	for _, cid := range r.Containers {
		if c := d.ctrs[cid]; c != nil {
			pi.Spec.Containers = append(pi.Spec.Containers, d.detail(c))
			pi.Status.ContainerStatus = append(pi.Status.ContainerStatus, d.status(c))
		}
	}
	return pi, nil
}

// ContainerInfo returns the original's container info document.
func (d *Daemon) ContainerInfo(ref string) (*ContainerInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.findCtr(ref)
	if err != nil {
		return nil, err
	}
	return &ContainerInfo{Container: d.detail(c), CreatedAt: c.rec.Created.Unix(), PodID: c.rec.PodID, Status: d.status(c)}, nil
}

// PodStats in the original's snake_case shape, plus the sandbox's host cost.
type PodStats struct {
	CPU            CPUStats         `json:"cpu"`
	Memory         MemStats         `json:"memory"`
	Network        NetStats         `json:"network"`
	Block          map[string]any   `json:"block"`
	Timestamp      time.Time        `json:"timestamp"`
	ContainerStats []ContainerStats `json:"container_stats"`
	Sandbox        SandboxStats     `json:"sandbox"`
}

type CPUStats struct {
	Usage CPUUsage `json:"usage"`
}

type CPUUsage struct {
	Total       uint64   `json:"total"`
	PerCPUUsage []uint64 `json:"per_cpu_usage"`
	User        uint64   `json:"user"`
	System      uint64   `json:"system"`
}

type MemStats struct {
	Usage      uint64 `json:"usage"`
	WorkingSet uint64 `json:"working_set"`
	Limit      uint64 `json:"limit"`
}

type NetStats struct {
	Interfaces []NetInterface `json:"interfaces"`
}

type NetInterface struct {
	Name      string `json:"name"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	RxErrors  uint64 `json:"rx_errors"`
	TxErrors  uint64 `json:"tx_errors"`
	RxDropped uint64 `json:"rx_dropped"`
	TxDropped uint64 `json:"tx_dropped"`
}

type ContainerStats struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	CPU    CPUStats `json:"cpu"`
	Memory MemStats `json:"memory"`
	Pids   uint64   `json:"pids"`
}

type SandboxStats struct {
	Driver     string  `json:"driver"`
	RSSBytes   uint64  `json:"rss_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// Stats asks the agent for per-container cgroup figures.
func (d *Daemon) Stats(ctx context.Context, ref string) (*PodStats, error) {
	d.mu.Lock()
	p, err := d.findPod(ref)
	if err != nil {
		d.mu.Unlock()
		return nil, err
	}
	sb := p.sb
	names := map[string]string{}
	for _, cid := range p.rec.Containers {
		if c := d.ctrs[cid]; c != nil {
			names[cid] = c.rec.Name
		}
	}
	d.mu.Unlock()
	if sb == nil {
		return nil, conflict("conflict: pod %s is not running", ref)
	}
	ps, err := sb.Agent().Stats(ctx)
	if err != nil {
		return nil, err
	}
	out := &PodStats{Timestamp: ps.Time, Block: map[string]any{}, Network: NetStats{Interfaces: []NetInterface{}}, ContainerStats: []ContainerStats{}}
	if n, ok := sb.(sandbox.Networked); ok {
		cs, err := n.NetCounters()
		if err != nil {
			return nil, fmt.Errorf("pod network counters: %w", err)
		}
		for _, c := range cs {
			out.Network.Interfaces = append(out.Network.Interfaces, NetInterface{Name: c.Name, RxBytes: c.RxBytes, TxBytes: c.TxBytes,
				RxPackets: c.RxPackets, TxPackets: c.TxPackets, RxErrors: c.RxErrors, TxErrors: c.TxErrors, RxDropped: c.RxDropped, TxDropped: c.TxDropped})
		}
	}
	if out.Timestamp.IsZero() {
		out.Timestamp = time.Now()
	}
	for _, c := range ps.Containers {
		cs := ContainerStats{ID: c.ID, Name: names[c.ID], Pids: c.Pids,
			CPU:    CPUStats{Usage: CPUUsage{Total: c.CPUUsageNS, User: c.CPUUserNS, System: c.CPUSystemNS, PerCPUUsage: []uint64{}}},
			Memory: MemStats{Usage: c.MemoryUsage, WorkingSet: c.WorkingSet, Limit: c.MemoryLimit}}
		out.ContainerStats = append(out.ContainerStats, cs)
		out.CPU.Usage.Total += c.CPUUsageNS
		out.CPU.Usage.User += c.CPUUserNS
		out.CPU.Usage.System += c.CPUSystemNS
		out.Memory.Usage += c.MemoryUsage
		out.Memory.WorkingSet += c.WorkingSet
	}
	out.CPU.Usage.PerCPUUsage = []uint64{}
	out.Memory.Limit = ps.MemTotal
	if hs, err := sb.HostStats(); err == nil {
		out.Sandbox = SandboxStats{Driver: d.drv.Name(), RSSBytes: hs.RSSBytes, CPUSeconds: hs.CPUSeconds}
	}
	return out, nil
}
