// This file owns the PodSandbox methods: RunPodSandbox, StopPodSandbox,
// RemovePodSandbox, PodSandboxStatus and ListPodSandbox.

package cri

import (
	"context"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sandboxes lists the CRI sandboxes (pods with LabelSandbox).
func (s *Server) sandboxes() []*sandbox {
	var out []*sandbox
	for _, e := range s.core.ListPods("", "") {
		id, _, _ := strings.Cut(e, ":") // id:name:vm:status
		pi, err := s.core.PodInfo(id)
		if err != nil {
			continue // removed meanwhile
		}
		if sb, ok := asSandbox(pi); ok {
			out = append(out, sb)
		}
	}
	return out
}

// getSandbox finds a CRI sandbox by id or unique id prefix.
func (s *Server) getSandbox(ref string) (*sandbox, error) {
	if ref == "" {
		return nil, invalid("pod sandbox id is required")
	}
	if pi, err := s.core.PodInfo(ref); err == nil {
		if sb, ok := asSandbox(pi); ok {
			return sb, nil
		}
		return nil, notFound("pod %s is not a CRI pod sandbox (it was made through the REST API)", ref)
	}
	var match *sandbox
	for _, sb := range s.sandboxes() {
		if strings.HasPrefix(sb.id(), ref) {
			if match != nil {
				return nil, invalid("pod sandbox id prefix %q is ambiguous", ref)
			}
			match = sb
		}
	}
	if match == nil {
		return nil, notFound("pod sandbox %s not found", ref)
	}
	return match, nil
}

// RunPodSandbox creates a pod of type sandbox and starts its sandbox with
// no container.
func (s *Server) RunPodSandbox(ctx context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	if err := s.handlerOK(r.RuntimeHandler); err != nil {
		return nil, err
	}
	cfg := r.GetConfig()
	if cfg == nil {
		return nil, invalid("sandbox config is required")
	}
	id := newSandboxID()
	spec, err := s.podSpec(id, cfg, r.RuntimeHandler)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	md := cfg.Metadata
	for _, sb := range s.sandboxes() {
		m := sb.meta
		if m.Name == md.Name && m.Namespace == md.Namespace && m.UID == md.Uid && m.Attempt == md.Attempt {
			s.mu.Unlock()
			return nil, status.Errorf(codes.AlreadyExists, "pod sandbox %s already exists: %s", fmtMeta(md), sb.id())
		}
	}
	_, err = s.core.CreatePod(spec)
	s.mu.Unlock()
	if err != nil {
		return nil, grpcErr(err)
	}
	if cfg.LogDirectory != "" {
		if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
			s.core.RemovePod(context.Background(), id)
			return nil, status.Errorf(codes.Internal, "sandbox log directory: %v", err)
		}
	}
	if err := s.core.StartPod(ctx, id); err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if rerr := s.core.RemovePod(rctx, id); rerr != nil {
			s.log.Warn("cri: removing a sandbox that failed to start", "sandbox", id, "err", rerr)
		}
		return nil, status.Errorf(statusCode(err), "start pod sandbox %s: %v", fmtMeta(md), err)
	}
	s.log.Info("cri: pod sandbox running", "sandbox", id, "pod", fmtMeta(md))
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func statusCode(err error) codes.Code { return status.Code(grpcErr(err)) }

// StopPodSandbox stops every container of the sandbox and the sandbox
// itself. Stopping an unknown or stopped sandbox is not an error.
func (s *Server) StopPodSandbox(ctx context.Context, r *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	sb, err := s.getSandbox(r.PodSandboxId)
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return &runtimeapi.StopPodSandboxResponse{}, nil
		}
		return nil, err
	}
	if err := s.core.StopPod(ctx, sb.id()); err != nil {
		if cur, gerr := s.getSandbox(sb.id()); gerr == nil && cur.state() != runtimeapi.PodSandboxState_SANDBOX_READY && statusCode(err) == codes.FailedPrecondition {
			return &runtimeapi.StopPodSandboxResponse{}, nil // already stopped
		} else if status.Code(gerr) == codes.NotFound {
			return &runtimeapi.StopPodSandboxResponse{}, nil
		}
		return nil, grpcErr(err)
	}
	s.waitLogs(sb)
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// waitLogs gives the sandbox's log followers a moment to finish.
func (s *Server) waitLogs(sb *sandbox) {
	for _, cs := range sb.info.Spec.Containers {
		s.logs.wait(cs.ContainerID, 2*time.Second)
	}
}

// RemovePodSandbox stops the sandbox if needed and removes it with its
// containers. Removing an unknown sandbox is not an error.
func (s *Server) RemovePodSandbox(ctx context.Context, r *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	sb, err := s.getSandbox(r.PodSandboxId)
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return &runtimeapi.RemovePodSandboxResponse{}, nil
		}
		return nil, err
	}
	for _, cs := range sb.info.Spec.Containers {
		s.logs.stop(cs.ContainerID)
	}
	if err := s.core.RemovePod(ctx, sb.id()); err != nil && !isNotFound(err) {
		return nil, grpcErr(err)
	}
	s.cpu.forget("sandbox:" + sb.id())
	for _, cs := range sb.info.Spec.Containers {
		s.cpu.forget(cs.ContainerID)
		if _, ok := cs.Labels[LabelContainer]; ok {
			s.emit(ctx, cs.ContainerID, sb.id(), runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
		}
	}
	s.log.Info("cri: pod sandbox removed", "sandbox", sb.id())
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// PodSandboxStatus reports a sandbox's state, address and metadata.
func (s *Server) PodSandboxStatus(ctx context.Context, r *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	sb, err := s.getSandbox(r.PodSandboxId)
	if err != nil {
		return nil, err
	}
	st := &runtimeapi.PodSandboxStatus{Id: sb.id(), Metadata: sb.metadata(), State: sb.state(), CreatedAt: sb.meta.CreatedAt,
		Labels: userLabels(sb.info.Spec.Labels), Annotations: sb.meta.Annotations, RuntimeHandler: sb.meta.RuntimeHandler,
		Network: &runtimeapi.PodSandboxNetworkStatus{},
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
			Network: runtimeapi.NamespaceMode(sb.meta.NetworkMode), Pid: runtimeapi.NamespaceMode(sb.meta.PidMode), Ipc: runtimeapi.NamespaceMode(sb.meta.IpcMode)}}}}
	if ips := sb.info.Status.PodIP; len(ips) > 0 && st.State == runtimeapi.PodSandboxState_SANDBOX_READY {
		st.Network.Ip = ips[0]
		for _, ip := range ips[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: st}
	if r.Verbose {
		resp.Info = map[string]string{"driver": sb.info.Driver, "isolation": sb.info.Isolation, "phase": sb.info.Status.Phase,
			"reason": sb.info.Status.Reason, "message": sb.info.Status.Message, "vm": sb.info.VM, "cgroupParent": sb.meta.CgroupParent}
	}
	return resp, nil
}

// ListPodSandbox lists the CRI sandboxes, filtered.
func (s *Server) ListPodSandbox(ctx context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := r.GetFilter()
	resp := &runtimeapi.ListPodSandboxResponse{}
	for _, sb := range s.sandboxes() {
		labels := userLabels(sb.info.Spec.Labels)
		if f != nil {
			if f.Id != "" && !strings.HasPrefix(sb.id(), f.Id) {
				continue
			}
			if f.State != nil && f.State.State != sb.state() {
				continue
			}
			if !matches(f.LabelSelector, labels) {
				continue
			}
		}
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{Id: sb.id(), Metadata: sb.metadata(), State: sb.state(),
			CreatedAt: sb.meta.CreatedAt, Labels: labels, Annotations: sb.meta.Annotations, RuntimeHandler: sb.meta.RuntimeHandler})
	}
	return resp, nil
}
