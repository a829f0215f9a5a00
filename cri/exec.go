// This file owns ExecSync: a command run to its end in a running
// container, its output collected, with a timeout that kills it.

package cri

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxExecOutput bounds what ExecSync keeps of each stream (the kubelet's
// own cap on probe output is far below it).
const maxExecOutput = 16 << 20

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// ExecSync runs cmd in a running container and returns its output and
// exit code. Past timeout seconds (0: none) the process is killed and the
// call fails with DeadlineExceeded.
func (s *Server) ExecSync(ctx context.Context, r *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if len(r.Cmd) == 0 {
		return nil, invalid("exec: cmd is required")
	}
	c, err := s.runningContainer(r.ContainerId)
	if err != nil {
		return nil, err
	}
	execID, err := s.core.ExecCreate(c.id(), r.Cmd, false)
	if err != nil {
		return nil, grpcErr(err)
	}
	rctx := ctx
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, time.Duration(r.Timeout)*time.Second)
		defer cancel()
	}
	st, _, err := s.core.ExecStart(rctx, c.id(), execID)
	if err != nil {
		return nil, grpcErr(err)
	}
	if st.Stdin != nil {
		st.Stdin.Close()
	}
	stdout, stderr := &capped{max: maxExecOutput}, &capped{max: maxExecOutput}
	var wg sync.WaitGroup
	for _, p := range []struct {
		r io.ReadCloser
		w io.Writer
	}{{st.Stdout, stdout}, {st.Stderr, stderr}} {
		if p.r == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(p.w, p.r)
		}()
	}
	code, err := s.core.ExitCode(rctx, c.id(), execID)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			kctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if kerr := s.core.SignalExec(kctx, c.id(), execID, 9); kerr != nil {
				s.log.Warn("cri: killing a timed out exec", "container", c.id(), "exec", execID, "err", kerr)
			}
			s.core.ExitCode(kctx, c.id(), execID)
			cancel()
			closeStreams(st.Stdout, st.Stderr)
			wg.Wait()
			return nil, status.Errorf(codes.DeadlineExceeded, "command %q timed out after %ds (killed)", r.Cmd, r.Timeout)
		}
		closeStreams(st.Stdout, st.Stderr)
		wg.Wait()
		return nil, grpcErr(err)
	}
	// the process exited: its output ends when the agent's streams end
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		closeStreams(st.Stdout, st.Stderr)
		<-done
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout.buf.Bytes(), Stderr: stderr.buf.Bytes(), ExitCode: int32(code)}, nil
}

func closeStreams(rs ...io.ReadCloser) {
	for _, r := range rs {
		if r != nil {
			r.Close()
		}
	}
}
