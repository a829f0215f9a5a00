package cri

// TestCRILocal drives the CRI's gRPC API of a real hyperd (--driver
// local): an image pulled through a registry mirror, a sandbox and a
// container with a CRI log file and mounts (a host directory and a host
// file), ExecSync, errors, the same pod and
// container through the REST API (hyperctl), and a kill -9 and restart of
// hyperd with the sandbox running: the sandbox and the container are there
// after it, the container still runs and its log file goes on, and a
// container that wrote and exited while hyperd was down has its exit code
// and its output.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/image/regtest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const busyboxImage = "registry.k8s.io/e2e-test-images/busybox:1.29-2"

func TestCRILocal(t *testing.T) {
	requireRoot(t)
	reg := regtest.Start(t, "", "")
	pushImages(t, reg, nil)
	h := startHyperd(t, "local", "--registry-mirror", "registry.k8s.io=http://"+reg+"/registry.k8s.io")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	pulled, err := h.ic.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: busyboxImage}})
	if err != nil {
		t.Fatalf("PullImage through the mirror: %v\n%s", err, h.log())
	}
	if st, err := h.ic.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: busyboxImage}}); err != nil ||
		st.Image.GetId() != pulled.ImageRef || !contains(st.Image.RepoTags, busyboxImage) {
		t.Fatalf("ImageStatus = %v, %v (pulled %s)", st, err, pulled.ImageRef)
	}
	logDir := filepath.Join(t.TempDir(), "pods", "web")
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "e2e", Uid: "u-web"},
		Hostname: "web-host", LogDirectory: logDir, Labels: map[string]string{"app": "web"}}
	sb, err := h.rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, h.log())
	}
	// mounts: a host directory and a host file (as the kubelet's /etc/hosts)
	vol := filepath.Join(t.TempDir(), "vol")
	hosts := filepath.Join(t.TempDir(), "hosts")
	os.MkdirAll(vol, 0o755)
	if err := os.WriteFile(filepath.Join(vol, "x"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hosts, []byte("10.1.2.3 web-alias\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "ticker"}, Image: &runtimeapi.ImageSpec{Image: busyboxImage},
		Command: []string{"sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"}, LogPath: "ticker/0.log",
		Mounts: []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: vol, Readonly: true}, {ContainerPath: "/etc/hosts", HostPath: hosts, Readonly: true}}}
	cr, err := h.rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: cfg, SandboxConfig: sbCfg})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	cid := cr.ContainerId
	if _, err := h.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cid}); err != nil {
		t.Fatalf("StartContainer: %v\n%s", err, h.log())
	}
	x, err := h.rc.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"hostname"}, Timeout: 10})
	if err != nil || strings.TrimSpace(string(x.Stdout)) != "web-host" {
		t.Errorf("ExecSync hostname = %v, %v", x, err)
	}
	x, err = h.rc.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"cat", "/data/x", "/etc/hosts"}, Timeout: 10})
	if err != nil || string(x.Stdout) != "from the host\n10.1.2.3 web-alias\n" {
		t.Errorf("the mounts seen in the container: %q %q, %v", x.GetStdout(), x.GetStderr(), err)
	}
	logPath := filepath.Join(logDir, "ticker", "0.log")
	waitLog(t, logPath, "stdout F tick 3")

	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"unknown sandbox", func() error {
			_, err := h.rc.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "0000nosuchsandbox"})
			return err
		}, codes.NotFound},
		{"host network", func() error {
			c := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "h", Namespace: "e2e", Uid: "u-h"},
				Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
					NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}}}
			_, err := h.rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: c})
			return err
		}, codes.InvalidArgument},
		{"image never pulled", func() error {
			c := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "x"}, Image: &runtimeapi.ImageSpec{Image: "never/pulled:1"}}
			_, err := h.rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: c})
			return err
		}, codes.NotFound},
		{"second start", func() error {
			_, err := h.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cid})
			return err
		}, codes.FailedPrecondition},
	} {
		if err := tc.call(); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}

	// one state: the REST API and hyperctl see the CRI's pod and container
	hctl := func(args ...string) string {
		out, err := exec.Command(filepath.Join(h.bin, "hyperctl"), append([]string{"-H", "unix://" + h.sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("hyperctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := hctl("list", "container"); !strings.Contains(out, cid[:12]) || !strings.Contains(out, "k8s_ticker_web_e2e_u-web_0") {
		t.Errorf("hyperctl list container does not show the CRI container:\n%s", out)
	}
	if out := hctl("info", sb.PodSandboxId); !strings.Contains(out, "io.hyperd.cri.sandbox") || !strings.Contains(out, "app") {
		t.Errorf("hyperctl info of the sandbox lacks its CRI labels:\n%s", out)
	}

	// a container that writes and exits while hyperd is down
	lateCfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "late"}, Image: &runtimeapi.ImageSpec{Image: busyboxImage},
		Command: []string{"sh", "-c", "sleep 2; echo late line; exit 7"}, LogPath: "late/0.log"}
	lr, err := h.rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: lateCfg, SandboxConfig: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: lr.ContainerId}); err != nil {
		t.Fatal(err)
	}

	// kill -9 and restart: the sandbox's agent outlives the daemon
	h.stop(syscall.SIGKILL)
	time.Sleep(3 * time.Second)
	h.start()
	st, err := h.rc.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId})
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.Status.Metadata.Name != "web" || st.Status.Labels["app"] != "web" {
		t.Fatalf("sandbox after kill -9 + restart: %v, %v\n%s", st, err, h.log())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cs, err := h.rc.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cid})
		if err == nil && cs.Status.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container after kill -9 + restart: %v, %v\n%s", cs, err, h.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// the late container exited while hyperd was down: its exit code and
	// its output are there after the restart
	deadline = time.Now().Add(30 * time.Second)
	for {
		cs, err := h.rc.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: lr.ContainerId})
		if err == nil && cs.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			if cs.Status.ExitCode != 7 {
				t.Errorf("the late container's exit code after the restart: %d, want 7", cs.Status.ExitCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the late container after kill -9 + restart: %v, %v\n%s", cs, err, h.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitLog(t, filepath.Join(logDir, "late", "0.log"), "stdout F late line")
	if _, err := h.rc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: lr.ContainerId}); err != nil {
		t.Fatal(err)
	}

	before, _ := os.ReadFile(logPath)
	n := strings.Count(string(before), "\n")
	waitLog(t, logPath, "") // any line
	deadline = time.Now().Add(20 * time.Second)
	for {
		now, _ := os.ReadFile(logPath)
		if strings.Count(string(now), "\n") >= n+5 {
			checkLines(t, string(now))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CRI log did not go on after the restart (%d lines before, file:\n%s)\n%s", n, tail(string(now), 2000), h.log())
		}
		time.Sleep(200 * time.Millisecond)
	}

	if _, err := h.rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if cs, err := h.rc.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cid}); err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("container after StopPodSandbox: %v, %v", cs, err)
	}
	if _, err := h.rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if l, err := h.rc.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil || len(l.Containers) != 0 {
		t.Errorf("containers left: %v, %v", l, err)
	}
	if out := hctl("list", "pod"); strings.Contains(out, sb.PodSandboxId) {
		t.Errorf("the removed sandbox is still a pod:\n%s", out)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// waitLog waits for want in the CRI log file at path.
func waitLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if len(b) > 0 && strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no %q after 20s:\n%s", path, want, tail(string(b), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkLines checks every line is "<RFC3339Nano> stdout F tick N", with
// N increasing by one (nothing lost or repeated across the restart).
func checkLines(t *testing.T, s string) {
	t.Helper()
	prev := -1
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		f := strings.Fields(l)
		if len(f) != 5 || f[1] != "stdout" || f[2] != "F" || f[3] != "tick" {
			t.Fatalf("CRI log line %q", l)
		}
		if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
			t.Fatalf("CRI log line %q: %v", l, err)
		}
		var n int
		for _, c := range f[4] {
			n = n*10 + int(c-'0')
		}
		if prev >= 0 && n != prev+1 {
			t.Fatalf("CRI log: tick %d after tick %d (lost or repeated output across the restart)", n, prev)
		}
		prev = n
	}
}
