package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/sandbox/local"
)

// dirImages is a one-image store: the busybox rootfs unpacked in a
// directory. It lets the daemon core run against the real local driver and
// agent independently of the image package (TestE2ELocal covers that).
type dirImages struct {
	root    string
	mu      sync.Mutex
	commits map[string]int // image id -> files in the committed layer
}

func (im *dirImages) Resolve(ref string) (pod.ImageRef, error) {
	switch ref {
	case "busybox", "busybox:latest", "sha256:dir-busybox":
		return pod.ImageRef{ID: "sha256:dir-busybox", RepoTags: []string{"busybox:latest"}, Config: pod.ImageConfig{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}}}, nil
	}
	return pod.ImageRef{}, fmt.Errorf("%s: %w", ref, pod.ErrImageNotFound)
}

func (im *dirImages) RootfsDir(ctx context.Context, id string) (string, error) { return im.root, nil }
func (im *dirImages) DiskImage(ctx context.Context, id string) (string, string, error) {
	return "", "", errors.New("no disk images")
}

func (im *dirImages) Commit(ctx context.Context, parent string, layer io.Reader, opt pod.CommitOptions) (string, error) {
	tr := tar.NewReader(layer)
	n := 0
	for {
		if _, err := tr.Next(); err != nil {
			if err == io.EOF {
				break
			}
			return "", err
		}
		n++
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	id := fmt.Sprintf("sha256:commit%d", len(im.commits))
	im.commits[id] = n
	return id, nil
}

// unpackBusybox writes the imgtest layer into dir.
func unpackBusybox(t *testing.T, dir string) {
	bb, err := imgtest.BusyboxPath()
	if err != nil {
		t.Fatal(err)
	}
	var arch bytes.Buffer
	if err := imgtest.Write(&arch, bb, "busybox:latest"); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&arch)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatal("no layer in the busybox archive")
		}
		if strings.HasSuffix(h.Name, "/layer.tar") {
			break
		}
	}
	lr := tar.NewReader(tr)
	for {
		h, err := lr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, os.FileMode(h.Mode))
		case tar.TypeSymlink:
			os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			b, _ := io.ReadAll(lr)
			os.WriteFile(p, b, os.FileMode(h.Mode))
		}
	}
}

// TestCoreOnLocalDriver runs the API handlers and the daemon core in
// process over the real local driver and agent.
func TestCoreOnLocalDriver(t *testing.T) {
	requireHost(t)
	bin := binaries(t)
	agent := filepath.Join(bin, "hyper-agent")
	if _, err := os.Stat(agent); err != nil {
		t.Fatalf("no hyper-agent binary was built: %v", err)
	}
	rootfs := t.TempDir()
	unpackBusybox(t, rootfs)
	dataRoot, err := os.MkdirTemp("/tmp", "hcore")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dataRoot)
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logBuf, mu: &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	imgs := &dirImages{root: rootfs, commits: map[string]int{}}
	d, err := pod.New(pod.Config{DataRoot: dataRoot, Driver: local.New(agent), Images: imgs, Logger: log, StopTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer((&api.Server{Pods: d, Log: log, Version: "core"}).Handler())
	defer func() {
		srv.Close()
		d.Close()
		if t.Failed() {
			logMu.Lock()
			t.Logf("daemon log:\n%s", logBuf.String())
			logMu.Unlock()
		}
	}()
	c, _ := client.New("tcp://" + strings.TrimPrefix(srv.URL, "http://"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// attach before start, output from the first byte, exit code, host logs
	if _, err := c.CreatePod(ctx, []byte(`{"id":"core-echo","containers":[{"image":"busybox","name":"ce","command":["sh","-c","echo out; echo err >&2; exit 3"]}]}`)); err != nil {
		t.Fatal(err)
	}
	st, err := c.Attach(ctx, "ce", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartPod(ctx, "core-echo"); err != nil {
		t.Fatalf("start: %v", err)
	}
	var so, se bytes.Buffer
	st.Pump(false, nil, &so, &se)
	if so.String() != "out\n" || se.String() != "err\n" {
		t.Errorf("attach: %q %q", so.String(), se.String())
	}
	if code, err := c.ExitCode(ctx, "ce", ""); err != nil || code != 3 {
		t.Errorf("exit code %d %v", code, err)
	}
	so.Reset()
	se.Reset()
	c.Logs(ctx, "ce", client.LogsOptions{Stdout: true, Stderr: true}, false, &so, &se)
	if so.String() != "out\n" || se.String() != "err\n" {
		t.Errorf("logs: %q %q", so.String(), se.String())
	}

	// a running pod: exec with stdin EOF, tty exec, port mapping, commit, stop
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	spec := fmt.Sprintf(`{"id":"core-srv","hostname":"coresrv","portmappings":[{"containerPort":"8080","hostPort":"%d"}],
		"files":[{"name":"f","content":"file content\n"}],"volumes":[{"name":"v"}],
		"containers":[{"image":"busybox","name":"cs","command":["sh","-c","echo ready; exec httpd -f -p 8080 -h /www"],
		"files":[{"path":"/www/f.txt","filename":"f","perm":"0644"}],"volumes":[{"path":"/data","volume":"v"}]}]}`, port)
	if _, err := c.CreatePod(ctx, []byte(spec)); err != nil {
		t.Fatal(err)
	}
	if err := c.StartPod(ctx, "core-srv"); err != nil {
		t.Fatalf("start: %v", err)
	}
	eid, _ := c.ExecCreate(ctx, "cs", []string{"cat"}, false)
	es, err := c.ExecStart(ctx, "cs", eid)
	if err != nil {
		t.Fatal(err)
	}
	so.Reset()
	es.Pump(false, strings.NewReader("via stdin\n"), &so, io.Discard)
	if so.String() != "via stdin\n" {
		t.Errorf("exec cat: %q", so.String())
	}
	eid, _ = c.ExecCreate(ctx, "cs", []string{"sh", "-c", "hostname; cat /www/f.txt; echo x > /data/x; ls /data"}, false)
	es, _ = c.ExecStart(ctx, "cs", eid)
	so.Reset()
	es.Pump(false, nil, &so, io.Discard)
	if so.String() != "coresrv\nfile content\nx\n" {
		t.Errorf("exec hostname/file/volume: %q", so.String())
	}
	if b, err := os.ReadFile(filepath.Join(dataRoot, "pods", "core-srv", "volumes", "v", "x")); err != nil || string(b) != "x\n" {
		t.Errorf("volume not shared with the host: %q %v", b, err)
	}
	var body string
	for i := 0; i < 50; i++ {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/f.txt", port))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if body != "file content\n" {
		t.Errorf("through the port mapping: %q", body)
	}
	if _, err := c.Commit(ctx, "cs", "", "", "", "", nil); err != nil {
		t.Errorf("commit: %v", err)
	}
	if ps, err := c.PodStats(ctx, "core-srv"); err != nil || len(ps.ContainerStats) != 1 {
		t.Errorf("stats: %+v %v", ps, err)
	}
	if err := c.StopPod(ctx, "core-srv"); err != nil {
		t.Errorf("stop: %v", err)
	}
	if code, _ := c.ExitCode(ctx, "cs", ""); code != 143 && code != 137 {
		t.Errorf("stopped container exit %d", code)
	}
	for _, p := range []string{"core-srv", "core-echo"} {
		if err := c.RemovePod(ctx, p); err != nil {
			t.Errorf("rm %s: %v", p, err)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// TestCoreRestartOnLocalDriver: a daemon that goes away without stopping
// anything (its state as after kill -9) is replaced by a new one on the same
// data root: the running pod is reattached through the real local driver,
// its logs are not duplicated, exec and restart policies work, and a pod
// whose agent was killed meanwhile is marked failed.
func TestCoreRestartOnLocalDriver(t *testing.T) {
	requireHost(t)
	bin := binaries(t)
	agent := filepath.Join(bin, "hyper-agent")
	rootfs := t.TempDir()
	unpackBusybox(t, rootfs)
	dataRoot, err := os.MkdirTemp("/tmp", "hcore")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dataRoot)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	imgs := &dirImages{root: rootfs, commits: map[string]int{}}
	open := func() *pod.Daemon {
		d, err := pod.New(pod.Config{DataRoot: dataRoot, Driver: local.New(agent), Images: imgs, Logger: log, StopTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d1 := open()
	create := func(d *pod.Daemon, js string) {
		s, _ := pod.DecodePodSpec([]byte(js))
		id, err := d.CreatePod(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.StartPod(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	create(d1, `{"id":"keep","containers":[{"image":"busybox","name":"k","command":["sh","-c","echo before; sleep 1000"]}]}`)
	create(d1, `{"id":"lose","containers":[{"image":"busybox","name":"l","command":["sleep","1000"]}]}`)
	create(d1, `{"id":"again","restartPolicy":"onFailure","containers":[{"image":"busybox","name":"a","command":["sh","-c","echo run; exit 1"]}]}`)
	logsOf := func(d *pod.Daemon, cid string) string {
		var b strings.Builder
		d.Logs(ctx, cid, pod.LogOptions{Stdout: true, Stderr: true, Tail: -1}, func(e pod.LogEntry) error { b.Write(e.Data); return nil })
		return b.String()
	}
	for i := 0; i < 100 && logsOf(d1, "k") != "before\n"; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	// restart policy: the container runs again and again
	for i := 0; i < 100 && strings.Count(logsOf(d1, "a"), "run\n") < 2; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if n := strings.Count(logsOf(d1, "a"), "run\n"); n < 2 {
		t.Errorf("onFailure container ran %d times", n)
	}
	d1.Close()
	// kill the "lose" pod's agent while no daemon runs
	if n := killProcs("--socket\x00" + filepath.Join(dataRoot, "pods", "lose")); n == 0 {
		t.Fatalf("could not find the agent process of pod lose")
	}
	time.Sleep(200 * time.Millisecond)
	d2 := open()
	defer d2.Close()
	if err := d2.WaitReattached(ctx); err != nil { // reattaches run in the background
		t.Fatal(err)
	}
	if pi, _ := d2.PodInfo("keep"); pi.Status.Phase != "Running" {
		t.Errorf("keep after restart: %+v", pi.Status)
	}
	if pi, _ := d2.PodInfo("lose"); pi.Status.Phase != "Failed" || pi.Status.Reason != "SandboxLost" {
		t.Errorf("lose after restart: %+v", pi.Status)
	}
	eid, err := d2.ExecCreate("k", []string{"echo", "after"}, false)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := d2.ExecStart(ctx, "k", eid)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(st.Stdout)
	if string(b) != "after\n" {
		t.Errorf("exec after reattach: %q", b)
	}
	time.Sleep(300 * time.Millisecond)
	if got := logsOf(d2, "k"); got != "before\n" {
		t.Errorf("logs after reattach: %q", got)
	}
	for _, p := range []string{"keep", "lose", "again"} {
		if err := d2.RemovePod(ctx, p); err != nil {
			t.Errorf("rm %s: %v", p, err)
		}
	}
}

// killProcs SIGKILLs every process whose command line contains sub
// (arguments NUL-separated, as in /proc/PID/cmdline) and returns how many.
func killProcs(sub string) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), sub) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}
