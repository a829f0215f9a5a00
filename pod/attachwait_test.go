// This file tests attaches that wait for a container to start.
package pod_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
)

// TestAbandonedAttachLeavesNothing: attaches to a never-started container
// whose clients go leave no waiter behind (each held a record until the
// container started or was removed), and the container still attaches
// and starts afterwards.
func TestAbandonedAttachLeavesNothing(t *testing.T) {
	d := open(t, t.TempDir(), podtest.NewDriver(), t.TempDir())
	defer d.Close()
	mustCreate(t, d, `{"id":"p","containers":[{"name":"c","image":"busybox"}]}`)
	for i := 0; i < 50; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		_, _, _, err := d.Attach(ctx, "c", "", false)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("attach %d to a never-started container: %v", i, err)
		}
	}
	if n := pod.AttachWaiters(d, "c"); n != 0 {
		t.Errorf("%d waiters left by clients that went", n)
	}
	if err := d.StartPod(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, release, err := d.Attach(ctx, "c", "", false); err != nil {
		t.Errorf("attach after the start: %v", err)
	} else {
		release()
	}
}
