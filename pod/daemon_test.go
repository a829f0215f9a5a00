package pod_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
	"github.com/hyperhq/hyperd-go/sandbox"
)

func open(t *testing.T, root string, drv *podtest.Driver, imgRoot string) *pod.Daemon {
	t.Helper()
	d, err := pod.New(pod.Config{DataRoot: root, Driver: drv, Images: &podtest.Images{Root: imgRoot},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustCreate(t *testing.T, d *pod.Daemon, js string) string {
	t.Helper()
	s, err := pod.DecodePodSpec([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	id, err := d.CreatePod(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func logsOf(t *testing.T, d *pod.Daemon, cid string) string {
	var b bytes.Buffer
	err := d.Logs(context.Background(), cid, pod.LogOptions{Stdout: true, Stderr: true, Tail: -1}, func(e pod.LogEntry) error {
		b.Write(e.Data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestRestartReattach: a daemon goes away without stopping its pods (as
// with kill -9: nothing is cleaned up) and a new one gets every record back,
// reattaches the live sandbox, and marks the pod whose sandbox died failed.
func TestRestartReattach(t *testing.T) {
	root, imgs := t.TempDir(), t.TempDir()
	drv := podtest.NewDriver()
	d1 := open(t, root, drv, imgs)
	ctx := context.Background()
	alive := mustCreate(t, d1, `{"id":"alive","labels":{"k":"v"},"containers":[{"image":"sleeper","name":"a","command":["sleep","up"]}]}`)
	dead := mustCreate(t, d1, `{"id":"dead","containers":[{"image":"sleeper","name":"b"}]}`)
	done := mustCreate(t, d1, `{"id":"done","containers":[{"image":"busybox","name":"c"}]}`)
	pending := mustCreate(t, d1, `{"id":"pending","containers":[{"image":"busybox","name":"p"}]}`)
	for _, id := range []string{alive, dead, done} {
		if err := d1.StartPod(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if code, _ := d1.ExitCode(ctx, "c", ""); code != 0 {
		t.Fatalf("c exit %d", code)
	}
	eid, err := d1.ExecCreate("a", []string{"sleep"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d1.ExecStart(ctx, "a", eid); err != nil {
		t.Fatal(err)
	}
	waitLogs(t, d1, "a", "up\n")
	deadInfo, _ := d1.PodInfo(dead)
	_ = deadInfo
	// simulate the crash: the daemon's goroutines stop, nothing is stopped
	d1.Close()
	// the "dead" pod's sandbox dies while no daemon runs
	for _, sb := range drv.Running() {
		if len(sb) > 4 && sb[:4] == "dead" {
			drv.Kill(sb)
		}
	}
	d2 := open(t, root, drv, imgs)
	defer d2.Close()
	if err := d2.WaitReattached(ctx); err != nil { // reattaches run in the background
		t.Fatal(err)
	}
	tests := []struct {
		pod, phase, reason string
	}{
		{alive, "Running", ""},
		{dead, "Failed", "SandboxLost"},
		{done, "Succeeded", "Completed"},
		{pending, "Pending", ""},
	}
	for _, tc := range tests {
		pi, err := d2.PodInfo(tc.pod)
		if err != nil {
			t.Fatalf("%s: %v", tc.pod, err)
		}
		if pi.Status.Phase != tc.phase || pi.Status.Reason != tc.reason {
			t.Errorf("%s: phase %s reason %s (%s), want %s %s", tc.pod, pi.Status.Phase, pi.Status.Reason, pi.Status.Message, tc.phase, tc.reason)
		}
	}
	if pi, _ := d2.PodInfo(alive); pi.Spec.Labels["k"] != "v" {
		t.Errorf("labels lost: %v", pi.Spec.Labels)
	}
	if got := logsOf(t, d2, "c"); got != "hello\n" {
		t.Errorf("logs of finished container after restart: %q", got)
	}
	if got := logsOf(t, d2, "a"); got != "up\n" {
		t.Errorf("logs of reattached container (no duplicates): %q", got)
	}
	// the reattached container is still controllable; its exit is seen
	if err := d2.KillContainer(ctx, "a", 9); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if code, err := d2.ExitCode(wctx, "a", ""); err != nil || code != 137 {
		t.Fatalf("exit after reattach %d %v", code, err)
	}
	// the exec record came back too (its process died with the sandbox)
	if code, err := d2.ExitCode(wctx, "a", eid); err != nil || code != 137 && code != 255 {
		t.Fatalf("exec exit after restart %d %v", code, err)
	}
}

func waitLogs(t *testing.T, d *pod.Daemon, cid, want string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if logsOf(t, d, cid) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("logs of %s never became %q", cid, want)
}

func TestStartFailureMarksPodFailed(t *testing.T) {
	drv := podtest.NewDriver()
	drv.FailCreate = io.ErrUnexpectedEOF
	d := open(t, t.TempDir(), drv, t.TempDir())
	defer d.Close()
	id := mustCreate(t, d, `{"containers":[{"image":"busybox"}]}`)
	if err := d.StartPod(context.Background(), id); err == nil {
		t.Fatal("start succeeded")
	}
	pi, _ := d.PodInfo(id)
	if pi.Status.Phase != "Failed" || pi.Status.Reason != "StartFailed" {
		t.Fatalf("%+v", pi.Status)
	}
}

// TestStartFailureClass: a driver refusing the sandbox's configuration
// (sandbox.ConfigError) is the request's fault, a SpecError (HTTP 400);
// any other Create failure is not.
func TestStartFailureClass(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		spec bool
	}{
		{"config", &sandbox.ConfigError{Msg: "socket paths too long"}, true},
		{"wrapped config", fmt.Errorf("kvm driver: %w", &sandbox.ConfigError{Msg: "socket paths too long"}), true},
		{"host", io.ErrUnexpectedEOF, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			drv := podtest.NewDriver()
			drv.FailCreate = c.err
			d := open(t, t.TempDir(), drv, t.TempDir())
			defer d.Close()
			id := mustCreate(t, d, `{"containers":[{"image":"busybox"}]}`)
			err := d.StartPod(context.Background(), id)
			var se *pod.SpecError
			if err == nil || errors.As(err, &se) != c.spec {
				t.Fatalf("start: %v (%T); want a SpecError: %v", err, err, c.spec)
			}
			if c.spec && !strings.Contains(err.Error(), "socket paths too long") {
				t.Errorf("the driver's reason is lost: %v", err)
			}
		})
	}
}

// TestSandboxStopReasons: how a pod's sandbox stopped becomes the pod's
// phase and reason (a guest panic, a power-off, an unexplained death), at
// start and while running.
func TestSandboxStopReasons(t *testing.T) {
	panicked := &sandbox.ExitError{Reason: sandbox.ExitPanic, Detail: "VM stopped: the guest kernel panicked; console tail:\nKernel panic - not syncing: x"}
	poweroff := &sandbox.ExitError{Reason: sandbox.ExitPoweroff, Detail: "VM stopped: the guest powered off"}
	for _, tc := range []struct {
		name        string
		atStart     bool
		err         error
		phase, why  string
		msgContains string
	}{
		{"panic while running", false, panicked, "Failed", "GuestPanic", "Kernel panic"},
		{"poweroff while a container runs", false, poweroff, "Failed", "GuestPoweroff", "powered off"},
		{"unexplained death", false, io.ErrUnexpectedEOF, "Failed", "SandboxDied", "unexpected EOF"},
		{"panic during boot", true, fmt.Errorf("kvm driver: the VM of pod x stopped before its agent answered: %w", panicked), "Failed", "GuestPanic", "Kernel panic"},
		{"boot deadline", true, errors.New("the guest agent did not answer within 30s"), "Failed", "StartFailed", "did not answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drv := podtest.NewDriver()
			if tc.atStart {
				drv.FailCreate = tc.err
			}
			d := open(t, t.TempDir(), drv, t.TempDir())
			defer d.Close()
			id := mustCreate(t, d, `{"containers":[{"image":"busybox","command":["sleep","up"]}]}`)
			err := d.StartPod(context.Background(), id)
			if tc.atStart != (err != nil) {
				t.Fatalf("start: %v", err)
			}
			if !tc.atStart {
				drv.KillWith(drv.Running()[0], tc.err)
			}
			var pi *pod.PodInfo
			for i := 0; i < 200; i++ {
				pi, _ = d.PodInfo(id)
				if pi.Status.Phase != "Running" {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if pi.Status.Phase != tc.phase || pi.Status.Reason != tc.why || !strings.Contains(pi.Status.Message, tc.msgContains) {
				t.Fatalf("pod status %+v; want %s/%s with %q", pi.Status, tc.phase, tc.why, tc.msgContains)
			}
		})
	}
}

// TestStopKeepSandbox: /pod/stop?stopVM=no stops the containers and keeps
// the sandbox; the next start reuses it (same sandbox, containers run
// again); the kept sandbox survives a daemon restart; stopVM=yes on the
// stopped pod, or deleting it, releases the sandbox.
func TestStopKeepSandbox(t *testing.T) {
	root, imgs := t.TempDir(), t.TempDir()
	drv := podtest.NewDriver()
	d := open(t, root, drv, imgs)
	ctx := context.Background()
	id := mustCreate(t, d, `{"id":"keep","containers":[{"image":"sleeper","name":"k","command":["sleep","up"]}]}`)
	if err := d.StartPod(ctx, id); err != nil {
		t.Fatal(err)
	}
	sbs := drv.Running()
	if len(sbs) != 1 {
		t.Fatalf("sandboxes %v", sbs)
	}
	if err := d.StopPodKeepSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	pi, _ := d.PodInfo(id)
	if pi.Status.Phase == "Running" || !slices.Equal(drv.Running(), sbs) {
		t.Fatalf("after stop keep: phase %s, sandboxes %v (want %v kept)", pi.Status.Phase, drv.Running(), sbs)
	}
	if vms := d.ListVMs("", ""); len(vms) != 1 {
		t.Errorf("the kept sandbox is not listed as the pod's VM: %v", vms)
	}
	if code, _ := d.ExitCode(ctx, "k", ""); code != 143 {
		t.Errorf("stopped container exit %d, want 143", code)
	}
	if _, _, running := d.Counts(); running != 0 {
		t.Errorf("a stopped pod counted as running")
	}
	// the daemon restarts: the idle sandbox is adopted, not stopped
	d.Close()
	d = open(t, root, drv, imgs)
	defer func() { d.Close() }()
	if !slices.Equal(drv.Running(), sbs) || len(d.ListVMs("", "")) != 1 {
		t.Fatalf("kept sandbox after restart: %v / %v", drv.Running(), d.ListVMs("", ""))
	}
	if err := d.StartPod(ctx, id); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(drv.Running(), sbs) {
		t.Errorf("start did not reuse the kept sandbox: %v, was %v", drv.Running(), sbs)
	}
	waitLogs(t, d, "k", "up\nup\n")
	if pi, _ := d.PodInfo(id); pi.Status.Phase != "Running" {
		t.Errorf("phase %s after the reuse start", pi.Status.Phase)
	}
	// stop keep, then stopVM=yes on the stopped pod: the sandbox goes
	if err := d.StopPodKeepSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := d.StopPod(ctx, id); err != nil {
		t.Fatal(err)
	}
	if len(drv.Running()) != 0 || len(d.ListVMs("", "")) != 0 {
		t.Errorf("stopVM=yes left %v", drv.Running())
	}
	// a fresh start, stop keep, delete: nothing left
	if err := d.StartPod(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := d.StopPodKeepSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePod(ctx, id); err != nil {
		t.Fatal(err)
	}
	if len(drv.Running()) != 0 {
		t.Errorf("delete left the kept sandbox %v", drv.Running())
	}
}
