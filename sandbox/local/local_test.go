package local

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
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
	"golang.org/x/sys/unix"
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

func TestCommit(t *testing.T) {
	p := newPod(t)
	p.run("c", sandbox.Process{Args: []string{"sh", "-c", "echo new > /etc/old && rm /etc/gone && mkdir -p /data && echo x > /data/f && rm -rf /var && mkdir /var && echo y > /var/new"}})
	if st := p.wait("c", ""); st.Code != 0 {
		t.Fatalf("exit %d", st.Code)
	}
	rc, err := p.a.Commit(ctx(t), "c")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := imgtest.TarFiles(rc)
	if err != nil {
		t.Fatalf("layer tar: %v", err)
	}
	want := map[string]string{"etc/old": "new\n", "etc/.wh.gone": "", "data/f": "x\n", "var/.wh..wh..opq": "", "var/new": "y\n"}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("tar entry %s = %q (present %v), want %q; entries %v", k, g, ok, v, keys(got))
		}
	}
	for _, k := range []string{"etc/gone", "var/lib/old", "bin/busybox"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s is in the layer", k)
		}
	}
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

func TestReattachAndStats(t *testing.T) {
	p := newPod(t)
	p.run("s", sandbox.Process{Args: []string{"sh", "-c", "echo before; read x; echo after $x"}, OpenStdin: true})
	h := p.sb.Handle()
	if h.Driver != "local" || h.Data["pid"] == "" || h.Data["socket"] == "" {
		t.Fatalf("handle %+v", h)
	}
	// a new daemon process: a fresh driver and client from the handle
	sb2, err := testDriver().Reattach(ctx(t), h)
	if err != nil {
		t.Fatal(err)
	}
	a2 := sb2.Agent()
	sio, err := a2.Attach(ctx(t), "s", "", true)
	if err != nil {
		t.Fatal(err)
	}
	sio.Stdin.Write([]byte("again\n"))
	sio.Stdin.Close()
	if out := readAll(t, sio.Stdout); out != "before\nafter again\n" {
		t.Errorf("after reattach: %q", out)
	}
	st, err := a2.Stats(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Containers) != 1 || st.Containers[0].ID != "s" || st.CPUCount < 1 || st.MemTotal == 0 {
		t.Errorf("stats %+v", st)
	}
	hs, err := sb2.HostStats()
	if err != nil || hs.RSSBytes == 0 {
		t.Errorf("host stats %+v %v", hs, err)
	}
	// the old handle's process is the same: stopping via the reattached one ends both
	if err := sb2.Stop(ctx(t)); err != nil {
		t.Fatal(err)
	}
	for _, sb := range []sandbox.Sandbox{sb2, p.sb} {
		select {
		case <-sb.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("sandbox not done after Stop")
		}
	}
	if _, err := testDriver().Reattach(ctx(t), h); err == nil {
		t.Error("reattach to a stopped sandbox succeeded")
	}
}

func TestErrors(t *testing.T) {
	p := newPod(t)
	p.run("r", sandbox.Process{Args: []string{"sleep", "1000"}})
	c := ctx(t)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"unknown container", p.a.StartContainer(c, "nope"), "not_found"},
		{"duplicate", p.a.AddContainer(c, sandbox.ContainerSpec{ID: "r", Rootfs: p.rootfs, Process: sandbox.Process{Args: []string{"true"}}}), "conflict"},
		{"bad id", p.a.AddContainer(c, sandbox.ContainerSpec{ID: "../x", Rootfs: p.rootfs, Process: sandbox.Process{Args: []string{"true"}}}), "bad_request"},
		{"no rootfs", p.a.AddContainer(c, sandbox.ContainerSpec{ID: "x", Rootfs: "/nonexistent", Process: sandbox.Process{Args: []string{"true"}}}), "internal"},
		{"start twice", p.a.StartContainer(c, "r"), "conflict"},
		{"unknown exec", p.a.Signal(c, "r", "nope", 15), "not_found"},
		{"resize without tty", p.a.Resize(c, "r", "", 10, 10), "conflict"},
		{"unknown user", p.a.Exec(c, "r", "u", sandbox.Process{Args: []string{"true"}, User: "nosuchuser"}), "bad_request"},
	}
	for _, tt := range tests {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("%s: err %v, want code %s", tt.name, tt.err, tt.want)
		}
	}
	// a cancelled context ends a blocked Wait, and the connection stays usable
	wc, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := p.a.Wait(wc, "r", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait with deadline: %v", err)
	}
	if _, err := p.a.Ping(ctx(t)); err != nil {
		t.Errorf("ping after cancelled wait: %v", err)
	}
	if err := p.a.RemoveContainer(ctx(t), "r"); err != nil {
		t.Errorf("remove running container: %v", err)
	}
	if _, err := p.a.Wait(ctx(t), "r", ""); err == nil {
		t.Error("wait on a removed container succeeded")
	}
}

// readUntil reads r until it saw sep or EOF.
func readUntil(r io.Reader, sep string) string {
	var b []byte
	buf := make([]byte, 256)
	for !strings.Contains(string(b), sep) {
		n, err := r.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			break
		}
	}
	return string(b)
}

func TestVolumesFilesReadOnly(t *testing.T) {
	p := newPod(t)
	vol := t.TempDir()
	os.WriteFile(filepath.Join(vol, "in"), []byte("from host\n"), 0o644)
	outside := t.TempDir()
	// an image symlink pointing out of the root must resolve inside it
	os.Symlink(outside, filepath.Join(p.rootfs, "escape"))
	spec := sandbox.ContainerSpec{ID: "v", Rootfs: p.rootfs, ReadOnlyFS: true,
		Mounts: []sandbox.Mount{{Source: vol, Dest: "/data"}, {Source: vol, Dest: "/ro", ReadOnly: true}, {Source: vol, Dest: "/escape/vol"}},
		Files:  []sandbox.File{{Path: "/etc/app.conf", Content: []byte("k=v\n"), Mode: 0o600, UID: 65534}},
		Process: sandbox.Process{Args: []string{"sh", "-c",
			"cat /data/in; echo written > /data/out; cat /etc/app.conf; stat -c '%a %u' /etc/app.conf; " +
				"touch /ro/x 2>/dev/null || echo ro-volume; touch /newfile 2>/dev/null || echo ro-rootfs; cat /escape/vol/in"}}}
	want := "from host\nk=v\n600 65534\nro-volume\nro-rootfs\nfrom host\n"
	if out := p.stdout(spec); out != want {
		t.Errorf("got %q, want %q", out, want)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "out")); err != nil || string(b) != "written\n" {
		t.Errorf("volume write: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("a mount escaped the container root through a symlink: %v", ents)
	}
}

// TestSurvivesDaemonKill: a "daemon" process creates the sandbox and is
// killed with SIGKILL; a new driver reattaches from the handle.
func TestSurvivesDaemonKill(t *testing.T) {
	requireRoot(t)
	state, err := os.MkdirTemp("", "hyp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDaemon$")
	cmd.Env = append(os.Environ(), "HYPER_HELPER_DAEMON="+state, "HYPER_AGENT_BIN="+agentBin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := readUntil(stdout, "\n")
	cmd.Process.Kill()
	cmd.Wait()
	var h sandbox.Handle
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "HANDLE ")), &h); err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}
	sb, err := testDriver().Reattach(ctx(t), h)
	if err != nil {
		t.Fatalf("reattach after the daemon was killed: %v", err)
	}
	defer sb.Stop(ctx(t))
	lr, err := sb.Agent().Logs(ctx(t), "c", sandbox.LogOptions{Stdout: true, Tail: -1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	if r, err := lr.Next(); err != nil || string(r.Data) != "alive\n" {
		t.Fatalf("log %q %v", r.Data, err)
	}
}

// TestHelperDaemon is the killed daemon of TestSurvivesDaemonKill.
func TestHelperDaemon(t *testing.T) {
	state := os.Getenv("HYPER_HELPER_DAEMON")
	if state == "" {
		return // only meaningful as the helper process
	}
	rootfs := busyboxRootfsIn(t, filepath.Join(state, "rootfs"))
	sb, err := New(os.Getenv("HYPER_AGENT_BIN")).Create(ctx(t), sandbox.Config{ID: filepath.Base(state), StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	a := sb.Agent()
	if err := a.AddContainer(ctx(t), sandbox.ContainerSpec{ID: "c", Rootfs: rootfs, Process: sandbox.Process{Args: []string{"sh", "-c", "echo alive; exec sleep 1000"}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.StartContainer(ctx(t), "c"); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(sb.Handle())
	fmt.Printf("HANDLE %s\n", b)
	select {}
}

// TestBlockDeviceLower: the kvm path's rootfs (an ext4 block device as the
// overlay lower) exercised with a loop device.
func TestBlockDeviceLower(t *testing.T) {
	requireRoot(t)
	rootfs := busyboxRootfs(t)
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", rootfs, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 (e2fsprogs): %v %s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", "-r", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	// the device is one of the pod's disks: its device allow-list has it
	p := newPodConfig(t, testDriver(), func(c *sandbox.Config) { c.Disks = []sandbox.Disk{{HostPath: dev, ReadOnly: true}} })
	spec := sandbox.ContainerSpec{ID: "blk", Rootfs: dev, RootfsType: "ext4",
		Process: sandbox.Process{Args: []string{"sh", "-c", "cat /etc/old; echo changed > /etc/old; cat /etc/old"}}}
	if got := p.stdout(spec); got != "old\nchanged\n" {
		t.Errorf("got %q", got)
	}
	if st := p.wait("blk", ""); st.Code != 0 {
		t.Errorf("exit %d", st.Code)
	}
	if err := p.a.RemoveContainer(ctx(t), "blk"); err != nil {
		t.Fatal(err)
	}
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

// TestCgroupStats places containers in cgroup v2. This host may mount
// cgroup2 only at /sys/fs/cgroup/unified (hybrid): cpu.stat is there even
// without controllers; memory/pids need the controllers and are only
// checked when the hierarchy offers them.
func TestCgroupStats(t *testing.T) {
	parent := ""
	for _, base := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(base, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			parent = filepath.Join(base, "hyperd-test")
			break
		}
	}
	if parent == "" {
		t.Fatal("no cgroup2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	}
	t.Cleanup(func() { os.Remove(parent) })
	p := newPodWith(t, &Driver{AgentPath: agentBin, CgroupParent: parent})
	p.run("busy", sandbox.Process{Args: []string{"sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"}})
	if st := p.wait("busy", ""); st.Code != 0 {
		t.Fatalf("exit %d", st.Code)
	}
	cg := filepath.Join(parent, p.sb.ID(), "busy")
	if _, err := os.Stat(filepath.Join(cg, "cpu.stat")); err != nil {
		t.Fatalf("container cgroup %s: %v", cg, err)
	}
	st, err := p.a.Stats(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Containers) != 1 || st.Containers[0].CPUUsageNS < 10_000_000 || st.Containers[0].CPUUserNS == 0 {
		t.Errorf("stats after a busy loop: %+v", st.Containers)
	}
	ctrls, _ := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
	if strings.Contains(string(ctrls), "memory") && st.Containers[0].MemoryUsage == 0 {
		t.Errorf("memory controller present but no memory usage: %+v", st.Containers[0])
	}
	if err := p.sb.Stop(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(parent, p.sb.ID())); !os.IsNotExist(err) {
		t.Errorf("pod cgroup left after Stop: %v", err)
	}
}

// TestStatsSources checks per-container figures from cgroup v2 where the
// host has it, and from /proc when the cgroup parent is not on cgroup2.
func TestStatsSources(t *testing.T) {
	hostSource := "proc"
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		hostSource = "cgroup"
	}
	for _, tc := range []struct {
		name   string
		driver func(t *testing.T) *Driver
		want   string
	}{
		{"default", func(*testing.T) *Driver { return testDriver() }, hostSource},
		{"no-cgroup2", func(t *testing.T) *Driver {
			return &Driver{AgentPath: agentBin, CgroupParent: t.TempDir()}
		}, "proc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPodWith(t, tc.driver(t))
			// burn some CPU, then say so and sleep: shim + sleep are the processes
			p.run("busy", sandbox.Process{Args: []string{"sh", "-c",
				"i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo ready; exec sleep 1000"}})
			sio, err := p.a.Attach(ctx(t), "busy", "", false)
			if err != nil {
				t.Fatal(err)
			}
			defer sio.Stdout.Close()
			buf := make([]byte, 6)
			if _, err := io.ReadFull(sio.Stdout, buf); err != nil || string(buf) != "ready\n" {
				t.Fatalf("waiting for ready: %q %v", buf, err)
			}
			ps, err := p.a.Stats(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(ps.Containers) != 1 {
				t.Fatalf("stats %+v", ps)
			}
			c := ps.Containers[0]
			if c.ID != "busy" || c.Source != tc.want {
				t.Errorf("container %q source %q, want busy from %q", c.ID, c.Source, tc.want)
			}
			if c.Pids < 2 || c.MemoryUsage == 0 || c.WorkingSet == 0 || c.WorkingSet > c.MemoryUsage {
				t.Errorf("pids %d memory %d working set %d (want ≥2 pids: shim and sleep; memory > 0)", c.Pids, c.MemoryUsage, c.WorkingSet)
			}
			if c.CPUUsageNS == 0 || c.CPUUserNS+c.CPUSystemNS > c.CPUUsageNS+uint64(10*time.Millisecond) {
				t.Errorf("cpu usage %d user %d system %d after a busy loop", c.CPUUsageNS, c.CPUUserNS, c.CPUSystemNS)
			}
			if err := p.a.Signal(ctx(t), "busy", "", int(unix.SIGKILL)); err != nil {
				t.Fatal(err)
			}
			p.wait("busy", "")
			ps, err = p.a.Stats(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(ps.Containers) != 1 || ps.Containers[0].Pids != 0 {
				t.Errorf("after exit: %+v", ps.Containers)
			}
		})
	}
}

// TestOrphanAgentExits: an agent whose socket was deleted (the pod's state
// dir is gone) cannot be reached again and shuts itself down.
func TestOrphanAgentExits(t *testing.T) {
	p := newPod(t)
	p.run("c", sandbox.Process{Args: []string{"sleep", "1000"}})
	if err := os.Remove(p.sb.Handle().Data["socket"]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.sb.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("agent still running 15s after its socket was removed")
	}
}
