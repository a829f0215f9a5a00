package pod_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
)

// buildPods lists the build step pods with their list status.
func buildPods(d *pod.Daemon) []string {
	var out []string
	for _, p := range d.ListPods("", "") {
		if strings.HasPrefix(p, "build-") {
			out = append(out, p)
		}
	}
	return out
}

// TestBuildRunner: the RUN step runner image.Store.Build gets from the daemon.
func TestBuildRunner(t *testing.T) {
	drv := podtest.NewDriver()
	d := open(t, t.TempDir(), drv, t.TempDir())
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Success: output streamed, the step's container set up from the
	// arguments, the agent's changes are the layer, the pod goes at Close.
	var out bytes.Buffer
	run := d.BuildRunner(pod.BuildRunOptions{KeepOnFailure: true})
	layer, err := run(ctx, "busybox", []string{"/bin/sh", "-c", "echo built it"}, []string{"A=1", "B=two words"}, "/srv", "1000:100", &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	pods := buildPods(d)
	if len(pods) != 1 || !strings.HasSuffix(pods[0], ":running") {
		t.Fatalf("while the layer is open the step's pod runs: %v", pods)
	}
	name, _, _ := strings.Cut(pods[0], ":")
	ci, err := d.ContainerInfo(name)
	if err != nil {
		t.Fatal(err)
	}
	envs := map[string]string{}
	for _, e := range ci.Container.Env {
		envs[e.Env] = e.Value
	}
	if ci.Container.WorkingDir != "/srv" || ci.Container.User != "1000:100" || envs["A"] != "1" || envs["B"] != "two words" {
		t.Errorf("step container: workdir %q user %q env %v", ci.Container.WorkingDir, ci.Container.User, ci.Container.Env)
	}
	h, err := tar.NewReader(layer).Next()
	if err != nil || h.Name != "committed" {
		t.Errorf("layer: %v %v", h, err)
	}
	if err := layer.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, " ---> Running in "+name+"\n") || !strings.Contains(got, "built it\n") ||
		!strings.HasSuffix(got, "Removing intermediate container "+name+"\n") {
		t.Errorf("output:\n%s", got)
	}
	if p := buildPods(d); len(p) != 0 || len(drv.Running()) != 0 {
		t.Errorf("after the step: pods %v sandboxes %v", p, drv.Running())
	}

	// A failing command: the error has the code; forcerm=0 keeps the
	// container (stopped), forcerm=1 does not.
	out.Reset()
	if _, err := run(ctx, "busybox", []string{"/bin/sh", "-c", "exit 2"}, nil, "", "", &out); err == nil || !strings.Contains(err.Error(), "returned a non-zero code: 2") {
		t.Fatalf("failing step: %v", err)
	}
	if p := buildPods(d); len(p) != 1 || !strings.HasSuffix(p[0], ":failed") || !strings.Contains(out.String(), "Keeping intermediate container") || len(drv.Running()) != 0 {
		t.Errorf("failed step kept: %v %v\n%s", p, drv.Running(), out.String())
	} else {
		id, _, _ := strings.Cut(p[0], ":")
		if err := d.RemovePod(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	forcerm := d.BuildRunner(pod.BuildRunOptions{})
	if _, err := forcerm(ctx, "busybox", []string{"nonexistent-tool"}, nil, "", "", io.Discard); err == nil || !strings.Contains(err.Error(), "non-zero code: 127") {
		t.Fatalf("failing step: %v", err)
	}
	if p := buildPods(d); len(p) != 0 {
		t.Errorf("forcerm left %v", p)
	}

	// rm=0: a successful step's container stays (stopped).
	keep := d.BuildRunner(pod.BuildRunOptions{KeepOnSuccess: true})
	layer, err = keep(ctx, "busybox", []string{"echo", "x"}, nil, "", "", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	layer.Close()
	if p := buildPods(d); len(p) != 1 || !strings.HasSuffix(p[0], ":failed") {
		t.Errorf("rm=0: %v", p)
	} else {
		id, _, _ := strings.Cut(p[0], ":")
		d.RemovePod(ctx, id)
	}

	// A cancelled build ends a running step at once and leaves nothing.
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := forcerm(cctx, "busybox", []string{"sleep"}, nil, "", "", io.Discard)
		done <- err
	}()
	for i := 0; len(drv.Running()) == 0 && i < 200; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	ccancel()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("cancelled step succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled step did not end")
	}
	if p := buildPods(d); len(p) != 0 || len(drv.Running()) != 0 {
		t.Errorf("cancelled step left pods %v sandboxes %v", p, drv.Running())
	}

	// An unknown image fails before any pod exists.
	if _, err := forcerm(ctx, "nope", []string{"true"}, nil, "", "", io.Discard); err == nil || len(buildPods(d)) != 0 {
		t.Errorf("unknown image: %v %v", err, buildPods(d))
	}
}
