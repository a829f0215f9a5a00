// This file owns the placeholder sandbox of a pod being reattached after a
// daemon restart: its agent calls wait for the reattach's outcome (bounded
// by their context) and then go to the reattached sandbox or fail.

package pod

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// reattaching stands for a pod's sandbox until its reattach ends (resolve).
type reattaching struct {
	pod   string
	h     sandbox.Handle
	ready chan struct{} // closed by resolve
	sb    sandbox.Sandbox
	err   error
}

var (
	_ sandbox.Sandbox = (*reattaching)(nil)
	_ sandbox.Agent   = (*reattaching)(nil)
)

func newReattaching(pod string, h sandbox.Handle) *reattaching {
	return &reattaching{pod: pod, h: h, ready: make(chan struct{})}
}

// resolve ends the wait: sb is the reattached sandbox, or err says why the
// pod has none.
func (r *reattaching) resolve(sb sandbox.Sandbox, err error) {
	r.sb, r.err = sb, err
	if sb == nil && err == nil {
		r.err = conflict("conflict: pod %s has no sandbox", r.pod)
	}
	close(r.ready)
}

func (r *reattaching) wait(ctx context.Context) (sandbox.Sandbox, error) {
	select {
	case <-r.ready:
		return r.sb, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *reattaching) agent(ctx context.Context) (sandbox.Agent, error) {
	sb, err := r.wait(ctx)
	if err != nil {
		return nil, err
	}
	return sb.Agent(), nil
}

// --- sandbox.Sandbox ---

func (r *reattaching) ID() string             { return r.h.ID }
func (r *reattaching) Handle() sandbox.Handle { return r.h }
func (r *reattaching) Agent() sandbox.Agent   { return r }

// DiskSource, Done, Err and Stop wait for the outcome: the reattach is
// bounded (reattachTimeout).
func (r *reattaching) DiskSource(hostPath string) (string, error) {
	sb, err := r.wait(context.Background())
	if err != nil {
		return "", err
	}
	return sb.DiskSource(hostPath)
}

func (r *reattaching) Done() <-chan struct{} {
	if sb, err := r.wait(context.Background()); err == nil {
		return sb.Done()
	}
	return r.ready // closed: no sandbox
}

func (r *reattaching) Err() error {
	select {
	case <-r.ready:
	default:
		return nil
	}
	if r.err != nil {
		return r.err
	}
	return r.sb.Err()
}

func (r *reattaching) Stop(ctx context.Context) error {
	sb, err := r.wait(ctx)
	if err != nil {
		return err
	}
	return sb.Stop(ctx)
}

// HostStats does not wait: it has no context to bound the wait.
func (r *reattaching) HostStats() (sandbox.HostStats, error) {
	select {
	case <-r.ready:
	default:
		return sandbox.HostStats{}, conflict("conflict: pod %s is reattaching after the daemon restart", r.pod)
	}
	if r.err != nil {
		return sandbox.HostStats{}, r.err
	}
	return r.sb.HostStats()
}

// --- sandbox.Agent: each call waits, then delegates ---

func (r *reattaching) Version(ctx context.Context) (string, error) {
	a, err := r.agent(ctx)
	if err != nil {
		return "", err
	}
	return a.Version(ctx)
}

func (r *reattaching) Ping(ctx context.Context) (time.Duration, error) {
	a, err := r.agent(ctx)
	if err != nil {
		return 0, err
	}
	return a.Ping(ctx)
}

func (r *reattaching) AddContainer(ctx context.Context, spec sandbox.ContainerSpec) error {
	a, err := r.agent(ctx)
	if err != nil {
		return err
	}
	return a.AddContainer(ctx, spec)
}

func (r *reattaching) StartContainer(ctx context.Context, id string) error {
	a, err := r.agent(ctx)
	if err != nil {
		return err
	}
	return a.StartContainer(ctx, id)
}

func (r *reattaching) Exec(ctx context.Context, cid, eid string, p sandbox.Process) error {
	a, err := r.agent(ctx)
	if err != nil {
		return err
	}
	return a.Exec(ctx, cid, eid, p)
}

func (r *reattaching) Signal(ctx context.Context, cid, eid string, sig int) error {
	a, err := r.agent(ctx)
	if err != nil {
		return err
	}
	return a.Signal(ctx, cid, eid, sig)
}

func (r *reattaching) Wait(ctx context.Context, cid, eid string) (sandbox.ExitStatus, error) {
	a, err := r.agent(ctx)
	if err != nil {
		return sandbox.ExitStatus{}, err
	}
	return a.Wait(ctx, cid, eid)
}

func (r *reattaching) Resize(ctx context.Context, cid, eid string, w, h int) error {
	a, err := r.agent(ctx)
	if err != nil {
		return err
	}
	return a.Resize(ctx, cid, eid, w, h)
}

func (r *reattaching) Attach(ctx context.Context, cid, eid string, stdin bool) (sandbox.Stdio, error) {
	a, err := r.agent(ctx)
	if err != nil {
		return sandbox.Stdio{}, err
	}
	return a.Attach(ctx, cid, eid, stdin)
}

func (r *reattaching) Logs(ctx context.Context, cid string, opt sandbox.LogOptions) (sandbox.LogReader, error) {
	a, err := r.agent(ctx)
	if err != nil {
		return nil, err
	}
	return a.Logs(ctx, cid, opt)
}

func (r *reattaching) Stats(ctx context.Context) (sandbox.PodStats, error) {
	a, err := r.agent(ctx)
	if err != nil {
		return sandbox.PodStats{}, err
	}
	return a.Stats(ctx)
}

func (r *reattaching) Dial(ctx context.Context, network string, port int) (net.Conn, error) {
	a, err := r.agent(ctx)
	if err != nil {
		return nil, err
	}
	return a.Dial(ctx, network, port)
}

func (r *reattaching) Commit(ctx context.Context, cid string) (io.ReadCloser, error) {
	a, err := r.agent(ctx)
	if err != nil {
		return nil, err
	}
	return a.Commit(ctx, cid)
}

func (r *reattaching) Setup(ctx context.Context, s protocol.PodSetup) error {
	a, err := r.agent(ctx)
	if err != nil {
		return err
	}
	return a.Setup(ctx, s)
}

func (r *reattaching) RemoveContainer(ctx context.Context, id string) error {
	a, err := r.agent(ctx)
	if err != nil {
		return err
	}
	return a.RemoveContainer(ctx, id)
}

func (r *reattaching) Shutdown(ctx context.Context) error {
	a, err := r.agent(ctx)
	if err != nil {
		return err
	}
	return a.Shutdown(ctx)
}

// Close is a no-op: the reattached sandbox's agent is closed by whoever
// owns it then (the pod, or the reattach itself when the daemon closes).
func (r *reattaching) Close() error { return nil }
