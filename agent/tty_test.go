package agent

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// TestMain lets the test binary stand in for hyper-agent: the server
// re-executes cfg.Self as "hyper-agent init" for each container shim.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		if err := RunInit(); err != nil {
			fmt.Fprintln(os.Stderr, "hyper-agent init:", err)
		}
		os.Exit(1)
	}
	code := m.Run()
	if srv.s != nil {
		srv.s.Shutdown()
		os.RemoveAll(srv.s.cfg.StateDir)
	}
	os.Exit(code)
}

// srv is the tests' agent: one per test process (also with -count N), as
// its reaper waits for every child of the process.
var srv struct {
	once sync.Once
	s    *Server
	err  error
}

// testServer returns the agent, serving nothing: the tests call its
// methods. Containers are removed by the tests that add them.
func testServer(t *testing.T) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (namespaces, overlay mounts): run the agent tests as root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatal("/bin/busybox is missing: install Debian's busybox-static")
	}
	srv.once.Do(func() {
		self, err := os.Executable()
		if err != nil {
			srv.err = err
			return
		}
		state, err := os.MkdirTemp("", "agent-tty")
		if err != nil {
			srv.err = err
			return
		}
		srv.s, srv.err = NewServer(Config{StateDir: state, Self: self})
	})
	if srv.err != nil {
		t.Fatalf("starting the agent: %v", srv.err)
	}
	return srv.s
}

// testRootfs is a minimal busybox root with the applets the tests use.
func testRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "tty", "stty", "ps", "sleep", "cat", "echo", "ls", "readlink", "test", "stat", "tr", "sed", "grep"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	return root
}

// procOutput waits for p to exit and returns its whole output.
func procOutput(t *testing.T, p *process) (string, protocol.ExitStatus) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("process did not exit in 30s")
	}
	r, err := p.out.open(false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	var b strings.Builder
	rec, err := r.next()
	for ; err == nil; rec, err = r.next() {
		b.Write(rec.data)
	}
	if err != io.EOF {
		t.Fatalf("reading the output records: %v", err)
	}
	return b.String(), p.status
}

// startContainer adds and starts a container, removed when the test ends.
func startContainer(t *testing.T, s *Server, spec protocol.ContainerSpec) *container {
	t.Helper()
	if perr := s.add(spec); perr != nil {
		t.Fatal(perr)
	}
	t.Cleanup(func() { s.remove(spec.ID) })
	c, perr := s.get(spec.ID)
	if perr != nil {
		t.Fatal(perr)
	}
	if perr := c.start(); perr != nil {
		t.Fatal(perr)
	}
	return c
}

// ttyScript prints what a process sees of its terminal: the tty name, the
// slave as listed in the container's own /dev/pts, the size, the process's
// terminal in ps, and whether the shell's job control works.
const ttyScript = `t=$(tty); echo "tty=$t"; ls /dev/pts/ | tr '\n' ' ' | sed 's/^/pts=/'; echo; ` +
	`echo "size=$(stty size)"; echo "owner=$(stat -c %u "$t")"; ` +
	`ps -o pid,tty,comm | sed 's/^/ps: /'; ` +
	`sh -ic 'sleep 0.1 & fg %1 >/dev/null && echo jobs-ok' 2>&1`

var ttyLine = regexp.MustCompile(`tty=/dev/pts/(\d+)\r?\n`)

func checkTTYOutput(t *testing.T, what, out string, size string) {
	t.Helper()
	m := ttyLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: tty does not print /dev/pts/N: %q", what, out)
	}
	if !regexp.MustCompile(`pts=.*\b` + m[1] + `\b`).MatchString(out) {
		t.Errorf("%s: /dev/pts/%s is not in the container's /dev/pts: %q", what, m[1], out)
	}
	if !strings.Contains(out, "size="+size) {
		t.Errorf("%s: stty size is not %s: %q", what, size, out)
	}
	// busybox ps shows the terminal as major,minor: 136 is the pts major
	if !regexp.MustCompile(`ps: +\d+ 136,` + m[1] + ` +ps\r?\n`).MatchString(out) {
		t.Errorf("%s: ps does not show itself on pts/%s: %q", what, m[1], out)
	}
	if !strings.Contains(out, "jobs-ok") {
		t.Errorf("%s: job control (sh -i, fg) does not work: %q", what, out)
	}
}

// TestTTYInsideContainer: a tty process (main or exec) gets a terminal of
// the container's own devpts instance, so tty, ps and job control work
// inside the container, and resize reaches it.
func TestTTYInsideContainer(t *testing.T) {
	s := testServer(t)
	rootfs := testRootfs(t)

	t.Run("main", func(t *testing.T) {
		spec := protocol.ContainerSpec{ID: "ttymain", Rootfs: rootfs, Process: protocol.Process{
			Args: []string{"sh", "-c", ttyScript}, Tty: true, Width: 80, Height: 24}}
		c := startContainer(t, s, spec)
		p, _ := c.proc("")
		out, st := procOutput(t, p)
		checkTTYOutput(t, "main", out, "24 80")
		if st.Code != 0 {
			t.Errorf("exit %d: %q", st.Code, out)
		}
	})

	t.Run("exec", func(t *testing.T) {
		spec := protocol.ContainerSpec{ID: "ttyexec", Rootfs: rootfs, Process: protocol.Process{Args: []string{"sleep", "1000"}}}
		c := startContainer(t, s, spec)
		// a user other than root owns its terminal
		if perr := c.exec("e1", protocol.Process{Args: []string{"sh", "-c", ttyScript}, Tty: true, Width: 100, Height: 30, User: "nobody"}); perr != nil {
			t.Fatal(perr)
		}
		p, _ := c.proc("e1")
		out, st := procOutput(t, p)
		checkTTYOutput(t, "exec", out, "30 100")
		if !strings.Contains(out, "owner=65534") {
			t.Errorf("the terminal of a nobody exec is not owned by nobody: %q", out)
		}
		if st.Code != 0 {
			t.Errorf("exit %d: %q", st.Code, out)
		}
		// a second tty exec gets a terminal of its own; a non-tty exec has none
		// (without a size: 80x24, not 0x0 on which stty size fails)
		if perr := c.exec("e2", protocol.Process{Args: []string{"sh", "-c", "tty; stty size"}, Tty: true}); perr != nil {
			t.Fatal(perr)
		}
		p2, _ := c.proc("e2")
		out2, _ := procOutput(t, p2)
		if !regexp.MustCompile(`^/dev/pts/\d+\r?\n24 80\r?\n$`).MatchString(out2) {
			t.Errorf("second tty exec, no size given: %q, want /dev/pts/N and 24 80", out2)
		}
		if perr := c.exec("e3", protocol.Process{Args: []string{"tty"}}); perr != nil {
			t.Fatal(perr)
		}
		p3, _ := c.proc("e3")
		if out3, st3 := procOutput(t, p3); !strings.Contains(out3, "not a tty") || st3.Code == 0 {
			t.Errorf("non-tty exec: %q exit %d", out3, st3.Code)
		}
	})

	t.Run("resize", func(t *testing.T) {
		spec := protocol.ContainerSpec{ID: "ttyresize", Rootfs: rootfs, Process: protocol.Process{
			Args: []string{"sh", "-c", "stty size; read x; stty size"}, Tty: true, OpenStdin: true, Width: 80, Height: 24}}
		c := startContainer(t, s, spec)
		p, _ := c.proc("")
		if perr := p.resize(100, 40); perr != nil {
			t.Fatal(perr)
		}
		p.stdinMu.Lock()
		in := p.stdin
		p.stdinMu.Unlock()
		if in == nil {
			t.Fatal("no stdin for an open_stdin tty process")
		}
		if _, err := in.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
		out, _ := procOutput(t, p)
		if !strings.Contains(out, "40 100") {
			t.Errorf("after resize: %q", out)
		}
	})
}
