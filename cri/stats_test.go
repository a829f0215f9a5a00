package cri_test

// Tests of the stats calls and of GetContainerEvents, on the core with
// podtest's driver.

import (
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestStats(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	sb, sbCfg := e.runSandbox("s")
	created := e.create(sb, sbCfg, ctrConfig("created", "sleeper"))
	running := e.create(sb, sbCfg, ctrConfig("running", "sleeper"))
	if _, err := e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: running}); err != nil {
		t.Fatal(err)
	}
	e.waitState(running, runtimeapi.ContainerState_CONTAINER_RUNNING)
	cs, err := e.rc.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: running})
	if err != nil {
		t.Fatal(err)
	}
	st := cs.Stats
	if st.Attributes.Id != running || st.Attributes.Metadata.Name != "running" || st.Cpu.GetTimestamp() == 0 ||
		st.Cpu.UsageCoreNanoSeconds.GetValue() != 1000 || st.Memory.WorkingSetBytes == nil || st.Memory.UsageBytes.GetValue() != 4096 {
		t.Errorf("ContainerStats of a running container: %v", st)
	}
	l, err := e.rc.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
	if err != nil || len(l.Stats) != 2 {
		t.Fatalf("ListContainerStats: %v, %v", l, err)
	}
	for _, s := range l.Stats {
		if s.Attributes.Id == created && s.Cpu != nil {
			t.Errorf("a created container has CPU figures: %v", s)
		}
	}
	l, _ = e.rc.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"ctr": "created"}}})
	if len(l.GetStats()) != 1 || l.Stats[0].Attributes.Id != created {
		t.Errorf("ListContainerStats by label: %v", l)
	}
	ps, err := e.rc.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: sb})
	if err != nil {
		t.Fatal(err)
	}
	if lx := ps.Stats.Linux; lx == nil || lx.Cpu.UsageCoreNanoSeconds.GetValue() != 1000 || lx.Process.ProcessCount.GetValue() != 1 || len(lx.Containers) != 2 {
		t.Errorf("PodSandboxStats: %v", ps.Stats)
	}
	if ls, err := e.rc.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{}); err != nil || len(ls.Stats) != 1 {
		t.Errorf("ListPodSandboxStats: %v, %v", ls, err)
	}
	_, err = e.rc.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: running})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("UpdateContainerResources: %v, want Unimplemented saying why", err)
	}
}

func TestContainerEvents(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	stream, err := e.rc.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	evs := make(chan *runtimeapi.ContainerEventResponse, 16)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				close(evs)
				return
			}
			evs <- ev
		}
	}()
	// the server sends the headers once the client is subscribed
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	sb, sbCfg := e.runSandbox("ev")
	id := e.create(sb, sbCfg, ctrConfig("echo", "busybox", "echo", "hi"))
	if _, err := e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	e.waitState(id, runtimeapi.ContainerState_CONTAINER_EXITED)
	if _, err := e.rc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	want := []runtimeapi.ContainerEventType{runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT}
	for i, w := range want {
		select {
		case ev := <-evs:
			if ev.ContainerId != id || ev.ContainerEventType != w || ev.PodSandboxStatus.GetId() != sb {
				t.Fatalf("event %d: %v, want %s of %s", i, ev, w, id)
			}
			if w == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT &&
				(len(ev.ContainersStatuses) != 1 || ev.ContainersStatuses[0].State != runtimeapi.ContainerState_CONTAINER_EXITED) {
				t.Errorf("stopped event's statuses: %v", ev.ContainersStatuses)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event %d (%s)", i, w)
		}
	}
}

// TestStreamedLists: the Stream* calls give the List calls' items, in
// chunks of at most 100, then EOF; an empty list is no message.
func TestStreamedLists(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	recv := func(st interface{ RecvMsg(any) error }, msg func() any, count func(any) int) (msgs, items int) {
		for {
			m := msg()
			if err := st.RecvMsg(m); err != nil {
				if err != io.EOF {
					t.Fatalf("stream: %v", err)
				}
				return
			}
			n := count(m)
			if n == 0 || n > 100 {
				t.Fatalf("a message of %d items", n)
			}
			msgs++
			items += n
		}
	}
	sbs := func() (int, int) {
		st, err := e.rc.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return recv(st, func() any { return &runtimeapi.StreamPodSandboxesResponse{} },
			func(m any) int { return len(m.(*runtimeapi.StreamPodSandboxesResponse).PodSandboxes) })
	}
	if m, n := sbs(); m != 0 || n != 0 {
		t.Errorf("no sandboxes: %d messages, %d items", m, n)
	}
	var ids []string
	for i := 0; i < 3; i++ {
		id, _ := e.runSandbox(fmt.Sprintf("l%d", i))
		ids = append(ids, id)
	}
	if m, n := sbs(); m != 1 || n != 3 {
		t.Errorf("three sandboxes: %d messages, %d items", m, n)
	}
	sb, sbCfg := ids[0], e.sandboxConfig("l0")
	e.create(sb, sbCfg, ctrConfig("c", "busybox"))
	cs, err := e.rc.StreamContainers(ctx, &runtimeapi.StreamContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, n := recv(cs, func() any { return &runtimeapi.StreamContainersResponse{} },
		func(m any) int { return len(m.(*runtimeapi.StreamContainersResponse).Containers) }); m != 1 || n != 1 {
		t.Errorf("containers: %d messages, %d items", m, n)
	}
	ss, err := e.rc.StreamPodSandboxStats(ctx, &runtimeapi.StreamPodSandboxStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, n := recv(ss, func() any { return &runtimeapi.StreamPodSandboxStatsResponse{} },
		func(m any) int { return len(m.(*runtimeapi.StreamPodSandboxStatsResponse).PodSandboxStats) }); m != 1 || n != 3 {
		t.Errorf("sandbox stats: %d messages, %d items", m, n)
	}
	is, err := e.rc.StreamContainerStats(ctx, &runtimeapi.StreamContainerStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, n := recv(is, func() any { return &runtimeapi.StreamContainerStatsResponse{} },
		func(m any) int { return len(m.(*runtimeapi.StreamContainerStatsResponse).ContainerStats) }); m != 1 || n != 1 {
		t.Errorf("container stats: %d messages, %d items", m, n)
	}
}
