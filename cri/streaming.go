// This file owns streaming: Exec, Attach and PortForward answer a URL of
// the streaming server (k8s.io/cri-streaming, the kubelet's own streaming
// server package), which serves the stream (SPDY or WebSocket) and calls
// back into streamRuntime: execs, attaches and port connections through
// the core, with tty and resize.

package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// ServeStreaming starts the streaming server on addr (host:port; port 0
// picks one), whose URLs Exec, Attach and PortForward return. Without it
// those calls answer Unavailable.
func (s *Server) ServeStreaming(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("CRI streaming server: %w", err)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = ln.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: ln.Addr().String()}
	srv, err := streaming.NewServer(cfg, streamRuntime{s})
	if err != nil {
		ln.Close()
		return nil, err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second}
	go hs.Serve(ln)
	s.mu.Lock()
	s.stream = srv
	s.mu.Unlock()
	s.log.Info("cri: streaming server", "address", ln.Addr().String())
	return func() { hs.Close() }, nil
}

func (s *Server) streamServer() (streaming.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream == nil {
		return nil, status.Error(codes.Unavailable, "this hyperd serves no CRI streaming server")
	}
	return s.stream, nil
}

// Exec returns the URL of an exec stream in a running container.
func (s *Server) Exec(ctx context.Context, r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	ss, err := s.streamServer()
	if err != nil {
		return nil, err
	}
	if len(r.Cmd) == 0 {
		return nil, invalid("exec: cmd is required")
	}
	c, err := s.runningContainer(r.ContainerId)
	if err != nil {
		return nil, err
	}
	r.ContainerId = c.id()
	return ss.GetExec(r)
}

// Attach returns the URL of an attach stream to a running container.
func (s *Server) Attach(ctx context.Context, r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	ss, err := s.streamServer()
	if err != nil {
		return nil, err
	}
	c, err := s.runningContainer(r.ContainerId)
	if err != nil {
		return nil, err
	}
	r.ContainerId = c.id()
	return ss.GetAttach(r)
}

// PortForward returns the URL of a port forwarding stream to a ready sandbox.
func (s *Server) PortForward(ctx context.Context, r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	ss, err := s.streamServer()
	if err != nil {
		return nil, err
	}
	sb, err := s.getSandbox(r.PodSandboxId)
	if err != nil {
		return nil, err
	}
	if sb.state() != runtimeapi.PodSandboxState_SANDBOX_READY {
		return nil, precondition("pod sandbox %s is not ready", sb.id())
	}
	for _, p := range r.Port {
		if p < 1 || p > 65535 {
			return nil, invalid("port %d out of range 1-65535", p)
		}
	}
	r.PodSandboxId = sb.id()
	return ss.GetPortForward(r)
}

// streamRuntime is what the streaming server calls.
type streamRuntime struct{ s *Server }

// exitError is a non-zero exit as the streaming server reports it (it
// looks for k8s.io/utils/exec's ExitError interface).
type exitError struct{ code int }

func (e exitError) Error() string   { return fmt.Sprintf("command terminated with exit code %d", e.code) }
func (e exitError) String() string  { return e.Error() }
func (e exitError) Exited() bool    { return true }
func (e exitError) ExitStatus() int { return e.code }

// pump copies the agent's streams to the client's and the client's stdin
// to the agent, and applies resizes; wait waits for the output to end.
type pump struct {
	wg sync.WaitGroup
}

func (p *pump) out(dst io.Writer, src io.ReadCloser) {
	if src == nil {
		return
	}
	if dst == nil {
		dst = io.Discard
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		io.Copy(dst, src)
	}()
}

func in(dst io.WriteCloser, src io.Reader) {
	if dst == nil {
		return
	}
	if src == nil {
		dst.Close()
		return
	}
	go func() {
		io.Copy(dst, src)
		dst.Close()
	}()
}

// wait waits for the output streams to end, at most d.
func (p *pump) wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func resizes(ctx context.Context, ch <-chan remotecommand.TerminalSize, f func(w, h int)) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case sz, ok := <-ch:
				if !ok {
					return
				}
				f(int(sz.Width), int(sz.Height))
			}
		}
	}()
}

// Exec runs cmd in the container with the client's streams.
func (r streamRuntime) Exec(ctx context.Context, cid string, cmd []string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	core := r.s.core
	execID, err := core.ExecCreate(cid, cmd, tty)
	if err != nil {
		return err
	}
	st, _, err := core.ExecStart(ctx, cid, execID)
	if err != nil {
		return err
	}
	var p pump
	p.out(stdout, st.Stdout)
	p.out(stderr, st.Stderr)
	in(st.Stdin, stdin)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if tty {
		resizes(rctx, resize, func(w, h int) { core.Resize(rctx, cid, execID, w, h) })
	}
	code, err := core.ExitCode(ctx, cid, execID)
	if err != nil {
		closeStreams(st.Stdout, st.Stderr)
		return err
	}
	if !p.wait(5 * time.Second) {
		closeStreams(st.Stdout, st.Stderr)
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

// Attach connects the client's streams to the container's main process
// until it exits or the client goes.
func (r streamRuntime) Attach(ctx context.Context, cid string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	core := r.s.core
	st, _, release, err := core.Attach(ctx, cid, "", stdin != nil)
	if err != nil {
		return err
	}
	defer release()
	var p pump
	p.out(stdout, st.Stdout)
	p.out(stderr, st.Stderr)
	in(st.Stdin, stdin)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if tty {
		resizes(rctx, resize, func(w, h int) { core.Resize(rctx, cid, "", w, h) })
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		closeStreams(st.Stdout, st.Stderr)
		<-done
	}
	return nil
}

// PortForward connects stream to port inside the pod's network namespace.
func (r streamRuntime) PortForward(ctx context.Context, podSandboxID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	conn, err := r.s.core.DialPod(ctx, podSandboxID, int(port))
	if err != nil {
		return fmt.Errorf("port %d of pod sandbox %s: %w", port, podSandboxID, err)
	}
	defer conn.Close()
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, stream)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		errc <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		// the other direction ends when the pod's side closes
		select {
		case <-errc:
		case <-ctx.Done():
		case <-time.After(30 * time.Second):
		}
	case <-ctx.Done():
	}
	return nil
}
