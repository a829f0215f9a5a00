// This file owns the stats calls: ContainerStats, ListContainerStats,
// PodSandboxStats and ListPodSandboxStats, from the core's pod stats (the
// agent's cgroup figures per container, the pod's network counters), and
// UpdateContainerResources, which says why it cannot be done.

package cri

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cpuSamples remembers the last CPU sample of each container and sandbox,
// for usage_nano_cores (the rate between two samples).
type cpuSamples struct {
	mu   sync.Mutex
	last map[string]cpuSample
}

type cpuSample struct {
	at    time.Time
	usage uint64
}

// rate returns the nanocores used since the previous sample of id (nil
// for the first sample) and records this one.
func (c *cpuSamples) rate(id string, at time.Time, usage uint64) *runtimeapi.UInt64Value {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[string]cpuSample{}
	}
	prev, ok := c.last[id]
	c.last[id] = cpuSample{at, usage}
	dt := at.Sub(prev.at)
	if !ok || dt <= 0 || usage < prev.usage {
		return nil
	}
	return &runtimeapi.UInt64Value{Value: uint64(float64(usage-prev.usage) / dt.Seconds())}
}

// forget drops the samples of a removed container or sandbox.
func (c *cpuSamples) forget(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.last, id)
	}
}

func u64(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }

// podStats is the core's stats of a running pod (nil when it is not).
func (s *Server) podStats(ctx context.Context, podID string) *pod.PodStats {
	ps, err := s.core.Stats(ctx, podID)
	if err != nil {
		return nil
	}
	return ps
}

// containerStats are c's figures in ps (only attributes when c has none:
// not running, or its pod is not).
func (s *Server) containerStats(c *container, ps *pod.PodStats) *runtimeapi.ContainerStats {
	out := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{Id: c.id(), Metadata: c.metadata(),
		Labels: userLabels(c.info.Container.Labels), Annotations: c.meta.Annotations}}
	if ps == nil {
		return out
	}
	for _, cs := range ps.ContainerStats {
		if cs.ID != c.id() {
			continue
		}
		ts := ps.Timestamp.UnixNano()
		out.Cpu = &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: u64(cs.CPU.Usage.Total),
			UsageNanoCores: s.cpu.rate(c.id(), ps.Timestamp, cs.CPU.Usage.Total)}
		out.Memory = &runtimeapi.MemoryUsage{Timestamp: ts, WorkingSetBytes: u64(cs.Memory.WorkingSet), UsageBytes: u64(cs.Memory.Usage)}
		if cs.Memory.Limit > 0 && cs.Memory.Limit >= cs.Memory.WorkingSet {
			out.Memory.AvailableBytes = u64(cs.Memory.Limit - cs.Memory.WorkingSet)
		}
	}
	return out
}

// ContainerStats reports one container's CPU and memory use.
func (s *Server) ContainerStats(ctx context.Context, r *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	c, err := s.getContainer(r.ContainerId)
	if err != nil {
		return nil, err
	}
	var ps *pod.PodStats
	if c.state() == runtimeapi.ContainerState_CONTAINER_RUNNING {
		ps = s.podStats(ctx, c.info.PodID)
	}
	return &runtimeapi.ContainerStatsResponse{Stats: s.containerStats(c, ps)}, nil
}

// ListContainerStats reports the CRI containers' use, filtered; one
// stats call per running pod.
func (s *Server) ListContainerStats(ctx context.Context, r *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := r.GetFilter()
	byPod := map[string]*pod.PodStats{}
	resp := &runtimeapi.ListContainerStatsResponse{}
	for _, c := range s.containers() {
		if f != nil {
			if f.Id != "" && !strings.HasPrefix(c.id(), f.Id) ||
				f.PodSandboxId != "" && !strings.HasPrefix(c.info.PodID, f.PodSandboxId) ||
				!matches(f.LabelSelector, userLabels(c.info.Container.Labels)) {
				continue
			}
		}
		var ps *pod.PodStats
		if c.state() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			var ok bool
			if ps, ok = byPod[c.info.PodID]; !ok {
				ps = s.podStats(ctx, c.info.PodID)
				byPod[c.info.PodID] = ps
			}
		}
		resp.Stats = append(resp.Stats, s.containerStats(c, ps))
	}
	return resp, nil
}

// sandboxStats are a sandbox's figures: the sum of its containers', its
// network interfaces, its processes.
func (s *Server) sandboxStats(ctx context.Context, sb *sandbox) *runtimeapi.PodSandboxStats {
	out := &runtimeapi.PodSandboxStats{Attributes: &runtimeapi.PodSandboxAttributes{Id: sb.id(), Metadata: sb.metadata(),
		Labels: userLabels(sb.info.Spec.Labels), Annotations: sb.meta.Annotations}}
	if sb.state() != runtimeapi.PodSandboxState_SANDBOX_READY {
		return out
	}
	ps := s.podStats(ctx, sb.id())
	if ps == nil {
		return out
	}
	ts := ps.Timestamp.UnixNano()
	lx := &runtimeapi.LinuxPodSandboxStats{
		Cpu: &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: u64(ps.CPU.Usage.Total),
			UsageNanoCores: s.cpu.rate("sandbox:"+sb.id(), ps.Timestamp, ps.CPU.Usage.Total)},
		Memory:  &runtimeapi.MemoryUsage{Timestamp: ts, WorkingSetBytes: u64(ps.Memory.WorkingSet), UsageBytes: u64(ps.Memory.Usage)},
		Network: &runtimeapi.NetworkUsage{Timestamp: ts},
	}
	var procs uint64
	for _, cs := range ps.ContainerStats {
		procs += cs.Pids
	}
	lx.Process = &runtimeapi.ProcessUsage{Timestamp: ts, ProcessCount: u64(procs)}
	for _, i := range ps.Network.Interfaces {
		nu := &runtimeapi.NetworkInterfaceUsage{Name: i.Name, RxBytes: u64(i.RxBytes), RxErrors: u64(i.RxErrors), TxBytes: u64(i.TxBytes), TxErrors: u64(i.TxErrors)}
		if lx.Network.DefaultInterface == nil {
			lx.Network.DefaultInterface = nu
		} else {
			lx.Network.Interfaces = append(lx.Network.Interfaces, nu)
		}
	}
	for _, cs := range sb.info.Spec.Containers {
		ci, err := s.core.ContainerInfo(cs.ContainerID)
		if err != nil {
			continue
		}
		if c, ok := asContainer(ci); ok {
			lx.Containers = append(lx.Containers, s.containerStats(c, ps))
		}
	}
	out.Linux = lx
	return out
}

// PodSandboxStats reports one sandbox's use.
func (s *Server) PodSandboxStats(ctx context.Context, r *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	sb, err := s.getSandbox(r.PodSandboxId)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: s.sandboxStats(ctx, sb)}, nil
}

// ListPodSandboxStats reports the sandboxes' use, filtered.
func (s *Server) ListPodSandboxStats(ctx context.Context, r *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := r.GetFilter()
	resp := &runtimeapi.ListPodSandboxStatsResponse{}
	for _, sb := range s.sandboxes() {
		if f != nil && (f.Id != "" && !strings.HasPrefix(sb.id(), f.Id) || !matches(f.LabelSelector, userLabels(sb.info.Spec.Labels))) {
			continue
		}
		resp.Stats = append(resp.Stats, s.sandboxStats(ctx, sb))
	}
	return resp, nil
}

// UpdateContainerResources cannot be honoured: the agent applies no
// per-container CPU or memory limits (a pod's size is its sandbox's).
func (s *Server) UpdateContainerResources(ctx context.Context, r *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if _, err := s.getContainer(r.ContainerId); err != nil {
		return nil, err
	}
	return nil, status.Error(codes.Unimplemented, "UpdateContainerResources: hyperd applies no per-container CPU or memory limits (a pod's size is its sandbox's, hyperd --vcpu/--memory), so there is nothing to update")
}
