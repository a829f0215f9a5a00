package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// Dialer opens a new byte stream to the agent (a unix socket, a vsock
// CONNECT). The client opens one control connection and one connection per
// stream (stdio, logs, dial, commit).
type Dialer func(ctx context.Context) (net.Conn, error)

// ErrClosed is returned by calls on a closed client or after the control
// connection broke.
var ErrClosed = errors.New("agent client: connection closed")

// Client implements sandbox.Agent over agent/PROTOCOL.md.
type Client struct {
	dial Dialer
	conn net.Conn
	// wsem serializes writes on conn (a channel, not a mutex, so a caller
	// whose deadline passes stops queueing behind a write that hangs).
	wsem chan struct{}
	// timeouts bound each call (see opTimeouts); hello bounds a stream's
	// hello exchange. Tests shorten them.
	timeouts map[string]time.Duration
	hello    time.Duration
	probe    time.Duration // bounds the ping after a timed-out call (probeAfter)
	mu       sync.Mutex
	nextID   uint64
	pending  map[uint64]chan protocol.Response
	err      error
	done     chan struct{}
	agent    string
}

var _ sandbox.Agent = (*Client)(nil)

// New dials the control connection and exchanges hellos.
func New(ctx context.Context, dial Dialer) (*Client, error) {
	conn, rep, err := open(ctx, dial, protocol.Hello{Kind: protocol.KindControl})
	if err != nil {
		return nil, err
	}
	c := newClient(dial, conn, rep.Agent)
	go c.readLoop()
	return c, nil
}

// NewConn is New with an already connected control stream (e.g. the
// kvm driver's first vsock CONNECT); dial is still used for streams.
func NewConn(ctx context.Context, conn net.Conn, dial Dialer) (*Client, error) {
	used := false
	first := func(ctx context.Context) (net.Conn, error) {
		if used {
			return nil, errors.New("agent client: control connection already used")
		}
		used = true
		return conn, nil
	}
	c, rep, err := open(ctx, first, protocol.Hello{Kind: protocol.KindControl})
	if err != nil {
		return nil, err
	}
	cl := newClient(dial, c, rep.Agent)
	go cl.readLoop()
	return cl, nil
}

func newClient(dial Dialer, conn net.Conn, agent string) *Client {
	return &Client{dial: dial, conn: conn, wsem: make(chan struct{}, 1), timeouts: opTimeouts, hello: helloTimeout, probe: probeTimeout,
		pending: map[uint64]chan protocol.Response{}, done: make(chan struct{}), agent: agent}
}

// UnixDialer dials a unix socket path.
func UnixDialer(path string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

func open(ctx context.Context, dial Dialer, h protocol.Hello) (net.Conn, protocol.HelloReply, error) {
	h.Version = protocol.Version
	conn, err := dial(ctx)
	if err != nil {
		return nil, protocol.HelloReply{}, fmt.Errorf("agent: dial: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	var rep protocol.HelloReply
	err = protocol.WriteJSON(conn, h)
	if err == nil {
		err = protocol.ReadJSON(conn, &rep)
	}
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, rep, fmt.Errorf("agent: hello: %w", err)
	}
	conn.SetDeadline(time.Time{})
	if rep.Error != nil {
		conn.Close()
		return nil, rep, rep.Error
	}
	if rep.Version != protocol.Version {
		conn.Close()
		return nil, rep, fmt.Errorf("agent: protocol version %d, want %d", rep.Version, protocol.Version)
	}
	return conn, rep, nil
}

func (c *Client) readLoop() {
	var err error
	for {
		var resp protocol.Response
		if err = protocol.ReadJSON(c.conn, &resp); err != nil {
			break
		}
		c.mu.Lock()
		ch, ok := c.pending[resp.ID]
		delete(c.pending, resp.ID)
		c.mu.Unlock()
		if ok {
			ch <- resp
		}
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	}
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.done)
}

// call sends one request and decodes the result into out (may be nil).
// It is bounded by ctx and by the op's timeout (timeouts.go): a hung agent
// yields a timeoutError, never a hung caller.
func (c *Client) call(ctx context.Context, op string, body, out any) error {
	var raw json.RawMessage
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		raw = b
	}
	ctx, cancel := withTimeout(ctx, op, c.opTimeout(op))
	defer cancel()
	ch := make(chan protocol.Response, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}
	if err := c.write(ctx, protocol.Request{ID: id, Op: op, Body: raw}); err != nil {
		forget()
		return fmt.Errorf("agent %s: %w", op, err)
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			return err
		}
		if resp.Error != nil {
			return resp.Error
		}
		if out != nil {
			if err := json.Unmarshal(resp.Result, out); err != nil {
				return fmt.Errorf("agent %s: bad result: %w", op, err)
			}
		}
		return nil
	case <-ctx.Done():
		forget()
		return c.probeAfter(ctxErr(ctx))
	}
}

// write sends one request frame, bounded by ctx: waiting for the writes
// queued before it, and the write itself. A write cut short by the
// deadline may have sent part of a frame, which leaves the control
// connection unusable: it is closed (every call then fails with ErrClosed
// and the sandbox's watcher sees the agent gone).
func (c *Client) write(ctx context.Context, req protocol.Request) error {
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctxErr(ctx)
	}
	defer func() { <-c.wsem }()
	var mu sync.Mutex
	finished := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		if !finished {
			c.conn.SetWriteDeadline(time.Unix(1, 0))
		}
		mu.Unlock()
	})
	err := protocol.WriteJSON(c.conn, req)
	mu.Lock()
	finished = true
	mu.Unlock()
	if !stop() {
		c.conn.SetWriteDeadline(time.Time{}) // the deadline may have been set
	}
	if err != nil {
		c.fail(err)
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		return err
	}
	return nil
}

// fail breaks the control connection after a failed write.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("%w: write: %v", ErrClosed, err)
	}
	c.mu.Unlock()
	c.conn.Close()
}

// open opens a stream with its hello bounded by ctx and the client's hello
// timeout; the stream itself is not bounded.
func (c *Client) open(ctx context.Context, h protocol.Hello) (net.Conn, protocol.HelloReply, error) {
	hctx, cancel := withTimeout(ctx, "hello "+h.Kind, c.hello)
	defer cancel()
	conn, rep, err := open(hctx, c.dial, h)
	if err != nil && hctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("agent: %w", ctxErr(hctx))
	}
	return conn, rep, err
}

// Version implements sandbox.Agent.
func (c *Client) Version(ctx context.Context) (string, error) {
	var v protocol.VersionReply
	if err := c.call(ctx, protocol.OpVersion, nil, &v); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s (protocol %d)", v.Agent, v.Protocol), nil
}

// Ping implements sandbox.Agent.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	t := time.Now()
	err := c.call(ctx, protocol.OpPing, nil, nil)
	return time.Since(t), err
}

// Setup implements sandbox.Agent: the pod's hostname, DNS (written into
// each container's /etc/resolv.conf), network, and in a VM its clock and
// RNG (OpSetupPod).
func (c *Client) Setup(ctx context.Context, s protocol.PodSetup) error {
	return c.call(ctx, protocol.OpSetupPod, s, nil)
}

func toProcess(p sandbox.Process) protocol.Process {
	return protocol.Process{Args: p.Args, Env: p.Env, Cwd: p.Cwd, User: p.User, Tty: p.Tty, OpenStdin: p.OpenStdin, Width: p.Width, Height: p.Height}
}

// AddContainer implements sandbox.Agent.
func (c *Client) AddContainer(ctx context.Context, s sandbox.ContainerSpec) error {
	spec := protocol.ContainerSpec{ID: s.ID, Hostname: s.Hostname, Rootfs: s.Rootfs, RootfsType: s.RootfsType,
		Process: toProcess(s.Process), ReadOnlyFS: s.ReadOnlyFS, Sysctl: s.Sysctl}
	for _, m := range s.Mounts {
		spec.Mounts = append(spec.Mounts, protocol.Mount{Source: m.Source, FSType: m.FSType, Dest: m.Dest, ReadOnly: m.ReadOnly})
	}
	for _, f := range s.Files {
		spec.Files = append(spec.Files, protocol.File{Path: f.Path, Content: f.Content, Mode: f.Mode, UID: f.UID, GID: f.GID})
	}
	// each chunk of a big file is a call of its own, bounded as such
	if err := c.stageFiles(ctx, &spec); err != nil {
		return err
	}
	return c.call(ctx, protocol.OpAdd, spec, nil)
}

// StartContainer implements sandbox.Agent.
func (c *Client) StartContainer(ctx context.Context, id string) error {
	return c.call(ctx, protocol.OpStart, protocol.ContainerRef{Container: id}, nil)
}

// Exec implements sandbox.Agent.
func (c *Client) Exec(ctx context.Context, containerID, execID string, p sandbox.Process) error {
	return c.call(ctx, protocol.OpExec, protocol.ExecRequest{Container: containerID, Exec: execID, Process: toProcess(p)}, nil)
}

// Signal implements sandbox.Agent.
func (c *Client) Signal(ctx context.Context, containerID, execID string, sig int) error {
	return c.call(ctx, protocol.OpSignal, protocol.SignalRequest{Container: containerID, Exec: execID, Signal: sig}, nil)
}

// Wait implements sandbox.Agent.
func (c *Client) Wait(ctx context.Context, containerID, execID string) (sandbox.ExitStatus, error) {
	var st protocol.ExitStatus
	if err := c.call(ctx, protocol.OpWait, protocol.ContainerRef{Container: containerID, Exec: execID}, &st); err != nil {
		return sandbox.ExitStatus{}, err
	}
	return sandbox.ExitStatus{Code: st.Code, Signal: st.Signal, Started: st.Started, Finished: st.Finished}, nil
}

// Resize implements sandbox.Agent.
func (c *Client) Resize(ctx context.Context, containerID, execID string, width, height int) error {
	return c.call(ctx, protocol.OpResize, protocol.ResizeRequest{Container: containerID, Exec: execID, Width: width, Height: height}, nil)
}

// Attach implements sandbox.Agent.
func (c *Client) Attach(ctx context.Context, containerID, execID string, stdin bool) (sandbox.Stdio, error) {
	var io sandbox.Stdio
	out, rep, err := c.open(ctx, protocol.Hello{Kind: protocol.KindStdout, Container: containerID, Exec: execID})
	if err != nil {
		return io, err
	}
	io.Stdout = out
	if !rep.Tty {
		e, _, err := c.open(ctx, protocol.Hello{Kind: protocol.KindStderr, Container: containerID, Exec: execID})
		if err != nil {
			out.Close()
			return sandbox.Stdio{}, err
		}
		io.Stderr = e
	}
	if stdin {
		in, _, err := c.open(ctx, protocol.Hello{Kind: protocol.KindStdin, Container: containerID, Exec: execID})
		if err != nil {
			out.Close()
			if io.Stderr != nil {
				io.Stderr.Close()
			}
			return sandbox.Stdio{}, err
		}
		io.Stdin = &stdinConn{Conn: in}
	}
	return io, nil
}

// stdinConn's Close half-closes (EOF for the process) and then releases
// the connection once the agent closed its side.
type stdinConn struct {
	net.Conn
	once sync.Once
}

func (s *stdinConn) Close() error {
	s.once.Do(func() {
		if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			go func() {
				s.Conn.SetReadDeadline(time.Now().Add(time.Minute))
				io.Copy(io.Discard, s.Conn)
				s.Conn.Close()
			}()
			return
		}
		s.Conn.Close()
	})
	return nil
}

// Logs implements sandbox.Agent.
func (c *Client) Logs(ctx context.Context, containerID string, opt sandbox.LogOptions) (sandbox.LogReader, error) {
	lo := protocol.LogOptions{Stdout: opt.Stdout, Stderr: opt.Stderr, Follow: opt.Follow, Tail: opt.Tail, Since: opt.Since}
	conn, _, err := c.open(ctx, protocol.Hello{Kind: protocol.KindLogs, Container: containerID, Logs: &lo})
	if err != nil {
		return nil, err
	}
	return &logReader{conn: conn}, nil
}

type logReader struct{ conn net.Conn }

func (l *logReader) Next() (sandbox.LogRecord, error) {
	var r protocol.LogRecord
	if err := protocol.ReadJSON(l.conn, &r); err != nil {
		return sandbox.LogRecord{}, err
	}
	if r.Stream != "stdout" && r.Stream != "stderr" {
		return sandbox.LogRecord{}, fmt.Errorf("agent logs: bad stream %q", r.Stream)
	}
	return sandbox.LogRecord{Stream: r.Stream, Time: r.Time, Data: r.Data}, nil
}

func (l *logReader) Close() error { return l.conn.Close() }

// Stats implements sandbox.Agent.
func (c *Client) Stats(ctx context.Context) (sandbox.PodStats, error) {
	var st protocol.PodStats
	if err := c.call(ctx, protocol.OpStats, nil, &st); err != nil {
		return sandbox.PodStats{}, err
	}
	out := sandbox.PodStats{Time: st.Time, CPUCount: st.CPUCount, MemTotal: st.MemTotal, MemAvailable: st.MemAvailable}
	for _, s := range st.Containers {
		out.Containers = append(out.Containers, sandbox.ContainerStats(s))
	}
	return out, nil
}

// Dial implements sandbox.Agent.
func (c *Client) Dial(ctx context.Context, network string, port int) (net.Conn, error) {
	conn, _, err := c.open(ctx, protocol.Hello{Kind: protocol.KindDial, Network: network, Port: port})
	if err == nil && network == "udp" {
		return &datagramConn{Conn: conn}, nil // one Write/Read = one datagram
	}
	return conn, err
}

// Commit implements sandbox.Agent.
func (c *Client) Commit(ctx context.Context, containerID string) (io.ReadCloser, error) {
	conn, _, err := c.open(ctx, protocol.Hello{Kind: protocol.KindCommit, Container: containerID})
	return conn, err
}

// RemoveContainer implements sandbox.Agent.
func (c *Client) RemoveContainer(ctx context.Context, id string) error {
	return c.call(ctx, protocol.OpRemove, protocol.ContainerRef{Container: id}, nil)
}

// Shutdown implements sandbox.Agent: it stops every container and the
// agent powers off (VM) or exits (local).
func (c *Client) Shutdown(ctx context.Context) error {
	return c.call(ctx, protocol.OpShutdown, nil, nil)
}

// Done is closed when the control connection is gone.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close implements sandbox.Agent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = ErrClosed
	}
	c.mu.Unlock()
	return c.conn.Close()
}
