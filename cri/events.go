// This file owns GetContainerEvents: a stream of container life-cycle
// events (created, started, stopped, deleted) with the sandbox's and the
// containers' statuses, for the kubelet's evented PLEG. Created, started
// and deleted are sent by the calls that do them; stopped by a watcher per
// started container that waits for its exit in the core (so an exit of the
// container's own is an event too), resumed after a restart of hyperd.

package cri

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// eventBuffer is how many events a slow subscriber may lag before it
// loses the stream (it is ended with an error and must list again).
const eventBuffer = 256

type events struct {
	mu   sync.Mutex
	subs map[chan *runtimeapi.ContainerEventResponse]struct{}
	// watching: containers whose exit a watcher waits for
	watching map[string]bool
}

func (e *events) subscribe() chan *runtimeapi.ContainerEventResponse {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.subs == nil {
		e.subs = map[chan *runtimeapi.ContainerEventResponse]struct{}{}
	}
	ch := make(chan *runtimeapi.ContainerEventResponse, eventBuffer)
	e.subs[ch] = struct{}{}
	return ch
}

func (e *events) unsubscribe(ch chan *runtimeapi.ContainerEventResponse) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.subs[ch]; ok {
		delete(e.subs, ch)
		close(ch)
	}
}

// publish hands ev to every subscriber; one whose buffer is full is
// dropped (its stream ends, so it knows it missed events).
func (e *events) publish(ev *runtimeapi.ContainerEventResponse) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subs {
		select {
		case ch <- ev:
		default:
			delete(e.subs, ch)
			close(ch)
		}
	}
}

func (e *events) listening() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.subs) > 0
}

// emit publishes an event of container cid (with its sandbox's status and
// its containers' statuses, as they are now).
func (s *Server) emit(ctx context.Context, cid, podID string, typ runtimeapi.ContainerEventType) {
	if !s.events.listening() {
		return
	}
	ev := &runtimeapi.ContainerEventResponse{ContainerId: cid, ContainerEventType: typ, CreatedAt: time.Now().UnixNano()}
	if st, err := s.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID}); err == nil {
		ev.PodSandboxStatus = st.Status
	}
	for _, c := range s.containers() {
		if c.info.PodID != podID {
			continue
		}
		if st, err := s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.id()}); err == nil {
			ev.ContainersStatuses = append(ev.ContainersStatuses, st.Status)
		}
	}
	s.events.publish(ev)
}

// watchExit sends the stopped event of a started container once it exits.
func (s *Server) watchExit(cid, podID string) {
	s.events.mu.Lock()
	if s.events.watching == nil {
		s.events.watching = map[string]bool{}
	}
	if s.events.watching[cid] {
		s.events.mu.Unlock()
		return
	}
	s.events.watching[cid] = true
	s.events.mu.Unlock()
	go func() {
		defer func() {
			s.events.mu.Lock()
			delete(s.events.watching, cid)
			s.events.mu.Unlock()
		}()
		if _, err := s.core.ExitCode(s.ctx, cid, ""); err != nil {
			return // removed, or hyperd stopping
		}
		s.logs.wait(cid, 3*time.Second)
		s.emit(s.ctx, cid, podID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	}()
}

// resumeWatches watches the exits of the running CRI containers (hyperd
// restarted).
func (s *Server) resumeWatches() {
	for _, c := range s.containers() {
		if c.state() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			s.watchExit(c.id(), c.info.PodID)
		}
	}
}

// GetContainerEvents streams container events until the client goes.
func (s *Server) GetContainerEvents(r *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	ch := s.events.subscribe()
	defer s.events.unsubscribe(ch)
	// the headers tell the client that it is subscribed: events from now
	// on reach it
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return errLagged
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}
