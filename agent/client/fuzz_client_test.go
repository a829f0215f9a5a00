package client

// FuzzClient: the host-side agent client reading what a hostile agent
// (a compromised guest) sends. The control connection carries the fuzz
// input's first part, the stream connections (logs, attach, udp dial) its
// second. The client must not panic, every call must end (with a result or
// an error) once the agent's bytes run out, and a log record it returns
// must name a real stream.
//
//	go test -fuzz=FuzzClient -fuzztime=30s ./agent/client

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// fuzzFrame is p as one protocol frame.
func fuzzFrame(p string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...)
}

func fuzzFrames(ps ...string) []byte {
	var b []byte
	for _, p := range ps {
		b = append(b, fuzzFrame(p)...)
	}
	return b
}

// fuzzControlOps are the control calls, in the order of their request IDs
// (1, 2, ...), each decoding a different result type.
var fuzzControlOps = []func(ctx context.Context, c *Client) error{
	func(ctx context.Context, c *Client) error { _, err := c.Version(ctx); return err },
	func(ctx context.Context, c *Client) error { _, err := c.Wait(ctx, "c", ""); return err },
	func(ctx context.Context, c *Client) error { _, err := c.Stats(ctx); return err },
	func(ctx context.Context, c *Client) error { _, err := c.Ping(ctx); return err },
	func(ctx context.Context, c *Client) error { return c.StartContainer(ctx, "c") },
}

// fuzzAgentControl plays the agent on the control connection: it reads
// the client's hello and answers with control's first frame (or all of it
// and hangs up, if that is not one whole frame), then reads one request per control op, signalling
// got for each, then sends the rest of control and hangs up.
func fuzzAgentControl(conn net.Conn, control []byte, got chan<- struct{}) {
	defer conn.Close()
	if _, err := protocol.ReadFrame(conn); err != nil {
		return
	}
	if len(control) < 4 || uint64(binary.BigEndian.Uint32(control))+4 > uint64(len(control)) {
		conn.Write(control) // not one whole frame: all of it, and hang up
		return
	}
	first := int(binary.BigEndian.Uint32(control)) + 4
	if _, err := conn.Write(control[:first]); err != nil {
		return
	}
	for range fuzzControlOps {
		if _, err := protocol.ReadFrame(conn); err != nil {
			return
		}
		got <- struct{}{}
	}
	conn.Write(control[first:])
}

func FuzzClient(f *testing.F) {
	hello := `{"version":1,"agent":"fuzz"}`
	ok := func(id int, result string) string {
		b, _ := json.Marshal(protocol.Response{ID: uint64(id), Result: json.RawMessage(result)})
		return string(b)
	}
	good := fuzzFrames(hello, ok(1, `{"protocol":1,"agent":"x"}`), ok(2, `{"code":3,"signal":9}`),
		ok(3, `{"cpu_count":2,"containers":[{"id":"c","cpu_usage_ns":5}]}`), ok(4, `null`), ok(5, ``))
	logs := fuzzFrames(hello, `{"stream":"stdout","data":"aGk="}`, `{"stream":"stderr","time":"2026-01-02T03:04:05Z"}`, `{"stream":"other"}`)
	for _, s := range []struct{ control, stream []byte }{
		{good, logs},
		{fuzzFrames(hello, ok(5, `{}`), ok(1, `{"protocol":"x"}`), `{"id":2,"error":{"code":"not_found","message":"m"}}`, ok(2, `{}`), ok(0, `{}`)),
			fuzzFrames(`{"version":1,"tty":true}`, `{}`, `not json`)},
		{fuzzFrames(`{"version":2}`), fuzzFrames(`{"version":1,"error":{"code":"x","message":"y"}}`)},
		{fuzzFrames(hello, ok(1, `{"agent":`)), append(fuzzFrames(hello), 0xff, 0xff, 0xff, 0xff)},
		{append(fuzzFrames(hello), 0x7f, 0xff, 0xff, 0xff, '{'), append(fuzzFrames(hello), 0, 3, 'a', 'b', 'c', 0xff, 0xff)},
		{fuzzFrames(hello, `{"id":1,"result":{"containers":[`+`{},{},{}`+`]}}`, `[]`, `{"id":18446744073709551615}`), nil},
		{nil, nil},
	} {
		f.Add(s.control, s.stream)
	}
	f.Fuzz(func(t *testing.T, control, stream []byte) {
		if len(control)+len(stream) > 1<<20 {
			return
		}
		var agents sync.WaitGroup
		defer agents.Wait()
		// Every stream connection: the agent drains what the client sends
		// and sends stream, then hangs up.
		dial := func(ctx context.Context) (net.Conn, error) {
			a, b := net.Pipe()
			agents.Add(2)
			go func() { defer agents.Done(); io.Copy(io.Discard, b) }()
			go func() { defer agents.Done(); b.Write(stream); b.Close() }()
			return a, nil
		}
		a, b := net.Pipe()
		got := make(chan struct{}, len(fuzzControlOps))
		agents.Add(1)
		go func() { defer agents.Done(); fuzzAgentControl(b, control, got) }()

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := NewConn(ctx, a, dial)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatal("the hello waited for its deadline after the agent hung up")
			}
			a.Close()
			return
		}
		defer c.Close()
		// One call at a time until the agent has its request, so that
		// request i is always fuzzControlOps[i]; the answers come after.
		var calls sync.WaitGroup
		for _, op := range fuzzControlOps {
			done := make(chan struct{})
			calls.Add(1)
			go func() { defer calls.Done(); defer close(done); op(ctx, c) }()
			select {
			case <-got:
			case <-done:
			}
		}
		waitOrFail(t, &calls, "a control call")
		if ctx.Err() != nil {
			t.Fatal("a control call waited for its deadline after the agent hung up")
		}

		if lr, err := c.Logs(ctx, "c", sandbox.LogOptions{Stdout: true, Stderr: true}); err == nil {
			for {
				r, err := lr.Next()
				if err != nil {
					break
				}
				if r.Stream != "stdout" && r.Stream != "stderr" {
					t.Fatalf("log record of stream %q", r.Stream)
				}
			}
			lr.Close()
		}
		if st, err := c.Attach(ctx, "c", "", true); err == nil {
			for _, cl := range []io.Closer{st.Stdout, st.Stderr, st.Stdin} {
				if cl != nil {
					cl.Close()
				}
			}
		}
		if conn, err := c.Dial(ctx, "udp", 53); err == nil {
			buf := make([]byte, 512)
			for {
				if _, err := conn.Read(buf); err != nil {
					break
				}
			}
			conn.Close()
		}
		if ctx.Err() != nil {
			t.Fatal("a stream waited for its deadline after the agent hung up")
		}
	})
}

// waitOrFail waits for wg, failing t if that takes longer than the
// context the calls run under.
func waitOrFail(t *testing.T, wg *sync.WaitGroup, what string) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not end after the agent hung up", what)
	}
}
