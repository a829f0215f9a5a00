// This file owns the container methods: CreateContainer, StartContainer,
// StopContainer, RemoveContainer, ListContainers and ContainerStatus.

package cri

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// getContainer finds a CRI container by id (or a unique prefix of 4 or
// more hex digits, as the core resolves it).
func (s *Server) getContainer(ref string) (*container, error) {
	if ref == "" {
		return nil, invalid("container id is required")
	}
	ci, err := s.core.ContainerInfo(ref)
	if err != nil {
		if isNotFound(err) {
			return nil, notFound("container %s not found", ref)
		}
		return nil, grpcErr(err)
	}
	c, ok := asContainer(ci)
	if !ok {
		return nil, notFound("container %s is not a CRI container (it was made through the REST API)", ref)
	}
	return c, nil
}

// runningContainer is getContainer for calls that need the container
// running (exec, attach, log reopening): FailedPrecondition otherwise.
func (s *Server) runningContainer(ref string) (*container, error) {
	c, err := s.getContainer(ref)
	if err != nil {
		return nil, err
	}
	if c.state() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return nil, precondition("container %s is not running", c.id())
	}
	return c, nil
}

// CreateContainer creates a container in a ready sandbox.
func (s *Server) CreateContainer(ctx context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	sb, err := s.getSandbox(r.PodSandboxId)
	if err != nil {
		return nil, err
	}
	if sb.state() != runtimeapi.PodSandboxState_SANDBOX_READY {
		return nil, precondition("pod sandbox %s is not ready (%s)", sb.id(), sb.info.Status.Phase)
	}
	if r.Config == nil {
		return nil, invalid("container config is required")
	}
	id := newID()
	spec, vols, err := s.containerSpec(id, r.Config, sb)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(vols) > 0 {
		if err := s.core.AddVolumes(sb.id(), vols); err != nil {
			return nil, grpcErr(err)
		}
	}
	cid, err := s.core.CreateContainer(sb.id(), spec)
	if err != nil {
		s.dropVolumes(sb.id(), id, len(vols))
		if strings.Contains(err.Error(), "name") && strings.Contains(err.Error(), "already in use") {
			return nil, status.Errorf(codes.AlreadyExists, "container %q (attempt %d) already exists in pod sandbox %s: %v", r.Config.Metadata.Name, r.Config.Metadata.Attempt, sb.id(), err)
		}
		return nil, grpcErr(err)
	}
	s.emit(ctx, cid, sb.id(), runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
	return &runtimeapi.CreateContainerResponse{ContainerId: cid}, nil
}

// StartContainer starts a created container and its log follower.
func (s *Server) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, err := s.getContainer(r.ContainerId)
	if err != nil {
		return nil, err
	}
	if st := c.state(); st != runtimeapi.ContainerState_CONTAINER_CREATED {
		return nil, precondition("container %s is not in the created state (%s): a CRI container is started once", c.id(), st)
	}
	sb, err := s.getSandbox(c.info.PodID)
	if err != nil {
		return nil, err
	}
	if sb.state() != runtimeapi.PodSandboxState_SANDBOX_READY {
		return nil, precondition("pod sandbox %s of container %s is not ready (%s)", sb.id(), c.id(), sb.info.Status.Phase)
	}
	if err := s.core.PrepareContainer(ctx, c.id()); err != nil {
		return nil, grpcErr(err)
	}
	if err := s.core.StartContainer(ctx, c.id()); err != nil {
		return nil, grpcErr(err)
	}
	if c.meta.LogPath != "" {
		if err := s.logs.start(c.id(), c.meta.LogPath, time.Time{}); err != nil {
			return nil, status.Errorf(codes.Internal, "container %s started, but its log file %s: %v", c.id(), c.meta.LogPath, err)
		}
	}
	s.emit(ctx, c.id(), c.info.PodID, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	s.watchExit(c.id(), c.info.PodID)
	return &runtimeapi.StartContainerResponse{}, nil
}

// StopContainer sends the stop signal, waits timeout seconds, then kills.
// Stopping an unknown or stopped container is not an error.
func (s *Server) StopContainer(ctx context.Context, r *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	c, err := s.getContainer(r.ContainerId)
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return &runtimeapi.StopContainerResponse{}, nil
		}
		return nil, err
	}
	if c.state() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return &runtimeapi.StopContainerResponse{}, nil
	}
	if err := s.stop(ctx, c, time.Duration(r.Timeout)*time.Second); err != nil {
		return nil, err
	}
	s.logs.wait(c.id(), 2*time.Second)
	return &runtimeapi.StopContainerResponse{}, nil
}

// stop signals c's stop signal, waits up to timeout for its exit, then
// sends SIGKILL and waits for the exit.
func (s *Server) stop(ctx context.Context, c *container, timeout time.Duration) error {
	exited := func(d time.Duration) bool {
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		_, err := s.core.ExitCode(wctx, c.id(), "")
		return err == nil
	}
	if timeout > 0 {
		sig := c.info.Container.StopSignal
		if sig == 0 {
			sig = 15
		}
		if err := s.core.KillContainer(ctx, c.id(), sig); err != nil {
			if statusCode(err) == codes.FailedPrecondition {
				return nil // exited meanwhile
			}
			return grpcErr(err)
		}
		if exited(timeout) {
			return nil
		}
	}
	if err := s.core.KillContainer(ctx, c.id(), 9); err != nil {
		if statusCode(err) == codes.FailedPrecondition {
			return nil
		}
		return grpcErr(err)
	}
	if !exited(30 * time.Second) {
		if ctx.Err() != nil {
			return grpcErr(ctx.Err())
		}
		return status.Errorf(codes.Internal, "container %s did not exit within 30s of SIGKILL", c.id())
	}
	return nil
}

// RemoveContainer removes a container, killing it first if it runs.
// Removing an unknown container is not an error.
func (s *Server) RemoveContainer(ctx context.Context, r *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	c, err := s.getContainer(r.ContainerId)
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return &runtimeapi.RemoveContainerResponse{}, nil
		}
		return nil, err
	}
	if c.state() == runtimeapi.ContainerState_CONTAINER_RUNNING {
		if err := s.stop(ctx, c, 0); err != nil {
			return nil, err
		}
	}
	s.logs.wait(c.id(), 2*time.Second)
	s.logs.stop(c.id())
	if err := s.core.RemoveContainer(ctx, c.id()); err != nil && !isNotFound(err) {
		return nil, grpcErr(err)
	}
	s.dropVolumes(c.info.PodID, c.id(), len(c.meta.Mounts))
	s.cpu.forget(c.id())
	s.emit(ctx, c.id(), c.info.PodID, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// dropVolumes removes the pod volumes of container id's n mounts.
func (s *Server) dropVolumes(podID, id string, n int) {
	if n == 0 {
		return
	}
	var names []string
	for i := 0; i < n; i++ {
		names = append(names, volumeName(id, i))
	}
	if err := s.core.RemoveVolumes(podID, names); err != nil && !isNotFound(err) {
		s.log.Warn("cri: dropping a removed container's volumes", "container", id, "err", err)
	}
}

// containers lists the CRI containers.
func (s *Server) containers() []*container {
	var out []*container
	for _, e := range s.core.ListContainers("", "") {
		id, _, _ := strings.Cut(e, ":") // id:name:pod:phase
		ci, err := s.core.ContainerInfo(id)
		if err != nil {
			continue
		}
		if c, ok := asContainer(ci); ok {
			out = append(out, c)
		}
	}
	return out
}

// ListContainers lists the CRI containers, filtered.
func (s *Server) ListContainers(ctx context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := r.GetFilter()
	resp := &runtimeapi.ListContainersResponse{}
	for _, c := range s.containers() {
		labels := userLabels(c.info.Container.Labels)
		if f != nil {
			if f.Id != "" && !strings.HasPrefix(c.id(), f.Id) {
				continue
			}
			if f.PodSandboxId != "" && !strings.HasPrefix(c.info.PodID, f.PodSandboxId) {
				continue
			}
			if f.State != nil && f.State.State != c.state() {
				continue
			}
			if !matches(f.LabelSelector, labels) {
				continue
			}
		}
		resp.Containers = append(resp.Containers, &runtimeapi.Container{Id: c.id(), PodSandboxId: c.info.PodID, Metadata: c.metadata(),
			Image: &runtimeapi.ImageSpec{Image: c.meta.Image, UserSpecifiedImage: c.meta.UserImage}, ImageRef: c.info.Container.ImageID,
			ImageId: c.info.Container.ImageID, State: c.state(), CreatedAt: c.meta.CreatedAt, Labels: labels, Annotations: c.meta.Annotations})
	}
	return resp, nil
}

func unixNano(rfc string) int64 {
	if rfc == "" {
		return 0
	}
	t, err := time.Parse(time.RFC3339Nano, rfc)
	if err != nil {
		return 0
	}
	return t.UnixNano()
}

// ContainerStatus reports one container. An exited container's status is
// given once its log follower copied its last output (at most 3 s later).
func (s *Server) ContainerStatus(ctx context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, err := s.getContainer(r.ContainerId)
	if err != nil {
		return nil, err
	}
	state := c.state()
	if state == runtimeapi.ContainerState_CONTAINER_EXITED {
		s.logs.wait(c.id(), 3*time.Second)
	}
	cs := c.info.Status
	st := &runtimeapi.ContainerStatus{Id: c.id(), Metadata: c.metadata(), State: state, CreatedAt: c.meta.CreatedAt,
		Image: &runtimeapi.ImageSpec{Image: c.meta.Image, UserSpecifiedImage: c.meta.UserImage}, ImageRef: c.info.Container.ImageID,
		ImageId: c.info.Container.ImageID, Labels: userLabels(c.info.Container.Labels), Annotations: c.meta.Annotations,
		LogPath: c.meta.LogPath, Mounts: []*runtimeapi.Mount{}}
	for _, m := range c.meta.Mounts {
		st.Mounts = append(st.Mounts, &runtimeapi.Mount{ContainerPath: m.ContainerPath, HostPath: m.HostPath, Readonly: m.Readonly})
	}
	switch state {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		st.StartedAt = unixNano(cs.Running.StartedAt)
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		t := cs.Terminated
		st.StartedAt, st.FinishedAt, st.ExitCode = unixNano(t.StartedAt), unixNano(t.FinishedAt), int32(t.ExitCode)
		if st.FinishedAt < st.StartedAt {
			// the core records the start once the agent answered, the
			// exit at the process's end: a quick process ends first
			st.StartedAt = st.FinishedAt
		}
		st.Reason, st.Message = "Completed", t.Message
		if t.ExitCode != 0 {
			st.Reason = "Error"
		}
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		if cs.Waiting.Reason != "" && cs.Waiting.Reason != "Pending" {
			st.Message = cs.Waiting.Reason
		}
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if r.Verbose {
		resp.Info = map[string]string{"name": c.info.Container.Name, "phase": cs.Phase, "user": c.info.Container.User,
			"restartCount": "0"}
	}
	return resp, nil
}
