// tcpbench_test.go tests the server and the client against each other on
// loopback, and the server's answers to broken clients.
package tcpbench

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// server starts a Server on a loopback port; results collects what it
// reported, in order.
func server(t *testing.T) (addr string, results func() ([]Result, []error)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var rs []Result
	var errs []error
	s := &Server{Timeout: time.Minute, Report: func(r Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		rs = append(rs, r)
		errs = append(errs, err)
	}}
	go s.Serve(ln)
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), func() ([]Result, []error) {
		// a result is reported after the client saw the answer: wait a little
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := len(rs)
			mu.Unlock()
			if n > 0 {
				break
			}
		}
		mu.Lock()
		defer mu.Unlock()
		return rs, errs
	}
}

func TestClientAgainstServer(t *testing.T) {
	const n = 3<<20 + 17
	cases := []struct {
		name    string
		run     func(c Client) error
		cmd     string
		bytes   int64
		rtts    int // the server's round trips
		timeSet bool
	}{
		{"sink", func(c Client) error {
			cl, srv, err := c.Sink(n)
			if err == nil && (cl <= 0 || srv <= 0 || srv > cl) {
				t.Errorf("sink times: client %v, server %v", cl, srv)
			}
			return err
		}, "SINK", n, 0, true},
		{"source", func(c Client) error {
			cl, srv, err := c.Source(n)
			if err == nil && (cl <= 0 || srv <= 0) {
				t.Errorf("source times: client %v, server %v", cl, srv)
			}
			return err
		}, "SOURCE", n, 0, true},
		{"ping", func(c Client) error {
			rtts, err := c.Ping(7)
			if err == nil && len(rtts) != 7 {
				t.Errorf("%d round trips, want 7", len(rtts))
			}
			return err
		}, "ECHO", 0, Warmup + 7 - 1, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, results := server(t)
			if err := c.run(Client{Addr: addr}); err != nil {
				t.Fatal(err)
			}
			rs, errs := results()
			if len(rs) != 1 || errs[0] != nil {
				t.Fatalf("server reported %+v %v, want one result", rs, errs)
			}
			r := rs[0]
			if r.Cmd != c.cmd || r.Bytes != c.bytes || len(r.RTTs) != c.rtts || (r.Time > 0) != c.timeSet {
				t.Errorf("server result %s %d bytes %v %d rtts, want %s %d bytes, time %v, %d rtts", r.Cmd, r.Bytes, r.Time, len(r.RTTs), c.cmd, c.bytes, c.timeSet, c.rtts)
			}
		})
	}
}

// The server's errors for clients that break the protocol.
func TestServerErrors(t *testing.T) {
	cases := []struct {
		name, send string
		wantErr    string
	}{
		{"no command", "", "command"},
		{"unknown command", "HELLO\n", `unknown command "HELLO\n"`},
		{"bad count", "SINK many\n", `SINK: byte count "many"`},
		{"zero count", "SOURCE 0\n", `SOURCE: byte count "0"`},
		{"short sink", "SINK 10\nabc", "SINK: 3 of 10 bytes: EOF"},
		{"source without DONE", "SOURCE 5\nNOPE\n", `the client's DONE: "NOPE\n"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				io.WriteString(a, c.send)
				// a pipe has no half-close: drain what the server sends, then close
				go io.Copy(io.Discard, a)
				time.Sleep(50 * time.Millisecond)
				a.Close()
			}()
			_, err := Handle(b)
			b.Close()
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Handle: %v, want an error with %q", err, c.wantErr)
			}
		})
	}
}

func TestOKLine(t *testing.T) {
	cases := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"OK 1234\n", 1234, ""},
		{"OK 5\r\n", 5, ""},
		{"ERR boom\n", 0, "answered"},
		{"OK x\n", 0, "answered"},
		{"OK 1", 0, "EOF"},
	}
	for _, c := range cases {
		got, err := okLine(bufio.NewReader(strings.NewReader(c.in)))
		if c.wantErr == "" && (err != nil || got != c.want) {
			t.Errorf("okLine(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("okLine(%q) = %v, %v; want an error with %q", c.in, got, err, c.wantErr)
		}
	}
}
