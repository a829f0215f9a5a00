// This file tests restart recovery in the background: the API answers
// while a pod reattaches, and calls on it wait for the outcome.
package pod_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// gatedDriver is the podtest driver whose Reattach of the gated sandboxes
// blocks until their gate opens (a silent guest), then fails with the
// gate's error if one is set.
type gatedDriver struct {
	*podtest.Driver
	mu    sync.Mutex
	gates map[string]chan struct{}
	fail  map[string]error
}

func (d *gatedDriver) Reattach(ctx context.Context, h sandbox.Handle) (sandbox.Sandbox, error) {
	d.mu.Lock()
	gate, err := d.gates[h.ID], d.fail[h.ID]
	d.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return d.Driver.Reattach(ctx, h)
}

func sandboxOf(t *testing.T, drv *podtest.Driver, pod string) string {
	for _, id := range drv.Running() {
		if strings.HasPrefix(id, pod+"-") {
			return id
		}
	}
	t.Fatalf("no sandbox of %s in %v", pod, drv.Running())
	return ""
}

// TestReattachInBackground: after a restart New returns while a silent
// guest's reattach still blocks; the API answers /version and /list at
// once, the other pods are reattached and usable, the blocked pod says it
// is reattaching, and a call on it waits for the outcome: served by the
// reattached sandbox, or a 409 when the sandbox is lost. Before, New
// reattached the pods one at a time before returning (the guard fails).
func TestReattachInBackground(t *testing.T) {
	tests := []struct {
		name   string
		fail   error
		phase  string
		waited func(error) bool // the outcome of the call that waited
	}{
		{"reattached", nil, "Running", func(err error) bool { return err == nil }},
		{"lost", errors.New("the guest never answered"), "Failed", func(err error) bool {
			// "lost at the daemon restart" when it waited, "not running"
			// when it came after the outcome: a 409 either way
			var ce *pod.ConflictError
			return errors.As(err, &ce)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, imgs := t.TempDir(), t.TempDir()
			base := podtest.NewDriver()
			drv := &gatedDriver{Driver: base, gates: map[string]chan struct{}{}, fail: map[string]error{}}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg := pod.Config{DataRoot: root, Driver: drv, Images: &podtest.Images{Root: imgs}, Logger: log, StopTimeout: time.Second}
			d1, err := pod.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for _, id := range []string{"slow", "a", "b"} {
				mustCreate(t, d1, fmt.Sprintf(`{"id":"%s","containers":[{"image":"sleeper","name":"%s-c","command":["sleep","up"]}]}`, id, id))
				if err := d1.StartPod(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			d1.Close()
			gate := make(chan struct{})
			drv.gates[sandboxOf(t, base, "slow")] = gate
			drv.fail[sandboxOf(t, base, "slow")] = tc.fail
			opened := make(chan *pod.Daemon, 1)
			go func() {
				d2, err := pod.New(cfg)
				if err != nil {
					t.Error(err)
				}
				opened <- d2
			}()
			var d2 *pod.Daemon
			select {
			case d2 = <-opened:
			case <-time.After(5 * time.Second):
				close(gate)
				t.Fatal("New blocked on a silent guest's reattach")
			}
			defer d2.Close()
			srv := httptest.NewServer((&api.Server{Pods: d2, Log: log, Version: "test"}).Handler())
			defer srv.Close()
			for path, want := range map[string]string{"/version": `"Version":"test"`, "/list?item=pod": "slow:slow:"} {
				resp, err := http.Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 || !strings.Contains(string(b), want) {
					t.Fatalf("GET %s during the reattach: %d %s", path, resp.StatusCode, b)
				}
			}
			if pi, _ := d2.PodInfo("slow"); pi.Status.Reason != pod.ReasonReattaching {
				t.Fatalf("blocked pod: %+v, want reason %s", pi.Status, pod.ReasonReattaching)
			}
			// the others are reattached and usable meanwhile
			for _, id := range []string{"a", "b"} {
				// their reattach runs in the background too, and does not wait for the slow one
				for i := 0; ; i++ {
					if pi, _ := d2.PodInfo(id); pi.Status.Reason != pod.ReasonReattaching {
						break
					}
					if i == 500 {
						t.Fatalf("pod %s still reattaching after 5s", id)
					}
					time.Sleep(10 * time.Millisecond)
				}
				if got := logsOf(t, d2, id+"-c"); got != "up\n" {
					t.Fatalf("logs of %s: %q", id, got)
				}
			}
			if err := d2.StopPod(ctx, "b"); err != nil {
				t.Fatalf("stop of a reattached pod while another reattaches: %v", err)
			}
			// a call on the blocked pod waits for the outcome
			short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			_, _, _, err = d2.Attach(short, "slow-c", "", false)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("attach during the reattach: %v, want it to wait", err)
			}
			waited := make(chan error, 1)
			go func() {
				st, _, release, err := d2.Attach(ctx, "slow-c", "", false)
				if err == nil {
					st.Stdout.Close()
					st.Stderr.Close()
					release()
				}
				waited <- err
			}()
			close(gate)
			select {
			case err = <-waited:
			case <-time.After(5 * time.Second):
				t.Fatal("the waiting call did not end with the reattach")
			}
			if !tc.waited(err) {
				t.Fatalf("the call that waited: %v", err)
			}
			if err := d2.WaitReattached(ctx); err != nil {
				t.Fatal(err)
			}
			if pi, _ := d2.PodInfo("slow"); pi.Status.Phase != tc.phase || pi.Status.Reason == pod.ReasonReattaching {
				t.Fatalf("after the reattach: %+v, want %s", pi.Status, tc.phase)
			}
		})
	}
}
