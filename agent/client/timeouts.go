package client

// timeouts.go owns how long the daemon waits for the agent: the bound of
// each request/response call (opTimeouts), of a stream's hello, and the
// error a call that ran out of time returns.

import (
	"context"
	"fmt"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// opTimeouts bound each call whose context has no earlier deadline, so a
// hung agent fails an API request instead of hanging it. The values are
// generous for what the agent does for each op; 0 means unbounded (wait
// blocks until the process exits, by design: only the caller's context
// ends it).
var opTimeouts = map[string]time.Duration{
	protocol.OpVersion:  30 * time.Second,
	protocol.OpPing:     30 * time.Second,
	protocol.OpSetupPod: 30 * time.Second,
	// add mounts the rootfs and volumes and writes the pod's files (up to
	// the API's 16 MiB): a slow disk may take a while
	protocol.OpAdd: 2 * time.Minute,
	// a chunk of a big file (at most 1 MiB), within add's own bound
	protocol.OpStage:  time.Minute,
	protocol.OpStart:  time.Minute,
	protocol.OpExec:   time.Minute,
	protocol.OpSignal: 30 * time.Second,
	protocol.OpWait:   0,
	protocol.OpResize: 30 * time.Second,
	protocol.OpStats:  30 * time.Second,
	// remove kills what is left and deletes the container's writable
	// layer, which can be large
	protocol.OpRemove: 2 * time.Minute,
	// shutdown stops every container first
	protocol.OpShutdown: 2 * time.Minute,
}

// defaultOpTimeout bounds an op missing from opTimeouts.
const defaultOpTimeout = time.Minute

// helloTimeout bounds the hello of a stream (attach, logs, dial, commit);
// the stream itself is bounded by its reader, not by time.
const helloTimeout = 30 * time.Second

// opTimeout is how long op may take on this client; 0: unbounded.
func (c *Client) opTimeout(op string) time.Duration {
	if d, ok := c.timeouts[op]; ok {
		return d
	}
	return defaultOpTimeout
}

// withTimeout bounds ctx by d (0: not at all). The cause of a context
// ended by this bound is a timeoutError; timedOut extracts it.
func withTimeout(ctx context.Context, op string, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, d, &timeoutError{op: op, d: d})
}

// timeoutError says which agent call ran out of time. It is a
// context.DeadlineExceeded (the API answers 504).
type timeoutError struct {
	op string
	d  time.Duration
	// probe is what a ping sent after the timeout found (probeAfter): ""
	// when none was sent
	probe string
}

func (e *timeoutError) Error() string {
	if e.probe != "" {
		return fmt.Sprintf("agent %s: no answer within %s (%s)", e.op, e.d, e.probe)
	}
	return fmt.Sprintf("agent %s: no answer within %s (the agent is hung or overloaded)", e.op, e.d)
}

// probeTimeout bounds the ping probeAfter sends (Client.probe).
const probeTimeout = 5 * time.Second

// probeAfter says, for a call that timed out, whether the agent still
// answers on the same connection: a stuck call in a live agent and a dead
// agent or connection are different bugs, and the error is all a CI log
// may have. It returns err itself, or a copy of a timeoutError with the
// probe's finding.
func (c *Client) probeAfter(err error) error {
	te, ok := err.(*timeoutError)
	if !ok || te.op == protocol.OpPing {
		return err
	}
	pctx, cancel := context.WithTimeout(context.Background(), c.probe)
	defer cancel()
	t0 := time.Now()
	perr := c.call(pctx, protocol.OpPing, nil, nil)
	out := *te
	if perr == nil {
		out.probe = fmt.Sprintf("the agent answered a ping at once (%v): this call is stuck inside it", time.Since(t0).Round(time.Millisecond))
	} else {
		out.probe = fmt.Sprintf("a ping got no answer either (%v): the agent or its connection is hung", perr)
	}
	return &out
}

func (e *timeoutError) Unwrap() error { return context.DeadlineExceeded }

// ctxErr is the error of an ended call context: our own bound's
// timeoutError, else the caller's context error.
func ctxErr(ctx context.Context) error {
	if te, ok := context.Cause(ctx).(*timeoutError); ok {
		return te
	}
	return ctx.Err()
}
