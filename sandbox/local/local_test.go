// This file holds the local driver tests' helpers (a pod on the driver, its
// processes' output) and the tests of processes: run, signals, exec and
// logs, ttys, stdin, attaching, localhost between containers.
package local

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/internal/userns"
	"github.com/hyperhq/hyperd-go/sandbox"
)

var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hyper-agent-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin = filepath.Join(dir, "hyper-agent")
	cmd := exec.Command("go", "build", "-o", agentBin, "github.com/hyperhq/hyperd-go/cmd/hyper-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building hyper-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testUserNS is the mapping the tests' pods use, hyperd's default: the
// suite runs with it, and once more with HYPERD_LOCAL_USERNS=off (make
// test) as hyperd --local-userns=off runs.
var testUserNS = userns.Map{Host: 1000000000, Size: 65536}

// testDriver is the local driver as hyperd runs it by default here.
func testDriver() *Driver {
	d := New(agentBin)
	if os.Getenv("HYPERD_LOCAL_USERNS") != "off" {
		m := testUserNS
		d.UserNS = &m
	}
	return d
}

// requireRoot fails (never skips) when the test cannot run.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests need root (namespaces, overlay mounts); run them as root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatal("/bin/busybox is missing: install Debian's busybox-static")
	}
}

// busyboxRootfs builds a rootfs of busybox-static with its applet links.
func busyboxRootfs(t testing.TB) string {
	t.Helper()
	return busyboxRootfsIn(t, t.TempDir())
}

func busyboxRootfsIn(t testing.TB, root string) string {
	t.Helper()
	if err := imgtest.Rootfs(root); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "etc/old"), []byte("old\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/gone"), []byte("gone\n"), 0o644)
	os.WriteFile(filepath.Join(root, "var/lib/old"), []byte("old\n"), 0o644)
	return root
}

type pod struct {
	t      testing.TB
	sb     sandbox.Sandbox
	a      sandbox.Agent
	rootfs string
}

func newPod(t testing.TB) *pod {
	t.Helper()
	return newPodWith(t, testDriver())
}

func newPodWith(t testing.TB, d *Driver) *pod {
	t.Helper()
	return newPodConfig(t, d, nil)
}

// newPodConfig is newPodWith with the sandbox config changed by mod.
func newPodConfig(t testing.TB, d *Driver, mod func(*sandbox.Config)) *pod {
	t.Helper()
	requireRoot(t)
	state, err := os.MkdirTemp("", "hyp")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := sandbox.Config{ID: filepath.Base(state), Hostname: "podhost", DNS: []string{"10.0.0.1"}, StateDir: state}
	if mod != nil {
		mod(&cfg)
	}
	sb, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{t: t, sb: sb, a: sb.Agent(), rootfs: busyboxRootfs(t)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sb.Stop(ctx)
		select {
		case <-sb.Done():
		case <-time.After(5 * time.Second):
			t.Error("sandbox not done after Stop")
		}
		os.RemoveAll(state)
	})
	return p
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func (p *pod) run(id string, proc sandbox.Process) {
	p.t.Helper()
	if err := p.a.AddContainer(ctx(p.t), sandbox.ContainerSpec{ID: id, Rootfs: p.rootfs, Process: proc}); err != nil {
		p.t.Fatalf("add %s: %v", id, err)
	}
	if err := p.a.StartContainer(ctx(p.t), id); err != nil {
		p.t.Fatalf("start %s: %v", id, err)
	}
}

// stdout adds and starts a container and returns its whole stdout.
func (p *pod) stdout(spec sandbox.ContainerSpec) string {
	p.t.Helper()
	if err := p.a.AddContainer(ctx(p.t), spec); err != nil {
		p.t.Fatal(err)
	}
	if err := p.a.StartContainer(ctx(p.t), spec.ID); err != nil {
		p.t.Fatal(err)
	}
	sio, err := p.a.Attach(ctx(p.t), spec.ID, "", false)
	if err != nil {
		p.t.Fatal(err)
	}
	return readAll(p.t, sio.Stdout)
}

func readAll(t testing.TB, r io.Reader) string {
	t.Helper()
	if r == nil {
		return ""
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func (p *pod) wait(id, exec string) sandbox.ExitStatus {
	p.t.Helper()
	st, err := p.a.Wait(ctx(p.t), id, exec)
	if err != nil {
		p.t.Fatalf("wait %s/%s: %v", id, exec, err)
	}
	return st
}

func TestRun(t *testing.T) {
	p := newPod(t)
	tests := []struct {
		name           string
		args           []string
		user           string
		stdout, stderr string
		code           int
	}{
		{"echo", []string{"echo", "hello"}, "", "hello\n", "", 0},
		{"exit code", []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, "", "out\n", "err\n", 3},
		{"own pid namespace, shim is pid 1", []string{"cat", "/proc/1/comm"}, "", "hyper-agent\n", "", 0},
		{"hostname and dns", []string{"sh", "-c", "hostname; cat /etc/resolv.conf"}, "", "podhost\nnameserver 10.0.0.1\n", "", 0},
		{"user by name", []string{"id", "-u"}, "nobody", "65534\n", "", 0},
		{"uid:gid", []string{"sh", "-c", "id -u; id -g"}, "123:456", "123\n456\n", "", 0},
		{"agent socket not inherited", []string{"sh", "-c", "readlink /proc/$$/fd/3 2>/dev/null || echo none"}, "", "none\n", "", 0},
		{"no mount or mknod for container root", []string{"sh", "-c", "mount -t tmpfs t /tmp 2>/dev/null && echo mounted; mknod /tmp/sda b 8 0 2>/dev/null && echo mknod; echo done"}, "", "done\n", "", 0},
		{"missing binary", []string{"/nonexistent"}, "", "", "", -1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("run%d", i)
			err := p.a.AddContainer(ctx(t), sandbox.ContainerSpec{ID: id, Rootfs: p.rootfs, Process: sandbox.Process{Args: tt.args, User: tt.user}})
			if err != nil {
				t.Fatal(err)
			}
			defer p.a.RemoveContainer(ctx(t), id)
			err = p.a.StartContainer(ctx(t), id)
			if tt.code < 0 {
				if err == nil {
					t.Fatal("start of a missing binary succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sio, err := p.a.Attach(ctx(t), id, "", false)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var stderr string
			wg.Add(1)
			go func() { defer wg.Done(); stderr = readAll(t, sio.Stderr) }()
			stdout := readAll(t, sio.Stdout)
			wg.Wait()
			if stdout != tt.stdout || stderr != tt.stderr {
				t.Errorf("stdout %q stderr %q, want %q %q", stdout, stderr, tt.stdout, tt.stderr)
			}
			if st := p.wait(id, ""); st.Code != tt.code {
				t.Errorf("exit code %d, want %d", st.Code, tt.code)
			}
		})
	}
}

func TestSignals(t *testing.T) {
	p := newPod(t)
	tests := []struct {
		sig, code int
	}{{15, 143}, {9, 137}}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.sig), func(t *testing.T) {
			id := fmt.Sprintf("sig%d", tt.sig)
			p.run(id, sandbox.Process{Args: []string{"sleep", "1000"}})
			time.Sleep(100 * time.Millisecond)
			if err := p.a.Signal(ctx(t), id, "", tt.sig); err != nil {
				t.Fatal(err)
			}
			st := p.wait(id, "")
			if st.Code != tt.code || st.Signal != tt.sig {
				t.Errorf("got code %d signal %d, want %d %d", st.Code, st.Signal, tt.code, tt.sig)
			}
		})
	}
}

func TestExecAndLogs(t *testing.T) {
	p := newPod(t)
	p.run("c", sandbox.Process{Args: []string{"sh", "-c", "echo started; echo warn >&2; exec sleep 1000"}})
	if err := p.a.Exec(ctx(t), "c", "e1", sandbox.Process{Args: []string{"sh", "-c", "for i in $(seq 50); do ps -o comm | grep -q sleep && break; sleep 0.1; done; ps -o comm | grep -c sleep; exit 7"}}); err != nil {
		t.Fatal(err)
	}
	sio, err := p.a.Attach(ctx(t), "c", "e1", false)
	if err != nil {
		t.Fatal(err)
	}
	if out := readAll(t, sio.Stdout); out != "1\n" {
		t.Errorf("exec saw %q sleep processes, want 1", out)
	}
	if st := p.wait("c", "e1"); st.Code != 7 {
		t.Errorf("exec exit %d, want 7", st.Code)
	}
	if err := p.a.Signal(ctx(t), "c", "", 9); err != nil {
		t.Fatal(err)
	}
	p.wait("c", "")
	// logs after exit
	tests := []struct {
		name string
		opt  sandbox.LogOptions
		want []string
	}{
		{"all", sandbox.LogOptions{Stdout: true, Stderr: true, Tail: -1}, []string{"stdout:started\n", "stderr:warn\n"}},
		{"stdout", sandbox.LogOptions{Stdout: true, Tail: -1}, []string{"stdout:started\n"}},
		{"tail 1", sandbox.LogOptions{Stdout: true, Stderr: true, Tail: 1}, nil},
		{"follow after exit ends", sandbox.LogOptions{Stdout: true, Stderr: true, Tail: -1, Follow: true}, []string{"stdout:started\n", "stderr:warn\n"}},
		{"since future", sandbox.LogOptions{Stdout: true, Stderr: true, Tail: -1, Since: time.Now().Add(time.Hour)}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr, err := p.a.Logs(ctx(t), "c", tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			defer lr.Close()
			var got []string
			for {
				r, err := lr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if r.Time.IsZero() {
					t.Error("record without timestamp")
				}
				got = append(got, r.Stream+":"+string(r.Data))
			}
			if tt.want == nil { // tail 1: exactly one record, the last one
				if len(got) != 1 {
					t.Errorf("tail 1 gave %q", got)
				}
				return
			}
			// stdout and stderr are separate pipes: their relative order is not defined
			sort.Strings(got)
			sort.Strings(tt.want)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTTYResize(t *testing.T) {
	p := newPod(t)
	p.run("t", sandbox.Process{Args: []string{"sh", "-c", "stty size; read x; stty size"}, Tty: true, OpenStdin: true, Width: 80, Height: 24})
	sio, err := p.a.Attach(ctx(t), "t", "", true)
	if err != nil {
		t.Fatal(err)
	}
	if sio.Stderr != nil {
		t.Error("tty attach has a stderr stream")
	}
	buf := make([]byte, 0, 256)
	readUntil := func(s string) {
		t.Helper()
		tmp := make([]byte, 256)
		for !strings.Contains(string(buf), s) {
			n, err := sio.Stdout.Read(tmp)
			buf = append(buf, tmp[:n]...)
			if err != nil {
				t.Fatalf("reading tty: %v (so far %q)", err, buf)
			}
		}
	}
	readUntil("24 80")
	if err := p.a.Resize(ctx(t), "t", "", 100, 40); err != nil {
		t.Fatal(err)
	}
	if _, err := sio.Stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	readUntil("40 100")
	if st := p.wait("t", ""); st.Code != 0 {
		t.Errorf("exit %d", st.Code)
	}
	sio.Stdin.Close()
}

func TestLargeOutput(t *testing.T) {
	newPod(t).largeOutput("big", 10<<20)
}

// largeOutput runs a container printing size random bytes and checks that
// every byte arrives (sha256 against the one computed in the container).
func (p *pod) largeOutput(name string, size int64) {
	t := p.t
	t.Helper()
	p.run(name, sandbox.Process{Args: []string{"sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > /tmp/d; sha256sum /tmp/d >&2; cat /tmp/d", size)}})
	sio, err := p.a.Attach(ctx(t), name, "", false)
	if err != nil {
		t.Fatal(err)
	}
	var errOut string
	done := make(chan struct{})
	go func() { errOut = readAll(t, sio.Stderr); close(done) }()
	h := sha256.New()
	n, err := io.Copy(h, sio.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if n != size {
		t.Fatalf("got %d bytes, want %d (stderr %q)", n, size, errOut)
	}
	if want := strings.Fields(errOut); len(want) == 0 || want[0] != fmt.Sprintf("%x", h.Sum(nil)) {
		t.Fatalf("checksum %x, container says %q", h.Sum(nil), errOut)
	}
	if st := p.wait(name, ""); st.Code != 0 {
		t.Errorf("%s: exit %d", name, st.Code)
	}
}

func TestStdinEOF(t *testing.T) {
	p := newPod(t)
	p.run("cat", sandbox.Process{Args: []string{"cat"}, OpenStdin: true})
	sio, err := p.a.Attach(ctx(t), "cat", "", true)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("line of input\n"), 1000)
	go func() {
		sio.Stdin.Write(data)
		sio.Stdin.Close()
	}()
	if out := readAll(t, sio.Stdout); out != string(data) {
		t.Errorf("cat echoed %d bytes, want %d", len(out), len(data))
	}
	if st := p.wait("cat", ""); st.Code != 0 {
		t.Errorf("cat exit %d after stdin EOF", st.Code)
	}
}

func TestLocalhostBetweenContainers(t *testing.T) {
	p := newPod(t)
	p.run("server", sandbox.Process{Args: []string{"nc", "-l", "-p", "8080", "-e", "sh", "-c", "read x; echo pong-$x"}})
	var out string
	for i := 0; i < 50; i++ {
		id := fmt.Sprintf("client%d", i)
		p.run(id, sandbox.Process{Args: []string{"sh", "-c", "(echo ping; sleep 5) | nc 127.0.0.1 8080"}})
		sio, err := p.a.Attach(ctx(t), id, "", false)
		if err != nil {
			t.Fatal(err)
		}
		out = readUntil(sio.Stdout, "\n")
		p.a.Signal(ctx(t), id, "", 9)
		p.wait(id, "")
		if out == "pong-ping\n" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out != "pong-ping\n" {
		t.Fatalf("client got %q", out)
	}
	if st := p.wait("server", ""); st.Code != 0 {
		t.Errorf("server exit %d", st.Code)
	}
	// the daemon's port-mapping path: Dial inside the pod
	p.run("server2", sandbox.Process{Args: []string{"nc", "-l", "-p", "8081", "-e", "sh", "-c", "read x; echo hi-$x"}})
	var conn io.ReadWriteCloser
	for i := 0; i < 50 && conn == nil; i++ {
		c, err := p.a.Dial(ctx(t), "tcp", 8081)
		if err == nil {
			conn = c
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if conn == nil {
		t.Fatal("dial 8081 never succeeded")
	}
	conn.Write([]byte("x\n"))
	if got := readAll(t, conn); got != "hi-x\n" {
		t.Errorf("dial read %q", got)
	}
	conn.Close()
}

// TestAttachBeforeStart: streams opened before the start see the first byte.
func TestAttachBeforeStart(t *testing.T) {
	p := newPod(t)
	if err := p.a.AddContainer(ctx(t), sandbox.ContainerSpec{ID: "early", Rootfs: p.rootfs, Process: sandbox.Process{Args: []string{"sh", "-c", "read x; echo first-$x"}, OpenStdin: true}}); err != nil {
		t.Fatal(err)
	}
	sio, err := p.a.Attach(ctx(t), "early", "", true)
	if err != nil {
		t.Fatal(err)
	}
	sio.Stdin.Write([]byte("byte\n")) // before the process exists
	sio.Stdin.Close()
	lr, err := p.a.Logs(ctx(t), "early", sandbox.LogOptions{Stdout: true, Tail: -1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	if err := p.a.StartContainer(ctx(t), "early"); err != nil {
		t.Fatal(err)
	}
	if out := readAll(t, sio.Stdout); out != "first-byte\n" {
		t.Errorf("attach: %q", out)
	}
	if r, err := lr.Next(); err != nil || string(r.Data) != "first-byte\n" {
		t.Errorf("logs: %q %v", r.Data, err)
	}
	if _, err := lr.Next(); err != io.EOF {
		t.Errorf("logs follow after exit: %v, want EOF", err)
	}
}

// TestExecSignalAndAttachers: signals reach an exec; several attachers
// each get the whole output.
func TestExecSignalAndAttachers(t *testing.T) {
	p := newPod(t)
	p.run("c", sandbox.Process{Args: []string{"sleep", "1000"}})
	if err := p.a.Exec(ctx(t), "c", "sl", sandbox.Process{Args: []string{"sh", "-c", "echo up; exec sleep 1000"}}); err != nil {
		t.Fatal(err)
	}
	var outs [3]sandbox.Stdio
	for i := range outs {
		s, err := p.a.Attach(ctx(t), "c", "sl", false)
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = s
	}
	if got := readUntil(outs[0].Stdout, "\n"); got != "up\n" {
		t.Fatalf("exec output %q", got)
	}
	if err := p.a.Signal(ctx(t), "c", "sl", 15); err != nil {
		t.Fatal(err)
	}
	if st := p.wait("c", "sl"); st.Code != 143 || st.Signal != 15 {
		t.Errorf("exec after SIGTERM: %+v", st)
	}
	for i := 1; i < len(outs); i++ {
		if got := readAll(t, outs[i].Stdout); got != "up\n" {
			t.Errorf("attacher %d got %q", i, got)
		}
	}
	// the container itself is unaffected
	if err := p.a.Exec(ctx(t), "c", "true", sandbox.Process{Args: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	if st := p.wait("c", "true"); st.Code != 0 {
		t.Errorf("exec true: %+v", st)
	}
}
