// This file tests attach and exec streams: they end, and free their agent
// streams, fds and goroutines, when the client goes.
package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// hupDriver is the podtest driver whose agents hand out real unix socket
// pairs as attach streams, like the agent client over the local driver's
// socket: the agent's end of each is held open, the process being silent,
// until the host closes its end (the agent notices by reading), so a stream
// the host never closes stays visible in open and in the fd count.
type hupDriver struct {
	*podtest.Driver
	open  atomic.Int64 // agent ends not yet closed
	mu    sync.Mutex
	tty   map[string]bool          // process key -> tty
	execs map[string]chan struct{} // running execs, closed when they end
}

func (d *hupDriver) Create(ctx context.Context, cfg sandbox.Config) (sandbox.Sandbox, error) {
	sb, err := d.Driver.Create(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &hupSandbox{Sandbox: sb, ag: &hupAgent{Agent: sb.Agent(), d: d}}, nil
}

// endExecs makes every exec exit.
func (d *hupDriver) endExecs() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, ch := range d.execs {
		close(ch)
		delete(d.execs, k)
	}
}

// pair returns the host end of a socket pair whose agent end is read until
// the host closes, then closed.
func (d *hupDriver) pair() (*net.UnixConn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "stream")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, err
		}
		conns[i] = c.(*net.UnixConn)
	}
	d.open.Add(1)
	go func() {
		io.Copy(io.Discard, conns[1])
		conns[1].Close()
		d.open.Add(-1)
	}()
	return conns[0], nil
}

type hupSandbox struct {
	sandbox.Sandbox
	ag *hupAgent
}

func (s *hupSandbox) Agent() sandbox.Agent { return s.ag }

type hupAgent struct {
	sandbox.Agent
	d *hupDriver
}

func (a *hupAgent) AddContainer(ctx context.Context, spec sandbox.ContainerSpec) error {
	a.d.mu.Lock()
	a.d.tty[spec.ID] = spec.Process.Tty
	a.d.mu.Unlock()
	return a.Agent.AddContainer(ctx, spec)
}

func (a *hupAgent) Exec(ctx context.Context, cid, eid string, p sandbox.Process) error {
	a.d.mu.Lock()
	defer a.d.mu.Unlock()
	a.d.tty[cid+"/"+eid] = p.Tty
	a.d.execs[cid+"/"+eid] = make(chan struct{})
	return nil
}

func (a *hupAgent) Wait(ctx context.Context, cid, eid string) (sandbox.ExitStatus, error) {
	if eid == "" {
		return a.Agent.Wait(ctx, cid, eid)
	}
	a.d.mu.Lock()
	ch := a.d.execs[cid+"/"+eid]
	a.d.mu.Unlock()
	if ch == nil {
		return sandbox.ExitStatus{}, nil
	}
	select {
	case <-ch:
		return sandbox.ExitStatus{}, nil
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

func (a *hupAgent) Attach(ctx context.Context, cid, eid string, stdin bool) (sandbox.Stdio, error) {
	key := cid
	if eid != "" {
		key += "/" + eid
	}
	a.d.mu.Lock()
	tty := a.d.tty[key]
	a.d.mu.Unlock()
	var st sandbox.Stdio
	var err error
	if st.Stdout, err = a.d.pair(); err != nil {
		return st, err
	}
	if !tty {
		if st.Stderr, err = a.d.pair(); err != nil {
			return st, err
		}
	}
	if stdin {
		if st.Stdin, err = a.d.pair(); err != nil {
			return st, err
		}
	}
	return st, nil
}

// hupEnv serves the API on a unix socket (as hyperd does) over hupDriver.
func hupEnv(t *testing.T) (*client.Client, *hupDriver) {
	t.Helper()
	drv := &hupDriver{Driver: podtest.NewDriver(), tty: map[string]bool{}, execs: map[string]chan struct{}{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := pod.New(pod.Config{DataRoot: t.TempDir(), Driver: drv, Images: &podtest.Images{Root: t.TempDir()}, Logger: log, StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "hup")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "hyper.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: (&api.Server{Pods: d, Log: log, Version: "test"}).Handler()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close(); d.Close(); os.RemoveAll(dir) })
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return c, drv
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// settle polls f until it holds, failing after 5s with what f last said.
func settle(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, state := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached in 5s: %s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStreamsEndWhenTheClientGoes: clients that attach (or start an exec),
// then go away, leave nothing behind: the agent's streams are closed, and
// the host's fd and goroutine counts return to what they were, for a
// silent process (no write ever fails), whatever the client did first
// (half-close, as hyperctl and docker do without stdin, or an abrupt
// close), and for a container that never started (the attach waits for its
// start only while the client is there). Before the fix each stream held
// its client connection, the agent's sockets and its goroutines until the
// process wrote or the pod stopped.
func TestStreamsEndWhenTheClientGoes(t *testing.T) {
	const n = 8
	tests := []struct {
		name    string
		pod     string // pod spec; %s is the pod id
		start   bool
		exec    bool
		stdin   bool
		half    bool // half-close before closing
		streams int  // agent streams per client while attached
	}{
		{name: "running/stdin/abrupt close", pod: `{"id":"%s","containers":[{"image":"sleeper","name":"c"}]}`, start: true, stdin: true, streams: 3},
		{name: "running/no stdin/half then close", pod: `{"id":"%s","containers":[{"image":"sleeper","name":"c"}]}`, start: true, half: true, streams: 2},
		{name: "running/tty/half then close", pod: `{"id":"%s","tty":true,"containers":[{"image":"sleeper","name":"c"}]}`, start: true, stdin: true, half: true, streams: 2},
		{name: "never started", pod: `{"id":"%s","containers":[{"image":"sleeper","name":"c"}]}`, stdin: true, streams: 0},
		{name: "exec/half then close", pod: `{"id":"%s","containers":[{"image":"sleeper","name":"c"}]}`, start: true, exec: true, half: true, streams: 3},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, drv := hupEnv(t)
			cx := ctx(t)
			id := fmt.Sprintf("p%d", i)
			if _, err := c.CreatePod(cx, []byte(fmt.Sprintf(tc.pod, id))); err != nil {
				t.Fatal(err)
			}
			if tc.start {
				if err := c.StartPod(cx, id); err != nil {
					t.Fatal(err)
				}
			}
			var eids []string
			for range n {
				if tc.exec {
					eid, err := c.ExecCreate(cx, "c", []string{"sleep"}, false)
					if err != nil {
						t.Fatal(err)
					}
					eids = append(eids, eid)
				}
			}
			runtime.GC()
			fds0, gor0 := countFDs(t), runtime.NumGoroutine()
			var streams []*client.Stream
			for k := range n {
				var st *client.Stream
				var err error
				if tc.exec {
					st, err = c.ExecStart(cx, "c", eids[k])
				} else {
					st, err = c.Attach(cx, "c", tc.stdin)
				}
				if err != nil {
					t.Fatal(err)
				}
				streams = append(streams, st)
			}
			// the server is past the upgrade; running ones hold their agent streams
			settle(t, "streams attached", func() (bool, string) {
				return drv.open.Load() == int64(n*tc.streams), fmt.Sprintf("%d agent streams open, want %d", drv.open.Load(), n*tc.streams)
			})
			if fds := countFDs(t); fds < fds0+n {
				t.Fatalf("fds %d with %d clients attached, from %d: the test does not see them", fds, n, fds0)
			}
			for _, st := range streams {
				if tc.half {
					st.Conn.(interface{ CloseWrite() error }).CloseWrite()
				}
				st.Conn.Close()
			}
			settle(t, "agent streams closed", func() (bool, string) {
				return drv.open.Load() == 0, fmt.Sprintf("%d agent streams still open", drv.open.Load())
			})
			settle(t, "host fds back to baseline", func() (bool, string) {
				fds := countFDs(t)
				return fds <= fds0, fmt.Sprintf("%d fds, baseline %d", fds, fds0)
			})
			drv.endExecs() // their watchers end with them
			settle(t, "goroutines back to baseline", func() (bool, string) {
				g := runtime.NumGoroutine()
				return g <= gor0, fmt.Sprintf("%d goroutines, baseline %d", g, gor0)
			})
			// the daemon still serves the container
			if tc.start {
				st, err := c.Attach(cx, "c", false)
				if err != nil {
					t.Fatal(err)
				}
				st.Conn.Close()
			}
		})
	}
}
