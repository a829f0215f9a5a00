package guest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/client"
	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/sandbox"
)

const podHostname = "guestpod"

// TestGuest boots one VM and runs every case against its agent, in
// order; the last one shuts the guest down.
func TestGuest(t *testing.T) {
	t0 := time.Now()
	marker := randomHex(8)
	v := bootVM(t, marker)
	t.Logf("QEMU start → agent READY over %s: %v (TCG, %d vCPU, %d MiB)", agentDev, v.ready.Round(time.Millisecond), guestCPU, guestMiB)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(v.diag())
		}
		// HYPERD_GUEST_CONSOLE=FILE keeps the whole guest console
		if keep := os.Getenv("HYPERD_GUEST_CONSOLE"); keep != "" {
			if err := os.WriteFile(keep, []byte(v.consoleText()), 0o644); err != nil {
				t.Errorf("keeping the console: %v", err)
			}
		}
		t.Logf("total wall time %v", time.Since(t0).Round(time.Millisecond))
	})
	p := &pod{a: v.agent}
	if err := p.a.Setup(ctx(t), protocol.PodSetup{Hostname: podHostname, DNS: []string{"10.0.2.3"}}); err != nil {
		t.Fatalf("setup: %v", err)
	}
	_, _, modules := prerequisites(t)
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"init", func(t *testing.T) { testInit(t, v) }},
		{"modules", func(t *testing.T) { testModules(t, p, modules) }},
		{"overlay root on virtio-blk", func(t *testing.T) { testRootfs(t, p, marker) }},
		{"namespaces", func(t *testing.T) { testNamespaces(t, p) }},
		{"exit codes", func(t *testing.T) { testExitCodes(t, p) }},
		{"signals", func(t *testing.T) { testSignals(t, p) }},
		{"exec", func(t *testing.T) { testExec(t, p) }},
		{"tty resize", func(t *testing.T) { testTTY(t, p) }},
		{"large stdout", func(t *testing.T) { testLargeOutput(t, p) }},
		{"slow host reader", func(t *testing.T) { testSlowReader(t, v, p) }},
		{"stdin EOF", func(t *testing.T) { testStdinEOF(t, p) }},
		{"localhost", func(t *testing.T) { testLocalhost(t, p) }},
		{"cgroup stats", func(t *testing.T) { testCgroupStats(t, p) }},
		{"commit", func(t *testing.T) { testCommit(t, p) }},
		{"shutdown", func(t *testing.T) { testShutdown(t, v, p) }},
	}
	for _, c := range cases {
		t.Run(c.name, c.run)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// pod is the guest's agent seen as sandbox.Agent; every container's
// rootfs is the ext4 image on /dev/vda.
type pod struct{ a *client.Client }

func (p *pod) spec(id string, proc sandbox.Process) sandbox.ContainerSpec {
	return sandbox.ContainerSpec{ID: id, Rootfs: "/dev/vda", RootfsType: "ext4", Process: proc}
}

// run adds and starts a container, removed when t ends.
func (p *pod) run(t testing.TB, id string, proc sandbox.Process) {
	t.Helper()
	p.runSpec(t, p.spec(id, proc))
}

func (p *pod) runSpec(t testing.TB, s sandbox.ContainerSpec) {
	t.Helper()
	if err := p.a.AddContainer(ctx(t), s); err != nil {
		t.Fatalf("add %s: %v", s.ID, err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.a.RemoveContainer(c, s.ID); err != nil {
			t.Errorf("remove %s: %v", s.ID, err)
		}
	})
	if err := p.a.StartContainer(ctx(t), s.ID); err != nil {
		t.Fatalf("start %s: %v", s.ID, err)
	}
}

func (p *pod) wait(t testing.TB, id, exec string) sandbox.ExitStatus {
	t.Helper()
	st, err := p.a.Wait(ctx(t), id, exec)
	if err != nil {
		t.Fatalf("wait %s/%s: %v", id, exec, err)
	}
	return st
}

// output attaches to a process and reads its stdout and stderr to EOF.
func (p *pod) output(t testing.TB, id, exec string) (stdout, stderr string) {
	t.Helper()
	sio, err := p.a.Attach(ctx(t), id, exec, false)
	if err != nil {
		t.Fatalf("attach %s/%s: %v", id, exec, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); stderr = readAll(t, sio.Stderr) }()
	stdout = readAll(t, sio.Stdout)
	wg.Wait()
	return stdout, stderr
}

// sh runs a container with sh -c script to its end: stdout, stderr, exit code.
func (p *pod) sh(t testing.TB, id, script string) (string, string, int) {
	t.Helper()
	p.run(t, id, sandbox.Process{Args: []string{"sh", "-c", script}})
	out, errOut := p.output(t, id, "")
	return out, errOut, p.wait(t, id, "").Code
}

// ioTimeout bounds every read from a guest stream: a hung guest fails the
// case instead of the whole test binary.
const ioTimeout = 60 * time.Second

// bound sets a read deadline on a stream (mux streams have them).
func bound(r io.Reader) {
	if d, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		d.SetReadDeadline(time.Now().Add(ioTimeout))
	}
}

func readAll(t testing.TB, r io.Reader) string {
	if r == nil {
		return ""
	}
	bound(r)
	b, err := io.ReadAll(r)
	if err != nil {
		t.Errorf("read: %v", err)
	}
	return string(b)
}

// readUntil reads r until it saw sep, EOF or an error.
func readUntil(r io.Reader, sep string) string {
	bound(r)
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

// testInit: PID 1's setup (InitVM) reported no error on the console.
func testInit(t *testing.T, v *vm) {
	con := v.consoleText()
	if !strings.Contains(con, "Run /init as init process") {
		t.Errorf("the kernel never ran /init")
	}
	for _, l := range strings.Split(con, "\n") {
		if strings.Contains(l, "hyper-agent: ") {
			t.Errorf("agent complained on the console: %s", l)
		}
	}
}

// testModules: every module of the initramfs's load order is loaded, and
// the filesystems the containers use are registered.
func testModules(t *testing.T, p *pod, modules string) {
	order, err := os.ReadFile(filepath.Join(modules, "order"))
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := p.sh(t, "modules", "cat /proc/modules; echo ---; cat /proc/filesystems")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	mods, fss, _ := strings.Cut(out, "---\n")
	loaded := map[string]bool{}
	for _, l := range strings.Split(mods, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			loaded[f[0]] = true
		}
	}
	want := strings.Fields(string(order))
	if len(want) == 0 {
		t.Fatal("empty module order")
	}
	for _, m := range want {
		if name := strings.TrimSuffix(m, ".ko"); !loaded[name] {
			t.Errorf("module %s not loaded; /proc/modules:\n%s", name, mods)
		}
	}
	for _, fs := range []string{"overlay", "ext4", "cgroup2", "devpts", "tmpfs"} {
		if !regexp.MustCompile(`(?m)\s` + fs + `$`).MatchString(fss) {
			t.Errorf("filesystem %s not registered; /proc/filesystems:\n%s", fs, fss)
		}
	}
}

// testRootfs: the container's root is an overlay whose lower is the ext4
// image on the read-only virtio-blk disk; writes go to the container's
// own upper dir; a read-only root refuses them.
func testRootfs(t *testing.T, p *pod, marker string) {
	out, errOut, code := p.sh(t, "root1",
		"cat /etc/marker; awk '$2 == \"/\" {print $1, $3}' /proc/mounts; cat /sys/block/vda/ro; "+
			"echo changed > /etc/marker && cat /etc/marker; touch /newfile && echo created")
	want := marker + "\noverlay overlay\n1\nchanged\ncreated\n"
	if out != want || code != 0 {
		t.Errorf("got %q (exit %d, stderr %q), want %q", out, code, errOut, want)
	}
	// another container sees the image, not the first one's changes
	out, errOut, code = p.sh(t, "root2", "cat /etc/marker; ls /newfile 2>&1 >/dev/null | grep -c 'No such file'")
	if want := marker + "\n1\n"; out != want || code != 0 {
		t.Errorf("second container: got %q (exit %d, stderr %q), want %q", out, code, errOut, want)
	}
	// a read-only root with a file written into it by the agent
	s := p.spec("root3", sandbox.Process{Args: []string{"sh", "-c", "cat /etc/app.conf; stat -c '%a %u' /etc/app.conf; touch /x 2>/dev/null || echo read-only"}})
	s.ReadOnlyFS = true
	s.Files = []sandbox.File{{Path: "/etc/app.conf", Content: []byte("k=v\n"), Mode: 0o600, UID: 65534}}
	p.runSpec(t, s)
	out, errOut = p.output(t, "root3", "")
	if want := "k=v\n600 65534\nread-only\n"; out != want {
		t.Errorf("read-only root: got %q (stderr %q), want %q", out, errOut, want)
	}
}

// testNamespaces: each container has its own pid, mount, uts and ipc
// namespace (the shim is its pid 1, the guest's PID 1 and kernel threads
// are not visible, its hostname is its own) and shares the network
// namespace. The containers run at the same time: namespace inode numbers
// are recycled once a namespace is gone.
func testNamespaces(t *testing.T, p *pod) {
	script := "hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; ps -o comm > /tmp/ps; sort -u /tmp/ps | tr '\\n' ' '; echo; " +
		"for n in pid mnt uts ipc net; do readlink /proc/self/ns/$n; done; echo END; exec sleep 1000"
	type view struct {
		hostname, pid1, procs string
		ns                    map[string]string
	}
	views := map[string]view{}
	for _, c := range []struct{ id, hostname, want string }{
		{"ns-a", "alpha", "alpha"},
		{"ns-b", "bravo", "bravo"},
		{"ns-pod", "", podHostname}, // the pod's hostname, untouched by the others
	} {
		s := p.spec(c.id, sandbox.Process{Args: []string{"sh", "-c", script}})
		s.Hostname = c.hostname
		p.runSpec(t, s)
		sio, err := p.a.Attach(ctx(t), c.id, "", false)
		if err != nil {
			t.Fatal(err)
		}
		out := readUntil(sio.Stdout, "END\n")
		sio.Stdout.Close()
		sio.Stderr.Close()
		l := strings.Split(out, "\n")
		if len(l) != 10 || l[8] != "END" {
			t.Fatalf("%s: unexpected output %q", c.id, out)
		}
		v := view{hostname: l[0], pid1: l[1], procs: l[2], ns: map[string]string{}}
		for i, n := range []string{"pid", "mnt", "uts", "ipc", "net"} {
			v.ns[n] = l[3+i]
		}
		views[c.id] = v
		if v.hostname != c.want {
			t.Errorf("%s: hostname %q, want %q", c.id, v.hostname, c.want)
		}
		if v.pid1 != "hyper-agent init " {
			t.Errorf("%s: pid 1 runs %q, want the shim (hyper-agent init), not the guest's /init", c.id, v.pid1)
		}
		// the shim (comm "hyper-agent", which it names itself), sh and
		// ps: nothing of the guest
		if v.procs != "COMMAND hyper-agent ps sh " {
			t.Errorf("%s: processes visible: %q, want only the shim, sh and ps", c.id, v.procs)
		}
	}
	a, b := views["ns-a"], views["ns-b"]
	for _, n := range []string{"pid", "mnt", "uts", "ipc"} {
		if !strings.HasPrefix(a.ns[n], n+":[") || a.ns[n] == b.ns[n] {
			t.Errorf("%s namespace shared between containers: %q %q", n, a.ns[n], b.ns[n])
		}
	}
	if !strings.HasPrefix(a.ns["net"], "net:[") || a.ns["net"] != b.ns["net"] {
		t.Errorf("network namespace not shared in the pod: %q %q", a.ns["net"], b.ns["net"])
	}
}

func testExitCodes(t *testing.T, p *pod) {
	tests := []struct {
		name           string
		args           []string
		stdout, stderr string
		code           int
	}{
		{"echo", []string{"echo", "hello"}, "hello\n", "", 0},
		{"exit 3 with both streams", []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, "out\n", "err\n", 3},
		{"false", []string{"false"}, "", "", 1},
		{"user nobody", []string{"id", "-u"}, "65534\n", "", 0},
		{"resolv.conf from the pod setup", []string{"cat", "/etc/resolv.conf"}, "nameserver 10.0.2.3\n", "", 0},
		{"missing binary", []string{"/nonexistent"}, "", "", -1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("exit%d", i)
			proc := sandbox.Process{Args: tt.args}
			if tt.name == "user nobody" {
				proc.User = "nobody"
			}
			if err := p.a.AddContainer(ctx(t), p.spec(id, proc)); err != nil {
				t.Fatal(err)
			}
			defer p.a.RemoveContainer(ctx(t), id)
			err := p.a.StartContainer(ctx(t), id)
			if tt.code < 0 {
				if err == nil {
					t.Fatal("start of a missing binary succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			stdout, stderr := p.output(t, id, "")
			if stdout != tt.stdout || stderr != tt.stderr {
				t.Errorf("stdout %q stderr %q, want %q %q", stdout, stderr, tt.stdout, tt.stderr)
			}
			if st := p.wait(t, id, ""); st.Code != tt.code {
				t.Errorf("exit code %d, want %d", st.Code, tt.code)
			}
		})
	}
}

func testSignals(t *testing.T, p *pod) {
	for _, tt := range []struct{ sig, code int }{{15, 143}, {9, 137}} {
		t.Run(fmt.Sprint(tt.sig), func(t *testing.T) {
			id := fmt.Sprintf("sig%d", tt.sig)
			p.run(t, id, sandbox.Process{Args: []string{"sh", "-c", "echo up; exec sleep 1000"}})
			sio, err := p.a.Attach(ctx(t), id, "", false)
			if err != nil {
				t.Fatal(err)
			}
			defer sio.Stdout.Close()
			if got := readUntil(sio.Stdout, "\n"); got != "up\n" {
				t.Fatalf("before the signal: %q", got)
			}
			if err := p.a.Signal(ctx(t), id, "", tt.sig); err != nil {
				t.Fatal(err)
			}
			if st := p.wait(t, id, ""); st.Code != tt.code || st.Signal != tt.sig {
				t.Errorf("got code %d signal %d, want %d %d", st.Code, st.Signal, tt.code, tt.sig)
			}
		})
	}
}

// testExec: an exec joins the running container (its pid and uts
// namespaces, its root) and has its own exit code and signals.
func testExec(t *testing.T, p *pod) {
	s := p.spec("ex", sandbox.Process{Args: []string{"sh", "-c", "echo started > /tmp/mark; exec sleep 1000"}})
	s.Hostname = "exechost"
	p.runSpec(t, s)
	// The mark is written before the container's sh execs sleep: wait for
	// both, or the count can catch sh still being sh.
	script := "for i in $(seq 100); do [ -e /tmp/mark ] && ps -o comm | grep -q sleep && break; sleep 0.1; done; " +
		"ps -o comm | grep -c sleep; hostname; cat /tmp/mark; exit 7"
	if err := p.a.Exec(ctx(t), "ex", "e1", sandbox.Process{Args: []string{"sh", "-c", script}}); err != nil {
		t.Fatal(err)
	}
	if out, errOut := p.output(t, "ex", "e1"); out != "1\nexechost\nstarted\n" {
		t.Errorf("exec saw %q (stderr %q), want the container's one sleep, hostname and file", out, errOut)
	}
	if st := p.wait(t, "ex", "e1"); st.Code != 7 {
		t.Errorf("exec exit %d, want 7", st.Code)
	}
	if err := p.a.Exec(ctx(t), "ex", "e2", sandbox.Process{Args: []string{"sleep", "1000"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.a.Signal(ctx(t), "ex", "e2", 15); err != nil {
		t.Fatal(err)
	}
	if st := p.wait(t, "ex", "e2"); st.Code != 143 {
		t.Errorf("exec after SIGTERM: %+v", st)
	}
	if err := p.a.Exec(ctx(t), "ex", "e3", sandbox.Process{Args: []string{"true"}}); err != nil {
		t.Errorf("the container did not survive its exec's signal: %v", err)
	} else if st := p.wait(t, "ex", "e3"); st.Code != 0 {
		t.Errorf("exec true: %+v", st)
	}
}

func testTTY(t *testing.T, p *pod) {
	p.run(t, "tty", sandbox.Process{Args: []string{"sh", "-c", "stty size; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; read x; stty size"}, Tty: true, OpenStdin: true, Width: 80, Height: 24})
	sio, err := p.a.Attach(ctx(t), "tty", "", true)
	if err != nil {
		t.Fatal(err)
	}
	if sio.Stderr != nil {
		t.Error("tty attach has a stderr stream")
	}
	if got := readUntil(sio.Stdout, "is-a-tty"); !strings.Contains(got, "24 80") || !strings.Contains(got, "is-a-tty") {
		t.Fatalf("before resize: %q, want 24 80 and stdin/stdout a tty", got)
	}
	if err := p.a.Resize(ctx(t), "tty", "", 100, 40); err != nil {
		t.Fatal(err)
	}
	if _, err := sio.Stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if got := readUntil(sio.Stdout, "40 100"); !strings.Contains(got, "40 100") {
		t.Errorf("after resize: %q, want 40 100", got)
	}
	if st := p.wait(t, "tty", ""); st.Code != 0 {
		t.Errorf("exit %d", st.Code)
	}
	sio.Stdin.Close()
	sio.Stdout.Close()
}

// testLargeOutput: a few MB of random stdout arrive intact (sha256
// computed in the guest) through the agent's record file and the mux.
func testLargeOutput(t *testing.T, p *pod) {
	d := bigOutput(t, p, "big", 4<<20)
	t.Logf("4 MiB of stdout in %v after the first byte: %.1f MiB/s over the agent channel", d.Round(time.Millisecond), 4/d.Seconds())
}

// testSlowReader: the host reads the agent channel in bursts with pauses
// (a loaded CI machine deschedules the test process), so QEMU's chardev
// socket fills and its writes would block. The channel must then hold
// the guest's writes back; a virtconsole (rather than a virtserialport)
// drops the bytes QEMU could not write, and the mux session dies on a
// garbled frame header (a fresh-clone CI run lost large_stdout so).
func testSlowReader(t *testing.T, v *vm, p *pod) {
	v.conn.stall(128<<10, 300*time.Millisecond)
	defer v.conn.stall(0, 0)
	bigOutput(t, p, "slow", 2<<20)
}

// bigOutput runs a container writing size random bytes to stdout (and
// their sha256 to stderr), reads them all and checks them; it returns the
// time from the first byte to EOF.
func bigOutput(t *testing.T, p *pod, id string, size int64) time.Duration {
	t.Helper()
	p.run(t, id, sandbox.Process{Args: []string{"sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > /tmp/d; sha256sum /tmp/d >&2; cat /tmp/d", size)}})
	sio, err := p.a.Attach(ctx(t), id, "", false)
	if err != nil {
		t.Fatal(err)
	}
	var errOut string
	done := make(chan struct{})
	go func() { errOut = readAll(t, sio.Stderr); close(done) }()
	bound(sio.Stdout)
	h := sha256.New()
	first := make([]byte, 1)
	if _, err := io.ReadFull(sio.Stdout, first); err != nil {
		t.Fatalf("first byte: %v", err)
	}
	t0 := time.Now()
	h.Write(first)
	n, err := io.Copy(h, sio.Stdout)
	d := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if n+1 != size {
		t.Fatalf("got %d bytes, want %d (stderr %q)", n+1, size, errOut)
	}
	if want := strings.Fields(errOut); len(want) == 0 || want[0] != fmt.Sprintf("%x", h.Sum(nil)) {
		t.Fatalf("checksum %x, the guest says %q", h.Sum(nil), errOut)
	}
	if st := p.wait(t, id, ""); st.Code != 0 {
		t.Errorf("exit %d", st.Code)
	}
	return d
}

func testStdinEOF(t *testing.T, p *pod) {
	p.run(t, "cat", sandbox.Process{Args: []string{"cat"}, OpenStdin: true})
	sio, err := p.a.Attach(ctx(t), "cat", "", true)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("line of input\n"), 5000)
	go func() {
		sio.Stdin.Write(data)
		sio.Stdin.Close()
	}()
	if out := readAll(t, sio.Stdout); out != string(data) {
		t.Errorf("cat echoed %d bytes, want %d", len(out), len(data))
	}
	if st := p.wait(t, "cat", ""); st.Code != 0 {
		t.Errorf("cat exit %d after stdin EOF", st.Code)
	}
}

// testLocalhost: two containers talk over the pod's loopback (lo brought
// up by PID 1), and the daemon's port-mapping path (dial) reaches one.
func testLocalhost(t *testing.T, p *pod) {
	p.run(t, "server", sandbox.Process{Args: []string{"nc", "-l", "-p", "8080", "-e", "sh", "-c", "read x; echo pong-$x-$(hostname)"}})
	var out string
	for i := 0; i < 50; i++ {
		id := fmt.Sprintf("client%d", i)
		p.run(t, id, sandbox.Process{Args: []string{"sh", "-c", "(echo ping; sleep 10) | nc 127.0.0.1 8080"}})
		sio, err := p.a.Attach(ctx(t), id, "", false)
		if err != nil {
			t.Fatal(err)
		}
		out = readUntil(sio.Stdout, "\n")
		sio.Stdout.Close()
		sio.Stderr.Close()
		p.a.Signal(ctx(t), id, "", 9)
		p.wait(t, id, "")
		if out == "pong-ping-"+podHostname+"\n" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out != "pong-ping-"+podHostname+"\n" {
		t.Fatalf("client got %q", out)
	}
	if st := p.wait(t, "server", ""); st.Code != 0 {
		t.Errorf("server exit %d", st.Code)
	}
	p.run(t, "server2", sandbox.Process{Args: []string{"nc", "-l", "-p", "8081", "-e", "sh", "-c", "read x; echo hi-$x"}})
	var conn io.ReadWriteCloser
	for i := 0; i < 50 && conn == nil; i++ {
		if c, err := p.a.Dial(ctx(t), "tcp", 8081); err == nil {
			conn = c
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if conn == nil {
		t.Fatal("dial 8081 in the guest never succeeded")
	}
	defer conn.Close()
	conn.Write([]byte("x\n"))
	if got := readAll(t, conn); got != "hi-x\n" {
		t.Errorf("dial read %q", got)
	}
}

// testCgroupStats: containers are placed in cgroup v2 under
// /sys/fs/cgroup/hyperd with the cpu, memory and pids controllers
// delegated down to them (seen through a read-only bind of the guest's
// cgroup2 mount), and stats report plausible figures from there.
func testCgroupStats(t *testing.T, p *pod) {
	t0 := time.Now()
	s := p.spec("cg", sandbox.Process{Args: []string{"sh", "-c",
		"i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; head -c 8000000 /dev/zero > /tmp/fill; " +
			"cat /proc/self/cgroup /cg/cgroup.subtree_control /cg/hyperd/cgroup.subtree_control /cg/hyperd/cg/cgroup.controllers; " +
			"echo ready; exec sleep 1000"}})
	s.Mounts = []sandbox.Mount{{Source: "/sys/fs/cgroup", Dest: "/cg", ReadOnly: true}}
	p.runSpec(t, s)
	sio, err := p.a.Attach(ctx(t), "cg", "", false)
	if err != nil {
		t.Fatal(err)
	}
	defer sio.Stdout.Close()
	defer sio.Stderr.Close()
	out := readUntil(sio.Stdout, "ready\n")
	if want := "0::/hyperd/cg\n" + strings.Repeat("cpu memory pids\n", 3) + "ready\n"; out != want {
		t.Errorf("container's cgroup, the subtree_control of / and /hyperd, its controllers:\n%q, want\n%q", out, want)
	}
	st, err := p.a.Stats(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	wall := time.Since(t0)
	if st.CPUCount != guestCPU {
		t.Errorf("cpu_count %d, want %d", st.CPUCount, guestCPU)
	}
	if st.MemTotal < guestMiB<<20*7/10 || st.MemTotal > guestMiB<<20 {
		t.Errorf("mem_total %d, want about %d MiB", st.MemTotal, guestMiB)
	}
	var c *sandbox.ContainerStats
	for i := range st.Containers {
		if st.Containers[i].ID == "cg" {
			c = &st.Containers[i]
		}
	}
	if c == nil {
		t.Fatalf("no stats for cg: %+v", st.Containers)
	}
	t.Logf("cg: cpu %v (user %v, system %v) in %v wall, memory %d KiB (working set %d KiB), %d pids",
		time.Duration(c.CPUUsageNS), time.Duration(c.CPUUserNS), time.Duration(c.CPUSystemNS), wall.Round(time.Millisecond), c.MemoryUsage>>10, c.WorkingSet>>10, c.Pids)
	if c.Source != "cgroup" {
		t.Errorf("source %q, want cgroup", c.Source)
	}
	if c.CPUUsageNS < uint64(10*time.Millisecond) || c.CPUUserNS == 0 || c.CPUUsageNS > uint64(wall)*uint64(st.CPUCount) {
		t.Errorf("cpu usage %d ns (user %d) after a busy loop, within %v wall on %d cpus", c.CPUUsageNS, c.CPUUserNS, wall, st.CPUCount)
	}
	// the 8 MB file in the container's tmpfs-backed upper dir is charged to it
	if c.MemoryUsage < 8<<20 || c.MemoryUsage > st.MemTotal || c.WorkingSet == 0 || c.WorkingSet > c.MemoryUsage {
		t.Errorf("memory %d working set %d (mem_total %d), want ≥ 8 MiB", c.MemoryUsage, c.WorkingSet, st.MemTotal)
	}
	// tasks: the shim's threads (a Go program) and sleep
	if c.Pids < 2 || c.Pids > 32 {
		t.Errorf("pids %d, want the shim's threads and sleep (2..32)", c.Pids)
	}
	if err := p.a.Signal(ctx(t), "cg", "", 9); err != nil {
		t.Fatal(err)
	}
	p.wait(t, "cg", "")
	st, err = p.a.Stats(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Containers {
		if c.ID == "cg" && c.Pids != 0 {
			t.Errorf("after exit: %+v", c)
		}
	}
}

// testCommit: the container's changes come back as a layer with an OCI
// whiteout for the deleted file and an opaque dir for the replaced one.
func testCommit(t *testing.T, p *pod) {
	_, errOut, code := p.sh(t, "commit", "echo new > /etc/old && rm /etc/gone && mkdir -p /data && echo x > /data/f && rm -rf /var && mkdir /var && echo y > /var/new")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	rc, err := p.a.Commit(ctx(t), "commit")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := imgtest.TarFiles(rc)
	if err != nil {
		t.Fatalf("layer tar: %v", err)
	}
	names := make([]string, 0, len(got))
	for k := range got {
		names = append(names, k)
	}
	sort.Strings(names)
	want := map[string]string{"etc/old": "new\n", "etc/.wh.gone": "", "data/f": "x\n", "var/.wh..wh..opq": "", "var/new": "y\n"}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("layer entry %s = %q (present %v), want %q; entries %v", k, g, ok, v, names)
		}
	}
	for _, k := range []string{"etc/gone", "var/lib/old", "bin/busybox", "etc/marker"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s is in the layer", k)
		}
	}
}

// testShutdown: with a container still running, shutdown removes it and
// the guest powers off: QEMU exits by itself, successfully.
func testShutdown(t *testing.T, v *vm, p *pod) {
	if err := p.a.AddContainer(ctx(t), p.spec("last", sandbox.Process{Args: []string{"sleep", "1000"}})); err != nil {
		t.Fatal(err)
	}
	if err := p.a.StartContainer(ctx(t), "last"); err != nil {
		t.Fatal(err)
	}
	if err := p.a.Shutdown(ctx(t)); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := v.waitExit(60 * time.Second); err != nil {
		t.Fatalf("QEMU after shutdown: %v (the guest did not power off)", err)
	}
	if !strings.Contains(v.consoleText(), "reboot: Power down") {
		t.Errorf("no power-down message on the guest console")
	}
}
