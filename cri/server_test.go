package cri_test

// Tests of the CRI server over a real gRPC connection (a unix socket), on
// the daemon core with podtest's in-memory driver: the sandbox and
// container life cycles, their errors, the CRI log file, ExecSync and its
// timeout, and the state after a restart of the core.

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/cri"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type env struct {
	t    *testing.T
	root string
	drv  *podtest.Driver
	d    *pod.Daemon
	srv  *cri.Server
	g    *grpc.Server
	rc   runtimeapi.RuntimeServiceClient
	logs string
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start opens the core on root (podtest's driver drv) and serves the CRI
// on a socket of its own.
func start(t *testing.T, root string, drv *podtest.Driver) *env {
	t.Helper()
	d, err := pod.New(pod.Config{DataRoot: root, Driver: drv, Images: &podtest.Images{Root: t.TempDir()}, Logger: quiet(), StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, root: root, drv: drv, d: d, logs: filepath.Join(root, "..", "logs")}
	e.srv = cri.New(cri.Config{Core: d, Log: quiet(), Version: "test"})
	sock := filepath.Join(t.TempDir(), "cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	e.g = e.srv.GRPCServer()
	go e.g.Serve(ln)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.rc = runtimeapi.NewRuntimeServiceClient(conn)
	return e
}

func (e *env) close() {
	e.g.Stop()
	e.srv.Close()
	e.d.Close()
}

func newEnv(t *testing.T) *env {
	root := filepath.Join(t.TempDir(), "root")
	e := start(t, root, podtest.NewDriver())
	t.Cleanup(e.close)
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) sandboxConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "ns", Uid: "uid-" + name, Attempt: 1},
		Hostname:     name,
		LogDirectory: filepath.Join(e.logs, name),
		Labels:       map[string]string{"app": name},
		Annotations:  map[string]string{"note": "n-" + name},
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.10.10.10"}, Searches: []string{"example.com"}, Options: []string{"ndots:8"}},
	}
}

func (e *env) runSandbox(name string) (string, *runtimeapi.PodSandboxConfig) {
	e.t.Helper()
	cfg := e.sandboxConfig(name)
	r, err := e.rc.RunPodSandbox(ctxT(e.t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		e.t.Fatalf("RunPodSandbox: %v", err)
	}
	return r.PodSandboxId, cfg
}

func ctrConfig(name, image string, args ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name, Attempt: 0},
		Image: &runtimeapi.ImageSpec{Image: image}, Args: args, LogPath: name + ".log",
		Labels: map[string]string{"ctr": name}, Annotations: map[string]string{"a": "b"}}
}

func (e *env) create(sb string, sbCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	e.t.Helper()
	r, err := e.rc.CreateContainer(ctxT(e.t), &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: cfg, SandboxConfig: sbCfg})
	if err != nil {
		e.t.Fatalf("CreateContainer: %v", err)
	}
	return r.ContainerId
}

func (e *env) status(id string) *runtimeapi.ContainerStatus {
	e.t.Helper()
	r, err := e.rc.ContainerStatus(ctxT(e.t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		e.t.Fatalf("ContainerStatus: %v", err)
	}
	return r.Status
}

func (e *env) waitState(id string, want runtimeapi.ContainerState) *runtimeapi.ContainerStatus {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.status(id)
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s is %s, want %s", id, st.State, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) sandboxState(id string) runtimeapi.PodSandboxState {
	e.t.Helper()
	r, err := e.rc.PodSandboxStatus(ctxT(e.t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		e.t.Fatalf("PodSandboxStatus: %v", err)
	}
	return r.Status.State
}

func TestVersionStatus(t *testing.T) {
	e := newEnv(t)
	v, err := e.rc.Version(ctxT(t), &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "hyperd" || v.RuntimeApiVersion != "v1" || v.RuntimeVersion != "test" {
		t.Fatalf("Version = %v, %v", v, err)
	}
	st, err := e.rc.Status(ctxT(t), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	conds := map[string]*runtimeapi.RuntimeCondition{}
	for _, c := range st.Status.Conditions {
		conds[c.Type] = c
	}
	// no image store in this server: not ready, and saying why; no network
	if c := conds[runtimeapi.RuntimeReady]; c == nil || c.Status || c.Reason != "NoImageStore" {
		t.Errorf("RuntimeReady = %v", c)
	}
	if c := conds[runtimeapi.NetworkReady]; c == nil || c.Status || c.Reason != "NetworkDisabled" {
		t.Errorf("NetworkReady = %v", c)
	}
	if st.Info["driver"] != "fake" {
		t.Errorf("verbose info = %v", st.Info)
	}
}

func TestSandboxLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	id, _ := e.runSandbox("web")
	if len(id) != 32 {
		t.Errorf("sandbox id %q: want 32 hex digits", id)
	}
	st, err := e.rc.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		t.Fatal(err)
	}
	s := st.Status
	if s.State != runtimeapi.PodSandboxState_SANDBOX_READY || s.Metadata.Name != "web" || s.Metadata.Attempt != 1 ||
		s.Labels["app"] != "web" || s.Annotations["note"] != "n-web" || s.CreatedAt == 0 {
		t.Errorf("status = %v", s)
	}
	if _, ok := s.Labels[cri.LabelSandbox]; ok {
		t.Errorf("the reserved label leaks into the CRI labels: %v", s.Labels)
	}
	// one state: the REST API's view of the same pod
	pi, err := e.d.PodInfo(id)
	if err != nil || pi.Status.Phase != "Running" || !strings.Contains(pi.Spec.Labels[cri.LabelSandbox], `"name":"web"`) {
		t.Fatalf("core's pod info: %+v %v", pi, err)
	}
	// the same metadata again is refused
	if _, err := e.rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: e.sandboxConfig("web")}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("second RunPodSandbox with the same metadata: %v, want AlreadyExists", err)
	}
	other, _ := e.runSandbox("db")
	for _, tc := range []struct {
		name   string
		filter *runtimeapi.PodSandboxFilter
		want   []string
	}{
		{"all", nil, []string{id, other}},
		{"by id prefix", &runtimeapi.PodSandboxFilter{Id: id[:12]}, []string{id}},
		{"by label", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "db"}}, []string{other}},
		{"by state", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, nil},
	} {
		l, err := e.rc.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: tc.filter})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, it := range l.Items {
			got = append(got, it.Id)
		}
		if strings.Join(sorted(got), ",") != strings.Join(sorted(tc.want), ",") {
			t.Errorf("%s: listed %v, want %v", tc.name, got, tc.want)
		}
	}
	// a REST pod is not a sandbox
	spec, _ := pod.DecodePodSpec([]byte(`{"id":"rest-pod","containers":[{"image":"busybox"}]}`))
	if _, err := e.d.CreatePod(spec); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rc.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "rest-pod"}); status.Code(err) != codes.NotFound {
		t.Errorf("status of a REST pod: %v, want NotFound", err)
	}
	for i := 0; i < 2; i++ { // stop is idempotent
		if _, err := e.rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("StopPodSandbox #%d: %v", i+1, err)
		}
	}
	if st := e.sandboxState(id); st != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("after stop: %s", st)
	}
	for i := 0; i < 2; i++ { // remove is idempotent
		if _, err := e.rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("RemovePodSandbox #%d: %v", i+1, err)
		}
	}
	if _, err := e.rc.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("status after remove: %v, want NotFound", err)
	}
	if _, err := e.rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("stop of a removed sandbox: %v", err)
	}
	if len(e.drv.Running()) != 1 {
		t.Errorf("sandboxes left running: %v (want db's)", e.drv.Running())
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestContainerLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	sb, sbCfg := e.runSandbox("app")
	// a container that prints and exits: the sandbox stays (a REST pod
	// would stop once its containers exited)
	echo := e.create(sb, sbCfg, ctrConfig("echo", "busybox", "echo", "hello", "world"))
	if st := e.status(echo); st.State != runtimeapi.ContainerState_CONTAINER_CREATED || st.Metadata.Name != "echo" ||
		st.Labels["ctr"] != "echo" || st.Annotations["a"] != "b" || st.Image.Image != "busybox" || st.ImageRef != "sha256:b0b0" {
		t.Fatalf("created: %v", st)
	}
	if _, err := e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: echo}); err != nil {
		t.Fatal(err)
	}
	st := e.waitState(echo, runtimeapi.ContainerState_CONTAINER_EXITED)
	if st.ExitCode != 0 || st.Reason != "Completed" || st.StartedAt == 0 || st.FinishedAt < st.StartedAt {
		t.Errorf("exited: %v", st)
	}
	b, err := os.ReadFile(st.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(b)); len(f) != 5 || f[1] != "stdout" || f[2] != "F" || f[3] != "hello" || f[4] != "world" {
		t.Errorf("CRI log %s = %q", st.LogPath, b)
	} else if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
		t.Errorf("CRI log time %q: %v", f[0], err)
	}
	if _, err := e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: echo}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a second start: %v, want FailedPrecondition", err)
	}
	if s := e.sandboxState(sb); s != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandbox after its container exited: %s", s)
	}
	// a long-running one: exec, exec timeout, stop
	sleeper := e.create(sb, sbCfg, ctrConfig("sleeper", "sleeper"))
	if _, err := e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: sleeper}); err != nil {
		t.Fatal(err)
	}
	e.waitState(sleeper, runtimeapi.ContainerState_CONTAINER_RUNNING)
	x, err := e.rc.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: sleeper, Cmd: []string{"echo", "in", "there"}, Timeout: 10})
	if err != nil || string(x.Stdout) != "in there\n" || x.ExitCode != 0 {
		t.Errorf("ExecSync echo = %v, %v", x, err)
	}
	x, err = e.rc.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: sleeper, Cmd: []string{"exit", "3"}})
	if err != nil || x.ExitCode != 3 {
		t.Errorf("ExecSync exit 3 = %v, %v", x, err)
	}
	t0 := time.Now()
	_, err = e.rc.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: sleeper, Cmd: []string{"sleep"}, Timeout: 1})
	if status.Code(err) != codes.DeadlineExceeded || time.Since(t0) > 8*time.Second {
		t.Errorf("ExecSync past its timeout: %v after %s, want DeadlineExceeded after ~1s", err, time.Since(t0))
	}
	l, err := e.rc.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}})
	if err != nil || len(l.Containers) != 1 || l.Containers[0].Id != sleeper || l.Containers[0].PodSandboxId != sb {
		t.Errorf("running containers: %v, %v", l, err)
	}
	if _, err := e.rc.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: sleeper, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(sleeper); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode == 0 {
		t.Errorf("stopped: %v", st)
	}
	if _, err := e.rc.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: sleeper}); err != nil {
		t.Errorf("a second stop: %v", err)
	}
	// remove kills a running container
	again := e.create(sb, sbCfg, ctrConfig("again", "sleeper"))
	e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: again})
	for _, id := range []string{echo, sleeper, again, again} {
		if _, err := e.rc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Errorf("RemoveContainer %s: %v", id, err)
		}
	}
	if l, _ := e.rc.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); len(l.GetContainers()) != 0 {
		t.Errorf("containers left: %v", l)
	}
}

// TestErrors: bad input is InvalidArgument, unknown objects NotFound,
// wrong states FailedPrecondition, each with a message naming the problem.
func TestErrors(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	sb, sbCfg := e.runSandbox("err")
	running := e.create(sb, sbCfg, ctrConfig("run", "sleeper"))
	e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: running})
	created := e.create(sb, sbCfg, ctrConfig("created", "sleeper"))
	withSandbox := func(f func(*runtimeapi.PodSandboxConfig)) error {
		c := e.sandboxConfig("x-" + time.Now().Format("150405.000000000"))
		f(c)
		_, err := e.rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: c})
		return err
	}
	withContainer := func(f func(*runtimeapi.ContainerConfig)) error {
		c := ctrConfig("c-"+time.Now().Format("150405.000000000"), "busybox")
		f(c)
		_, err := e.rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: c, SandboxConfig: sbCfg})
		return err
	}
	sc := func(f func(*runtimeapi.LinuxContainerSecurityContext)) func(*runtimeapi.ContainerConfig) {
		return func(c *runtimeapi.ContainerConfig) {
			s := &runtimeapi.LinuxContainerSecurityContext{}
			f(s)
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: s}
		}
	}
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"sandbox without metadata", withSandbox(func(c *runtimeapi.PodSandboxConfig) { c.Metadata = nil }), codes.InvalidArgument, "metadata.name"},
		{"sandbox reserved label", withSandbox(func(c *runtimeapi.PodSandboxConfig) { c.Labels = map[string]string{cri.LabelSandbox: "x"} }), codes.InvalidArgument, "reserved"},
		{"host network", withSandbox(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}}
		}), codes.InvalidArgument, "host network"},
		{"sandbox pid POD", withSandbox(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}}
		}), codes.InvalidArgument, "shareProcessNamespace"},
		{"privileged sandbox", withSandbox(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}}
		}), codes.InvalidArgument, "privileged"},
		{"sysctls", withSandbox(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux = &runtimeapi.LinuxPodSandboxConfig{Sysctls: map[string]string{"net.ipv4.ip_forward": "1"}}
		}), codes.InvalidArgument, "sysctls"},
		{"sctp port", withSandbox(func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_SCTP, ContainerPort: 80, HostPort: 8080}}
		}), codes.InvalidArgument, "SCTP"},
		{"bad hostname", withSandbox(func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "Not_A_Host" }), codes.InvalidArgument, "hostname"},
		{"unknown handler", func() error {
			_, err := e.rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: e.sandboxConfig("h"), RuntimeHandler: "runc"})
			return err
		}(), codes.InvalidArgument, "runtime handler"},
		{"container in an unknown sandbox", func() error {
			_, err := e.rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "nope", Config: ctrConfig("a", "busybox")})
			return err
		}(), codes.NotFound, "nope"},
		{"container without image", withContainer(func(c *runtimeapi.ContainerConfig) { c.Image = nil }), codes.InvalidArgument, "image"},
		{"unknown image", withContainer(func(c *runtimeapi.ContainerConfig) { c.Image.Image = "nosuch" }), codes.NotFound, "nosuch"},
		{"container reserved label", withContainer(func(c *runtimeapi.ContainerConfig) { c.Labels = map[string]string{cri.LabelContainer: "1"} }), codes.InvalidArgument, "reserved"},
		{"mount propagation", withContainer(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/tmp", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}}
		}), codes.InvalidArgument, "propagation"},
		{"relative mount", withContainer(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "data", HostPath: "/tmp"}}
		}), codes.InvalidArgument, "absolute"},
		{"privileged container", withContainer(sc(func(s *runtimeapi.LinuxContainerSecurityContext) { s.Privileged = true })), codes.InvalidArgument, "privileged"},
		{"capabilities", withContainer(sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}}
		})), codes.InvalidArgument, "capabilities"},
		{"host pid", withContainer(sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE}
		})), codes.InvalidArgument, "pid NODE"},
		{"localhost seccomp", withContainer(sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/p.json"}
		})), codes.InvalidArgument, "seccomp"},
		{"masked path", withContainer(sc(func(s *runtimeapi.LinuxContainerSecurityContext) { s.MaskedPaths = []string{"/etc"} })), codes.InvalidArgument, "masked path /etc"},
		{"user and username", withContainer(sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.RunAsUser, s.RunAsUsername = &runtimeapi.Int64Value{Value: 1}, "nobody"
		})), codes.InvalidArgument, "run_as_user"},
		{"group without user", withContainer(sc(func(s *runtimeapi.LinuxContainerSecurityContext) { s.RunAsGroup = &runtimeapi.Int64Value{Value: 5} })), codes.InvalidArgument, "run_as_group is set without"},
		{"status of an unknown container", func() error {
			_, err := e.rc.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "0123456789abcdef"})
			return err
		}(), codes.NotFound, "not found"},
		{"start of a running container", func() error {
			_, err := e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: running})
			return err
		}(), codes.FailedPrecondition, "created state"},
		{"exec in a created container", func() error {
			_, err := e.rc.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: created, Cmd: []string{"echo"}})
			return err
		}(), codes.FailedPrecondition, "not running"},
		{"exec without a command", func() error {
			_, err := e.rc.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: running})
			return err
		}(), codes.InvalidArgument, "cmd"},
		{"Exec without a streaming server", func() error {
			_, err := e.rc.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: running, Cmd: []string{"sh"}, Stdout: true})
			return err
		}(), codes.Unavailable, "streaming"},
		{"not implemented: ListMetricDescriptors", func() error {
			_, err := e.rc.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
			return err
		}(), codes.Unimplemented, "ListMetricDescriptors"},
	} {
		if status.Code(tc.err) != tc.code || !strings.Contains(tc.err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %s mentioning %q", tc.name, tc.err, tc.code, tc.msg)
		}
	}
}

// TestUserMapping: run_as_user/group and readonly_rootfs reach the core.
func TestUserMapping(t *testing.T) {
	e := newEnv(t)
	sb, sbCfg := e.runSandbox("u")
	c := ctrConfig("u", "busybox")
	c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser: &runtimeapi.Int64Value{Value: 1002}, RunAsGroup: &runtimeapi.Int64Value{Value: 1003}, ReadonlyRootfs: true,
		MaskedPaths: []string{"/proc/kcore"}, ReadonlyPaths: []string{"/proc/sys"},
		Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}}}
	id := e.create(sb, sbCfg, c)
	ci, err := e.d.ContainerInfo(id)
	if err != nil {
		t.Fatal(err)
	}
	if ci.Container.User != "1002:1003" || !ci.Container.ReadOnlyRootfs || ci.Container.RestartPolicy != pod.RestartNever {
		t.Errorf("core container: user %q readonly %v restart %q", ci.Container.User, ci.Container.ReadOnlyRootfs, ci.Container.RestartPolicy)
	}
}

// TestRestart: after the core and the CRI server restart on the same
// state, the sandbox and its containers are there, and the log of a
// container that wrote while no server followed it is completed.
func TestRestart(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	drv := podtest.NewDriver()
	e := start(t, root, drv)
	sb, sbCfg := e.runSandbox("r")
	sleeper := e.create(sb, sbCfg, ctrConfig("sleeper", "sleeper"))
	ctx := ctxT(t)
	if _, err := e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: sleeper}); err != nil {
		t.Fatal(err)
	}
	e.waitState(sleeper, runtimeapi.ContainerState_CONTAINER_RUNNING)
	e.close()

	e = start(t, root, drv)
	defer e.close()
	if err := e.d.WaitReattached(ctx); err != nil {
		t.Fatal(err)
	}
	if s := e.sandboxState(sb); s != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandbox after a restart: %s", s)
	}
	st := e.waitState(sleeper, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if st.Metadata.Name != "sleeper" || st.LogPath == "" {
		t.Errorf("container after a restart: %v", st)
	}
	if _, err := e.rc.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: sleeper, Timeout: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb}); err != nil {
		t.Fatal(err)
	}
}

// TestMounts: a container's mounts become pod volumes (host directories)
// that the container references, are reported in its status, and leave
// the pod with the container.
func TestMounts(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	sb, sbCfg := e.runSandbox("m")
	dir := t.TempDir()
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := ctrConfig("m", "sleeper")
	c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: dir, Readonly: true}, {ContainerPath: "/etc/hosts", HostPath: hosts}}
	id := e.create(sb, sbCfg, c)
	if _, err := e.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	st := e.waitState(id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if len(st.Mounts) != 2 || st.Mounts[0].HostPath != dir || st.Mounts[0].ContainerPath != "/data" || !st.Mounts[0].Readonly || st.Mounts[1].HostPath != hosts {
		t.Errorf("status mounts: %v", st.Mounts)
	}
	ci, _ := e.d.ContainerInfo(id)
	if vm := ci.Container.VolumeMounts; len(vm) != 2 || vm[0].MountPath != "/data" || !vm[0].ReadOnly || vm[1].MountPath != "/etc/hosts" {
		t.Errorf("core volume mounts: %+v", vm)
	}
	if pi, _ := e.d.PodInfo(sb); len(pi.Spec.Volumes) != 2 || pi.Spec.Volumes[0].Source != dir {
		t.Errorf("pod volumes: %+v", pi.Spec.Volumes)
	}
	if _, err := e.rc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if pi, _ := e.d.PodInfo(sb); len(pi.Spec.Volumes) != 0 {
		t.Errorf("pod volumes after the container's removal: %+v", pi.Spec.Volumes)
	}
}
