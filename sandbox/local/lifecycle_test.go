// This file tests a local sandbox's lifetime: reattaching after a
// daemon restart, surviving a killed daemon, an orphaned agent, and
// the errors of bad requests.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

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
