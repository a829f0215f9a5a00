// This file tests the bounds on calls to the agent: a hung agent times
// out every bounded call, and wait stays unbounded.
package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// hungAgent answers the control connection's hello and then, as mode says,
// reads every request and answers none ("silent"), answers pings only
// ("stuck"), or reads nothing at all ("deaf": its socket buffer never
// drains). Streams get no hello reply.
func hungAgent(t *testing.T, mode string) Dialer {
	var n atomic.Int32
	return func(ctx context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		t.Cleanup(func() { b.Close() })
		control := n.Add(1) == 1
		go func() {
			var h protocol.Hello
			if err := protocol.ReadJSON(b, &h); err != nil || !control {
				return // a stream: its hello is never answered
			}
			protocol.WriteJSON(b, protocol.HelloReply{Version: protocol.Version, Agent: "hung"})
			if mode == "deaf" {
				return
			}
			for {
				var r protocol.Request
				if protocol.ReadJSON(b, &r) != nil {
					return
				}
				if mode == "stuck" && r.Op == protocol.OpPing {
					protocol.WriteJSON(b, protocol.Response{ID: r.ID})
				}
			}
		}()
		return a, nil
	}
}

// TestTimeoutProbe: a call that timed out says whether the agent still
// answers a ping on the same connection ("stuck": it answers pings and
// nothing else) or not ("silent").
func TestTimeoutProbe(t *testing.T) {
	const bound = 200 * time.Millisecond
	for _, c := range []struct{ mode, want string }{
		{"stuck", "the agent answered a ping at once"},
		{"silent", "a ping got no answer either"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			cl, err := New(context.Background(), hungAgent(t, c.mode))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			cl.timeouts = map[string]time.Duration{protocol.OpStart: bound, protocol.OpPing: bound}
			cl.probe = bound
			err = cl.StartContainer(context.Background(), "c")
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "agent start: no answer within") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want a timeout of start saying %q", err, c.want)
			}
		})
	}
}

// TestHungAgentTimesOut: every request/response call to an agent that never
// answers returns a timeout error (504 at the API) within its bound, with
// no deadline from the caller; an agent that does not even read its
// control connection breaks the client (ErrClosed afterwards) instead of
// leaving writers queued forever. Without the bounds each call blocks for
// good (the guard fails the test).
func TestHungAgentTimesOut(t *testing.T) {
	// roomy enough that a loaded machine (-race, CI) reaches the write before
	// the bound: the deaf cases need a write in progress to cut
	const bound = 250 * time.Millisecond
	calls := []struct {
		op   string
		call func(c *Client) error
	}{
		{protocol.OpPing, func(c *Client) error { _, err := c.Ping(context.Background()); return err }},
		{protocol.OpVersion, func(c *Client) error { _, err := c.Version(context.Background()); return err }},
		{protocol.OpAdd, func(c *Client) error {
			return c.AddContainer(context.Background(), sandbox.ContainerSpec{ID: "c", Files: []sandbox.File{{Path: "/big", Content: make([]byte, 1<<20)}}})
		}},
		{protocol.OpStart, func(c *Client) error { return c.StartContainer(context.Background(), "c") }},
		{protocol.OpStats, func(c *Client) error { _, err := c.Stats(context.Background()); return err }},
		{protocol.OpRemove, func(c *Client) error { return c.RemoveContainer(context.Background(), "c") }},
		{protocol.OpShutdown, func(c *Client) error { return c.Shutdown(context.Background()) }},
		{"hello stdout", func(c *Client) error { _, err := c.Attach(context.Background(), "c", "", false); return err }},
	}
	for _, mode := range []string{"silent", "deaf"} {
		for _, tc := range calls {
			t.Run(mode+"/"+tc.op, func(t *testing.T) {
				c, err := New(context.Background(), hungAgent(t, mode))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.timeouts = map[string]time.Duration{tc.op: bound}
				if tc.op == protocol.OpAdd {
					// its 1 MiB file goes first, staged: a call of its own
					c.timeouts[protocol.OpStage] = bound
				}
				c.hello, c.probe = bound, bound
				start := time.Now()
				errc := make(chan error, 1)
				go func() { errc <- tc.call(c) }()
				select {
				case err = <-errc:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s to a hung agent still blocked after 5s", tc.op)
				}
				if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within") {
					t.Fatalf("%s: err %v, want a timeout naming the call", tc.op, err)
				}
				if el := time.Since(start); el < bound {
					t.Fatalf("%s failed after %s, before its bound", tc.op, el)
				}
				if mode == "deaf" && !strings.HasPrefix(tc.op, "hello") {
					// a frame may have been cut: the control connection is gone
					if err := c.Signal(context.Background(), "c", "", 15); !errors.Is(err, ErrClosed) {
						t.Fatalf("call after a cut write: %v, want ErrClosed", err)
					}
				}
			})
		}
	}
}

// TestWaitIsNotBounded: wait legitimately lasts as long as the process; with
// the default bounds only the caller's context ends it, with the caller's
// error.
func TestWaitIsNotBounded(t *testing.T) {
	c, err := New(context.Background(), hungAgent(t, "silent"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now() // before the deadline is set: it runs from there
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err = c.Wait(ctx, "c", "")
	if !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "no answer") || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("wait: %v after %s, want the caller's deadline", err, time.Since(start))
	}
	if opTimeouts[protocol.OpWait] != 0 {
		t.Fatalf("wait has a default bound %s", opTimeouts[protocol.OpWait])
	}
}
