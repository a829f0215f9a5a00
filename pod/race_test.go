// Tests of lifecycle races: a container start queued behind the removal of
// that container, held at the exact window by the fake sandbox and the
// daemon's test hook.
package pod_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
)

// TestStartQueuedBehindRemove: the remove holds the pod's lock while it talks
// to the sandbox; a start of the same container resolved it just before and
// waits for that lock. Before the fix the start then re-added the removed
// container: added and started in the sandbox, its record saved again (back
// after a daemon restart). Now it fails with not found and leaves no trace.
func TestStartQueuedBehindRemove(t *testing.T) {
	for _, tc := range []struct {
		name string
		ref  func(id string) string // how the start names the container
	}{
		{"by name", func(string) string { return "b" }},
		{"by id", func(id string) string { return id }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, imgs := t.TempDir(), t.TempDir()
			drv := podtest.NewDriver()
			d := open(t, root, drv, imgs)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pid := mustCreate(t, d, `{"id":"racy","containers":[{"image":"sleeper","name":"a"},{"image":"busybox","name":"b"}]}`)
			if err := d.StartPod(ctx, pid); err != nil {
				t.Fatal(err)
			}
			if code, err := d.ExitCode(ctx, "b", ""); err != nil || code != 0 {
				t.Fatalf("b exit %d %v", code, err)
			}
			bi, err := d.ContainerInfo("b")
			if err != nil {
				t.Fatal(err)
			}
			bid := bi.Container.ContainerID

			inRemove, release := make(chan struct{}), make(chan struct{})
			var removed atomic.Bool
			var mu sync.Mutex
			var late []string // sandbox calls for b after its removal
			drv.SetHook(func(call, id string) {
				if id != bid {
					return
				}
				if call == "RemoveContainer" && !removed.Swap(true) {
					close(inRemove)
					<-release
					return
				}
				if removed.Load() {
					mu.Lock()
					late = append(late, call)
					mu.Unlock()
				}
			})
			var armed atomic.Bool
			resolved := make(chan struct{}, 1)
			pod.SetTestHook(d, func(ev, id string) {
				if ev == "ctr-resolved" && id == bid && armed.Load() {
					resolved <- struct{}{}
				}
			})

			removeErr := make(chan error, 1)
			go func() { removeErr <- d.RemoveContainer(ctx, "b") }()
			<-inRemove // the remove holds the pod's lock, inside its sandbox call
			armed.Store(true)
			startErr := make(chan error, 1)
			go func() { startErr <- d.StartContainer(ctx, tc.ref(bid)) }()
			select {
			case <-resolved: // the start found b and now waits for the pod's lock
			case err := <-startErr:
				t.Fatalf("start ended (%v) while the remove held the pod", err)
			}
			close(release)
			if err := <-removeErr; err != nil {
				t.Fatalf("remove: %v", err)
			}
			err = <-startErr
			var nf *pod.NotFoundError
			if !errors.As(err, &nf) {
				t.Errorf("start of the removed container = %v, want a not-found error", err)
			}

			mu.Lock()
			if len(late) > 0 {
				t.Errorf("the removed container reached the sandbox again: %v", late)
			}
			mu.Unlock()
			if _, err := d.ContainerInfo(bid); !errors.As(err, &nf) {
				t.Errorf("ContainerInfo of the removed container = %v, want not found", err)
			}
			if l := d.ListContainers("", ""); slices.ContainsFunc(l, func(e string) bool { return strings.HasPrefix(e, bid+":") }) {
				t.Errorf("the removed container is listed: %v", l)
			}
			// Nothing of it was saved again: a restarted daemon does not see it.
			d.Close()
			d2 := open(t, root, drv, imgs)
			defer d2.Close()
			if _, err := d2.ContainerInfo(bid); !errors.As(err, &nf) {
				t.Errorf("after a restart, ContainerInfo of the removed container = %v, want not found", err)
			}
			if pi, err := d2.PodInfo(pid); err != nil || len(pi.Spec.Containers) != 1 || pi.Spec.Containers[0].Name != "a" {
				t.Errorf("after a restart, the pod's containers = %+v, %v; want only a", pi, err)
			}
		})
	}
}
