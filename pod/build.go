// This file owns running Dockerfile build steps in throwaway pods
// (BuildRunner).

package pod

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Dockerfile builds are the image store's (image.Store.Build owns the
// instructions and the layer cache). The daemon only lends it this: running
// a RUN step's command in a container on the sandbox driver.

// BuildRunFunc has the signature of image.RunFunc: cmd runs in a container of
// image imageID with env, workdir and user; its output goes to out as it is
// produced; a non-zero exit is an error; the returned layer is the
// container's changes (an uncompressed tar with OCI whiteouts, streamed by
// the agent). Closing the layer ends the step.
type BuildRunFunc func(ctx context.Context, imageID string, cmd, env []string, workdir, user string, out io.Writer) (io.ReadCloser, error)

// BuildRunOptions say what happens to a step's container (POST /image/build
// rm and forcerm). A kept container's pod is stopped and stays listed.
type BuildRunOptions struct {
	KeepOnSuccess bool // rm=0
	KeepOnFailure bool // forcerm=0: a failed step's container is kept
}

// BuildRunner returns the RUN step runner of Dockerfile builds: each step is
// a throw-away pod ("build-<letters>") of the step's image, in which the
// command runs as an exec next to an idle main process; the agent then
// streams the container's changes.
func (d *Daemon) BuildRunner(o BuildRunOptions) BuildRunFunc {
	return func(ctx context.Context, imageID string, cmd, env []string, workdir, user string, out io.Writer) (io.ReadCloser, error) {
		return d.runBuildStep(ctx, o, imageID, cmd, env, workdir, user, out)
	}
}

func (d *Daemon) runBuildStep(ctx context.Context, o BuildRunOptions, imageID string, cmd, env []string, workdir, user string, out io.Writer) (_ io.ReadCloser, err error) {
	if d.img == nil {
		return nil, errNoImageStore()
	}
	if len(cmd) == 0 {
		return nil, specErr("bad parameter: RUN needs a command")
	}
	spec := &PodSpec{ID: "build-" + strings.ToLower(RandomLetters(10))}
	c := ContainerSpec{Image: imageID, Name: spec.ID, Workdir: workdir,
		Entrypoint: []string{"/bin/sh", "-c", "exec sleep 2147483647"}}
	c.User.Name, c.User.Group, _ = strings.Cut(user, ":")
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		c.Envs = append(c.Envs, EnvVar{Env: k, Value: v})
	}
	spec.Containers = []ContainerSpec{c}
	id, err := d.CreatePod(spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.endBuildPod(id, o.KeepOnFailure, out)
		}
	}()
	fmt.Fprintf(out, " ---> Running in %s\n", id)
	// A cancelled build (client gone) ends the step's processes at once.
	stop := context.AfterFunc(ctx, func() {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.RemovePod(rctx, id)
	})
	defer stop()
	if err := d.StartPod(ctx, id); err != nil {
		return nil, fmt.Errorf("build step sandbox: %w", err)
	}
	eid, err := d.ExecCreate(c.Name, cmd, false)
	if err != nil {
		return nil, err
	}
	st, _, err := d.ExecStart(ctx, c.Name, eid)
	if err != nil {
		return nil, err
	}
	if st.Stdin != nil {
		st.Stdin.Close()
	}
	lw := &lockedWriter{w: out}
	var wg sync.WaitGroup
	for _, r := range []io.Reader{st.Stdout, st.Stderr} {
		if r == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(lw, r)
		}()
	}
	wg.Wait()
	code, err := d.ExitCode(ctx, c.Name, eid)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("the command '%s' returned a non-zero code: %d", strings.Join(cmd, " "), code)
	}
	ct, p, err := d.ctrAndPod(c.Name)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	sb, cid := p.sb, ct.rec.ID
	d.mu.Unlock()
	if sb == nil {
		return nil, conflict("conflict: build step %s lost its sandbox", id)
	}
	layer, err := sb.Agent().Commit(ctx, cid)
	if err != nil {
		return nil, fmt.Errorf("build step %s: changes: %w", id, err)
	}
	return &stepLayer{ReadCloser: layer, end: func() { d.endBuildPod(id, o.KeepOnSuccess, out) }}, nil
}

// endBuildPod removes a step's pod, or stops it and says so when it is kept.
func (d *Daemon) endBuildPod(id string, keep bool, out io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !keep {
		if err := d.RemovePod(ctx, id); err != nil {
			d.log.Warn("removing a build step's pod", "pod", id, "err", err)
			return
		}
		fmt.Fprintf(out, "Removing intermediate container %s\n", id)
		return
	}
	if err := d.StopPod(ctx, id); err != nil {
		d.log.Debug("stopping a kept build step's pod", "pod", id, "err", err)
	}
	fmt.Fprintf(out, "Keeping intermediate container %s (stopped)\n", id)
}

type stepLayer struct {
	io.ReadCloser
	once sync.Once
	end  func()
}

func (l *stepLayer) Close() error {
	err := l.ReadCloser.Close()
	l.once.Do(l.end)
	return err
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
