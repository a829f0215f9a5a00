package api_test

// limits_test.go tests limits.go over real TCP connections: stalled bodies
// are cut, slow ones are not, hijacked streams outlive every timeout, and
// the connection cap refuses with a 503.

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
)

// serveLimited serves h with l on a fresh loopback port, as cmd/hyperd
// does (LimitListener under NewHTTPServer); it returns the address and the
// limiter (nil without a cap).
func serveLimited(t *testing.T, h http.Handler, l api.Limits) (string, *api.ConnLimiter) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln = api.LimitListener(ln, l.MaxConns, true)
	lim, _ := ln.(*api.ConnLimiter)
	hs := api.NewHTTPServer(h, l)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return addr, lim
}

// limitedAPI is the real API (podtest driver) behind serveLimited.
func limitedAPI(t *testing.T, l api.Limits) (string, *api.ConnLimiter, *client.Client) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := pod.New(pod.Config{DataRoot: t.TempDir(), Driver: podtest.NewDriver(), Images: &podtest.Images{Root: t.TempDir()}, Logger: log, StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	addr, lim := serveLimited(t, (&api.Server{Pods: d, Log: log, Version: "test"}).Handler(), l)
	c, err := client.New("tcp://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	return addr, lim, c
}

// A client that sends its headers and then stalls its body loses the
// connection within about BodyIdle (twice at most: the handler's read, then
// the server's discard of what the handler left), whether or not the
// handler reads the body. Before limits.go the connection stayed open.
func TestStalledBodyClosesConnection(t *testing.T) {
	const idle = 200 * time.Millisecond
	addr, _, _ := limitedAPI(t, api.Limits{HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, BodyIdle: idle})
	tests := []struct {
		name, head, part string
		status, contains string
	}{
		{"read body, partial", "POST /pod/create HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n", `{"id":`, "400", "nothing received for 200ms"},
		{"read body, nothing sent", "POST /pod/create HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n", "", "400", "nothing received for 200ms"},
		{"read body, chunked", "POST /pod/create HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", "6\r\n{\"id\":\r\n", "400", "nothing received"},
		{"body ignored by handler", "POST /container/start?container=nope HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n", "", "404", "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			io.WriteString(c, tc.head+tc.part)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c) // returns at EOF: the server closed
			took := time.Since(start)
			if err != nil {
				t.Fatalf("connection still open after %s: %v (read %q)", took, err, got)
			}
			if took > 2*idle+time.Second {
				t.Fatalf("closed only after %s", took)
			}
			if !strings.HasPrefix(string(got), "HTTP/1.1 "+tc.status) || !strings.Contains(string(got), tc.contains) {
				t.Fatalf("answer %q", got)
			}
		})
	}
}

// A body that keeps flowing is never cut, however long it takes in all:
// the deadline is one of inactivity (as /image/load and /image/build need).
func TestSlowBodyIsNotCut(t *testing.T) {
	const idle = 300 * time.Millisecond
	addr, _, _ := limitedAPI(t, api.Limits{HeaderTimeout: 5 * time.Second, BodyIdle: idle})
	body := `{"id":"slow","containers":[{"image":"busybox","command":["true"]}]}`
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "POST /pod/create HTTP/1.1\r\nHost: h\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n")
	for i := 0; i < len(body); i += 2 {
		time.Sleep(idle / 8)
		io.WriteString(c, body[i:min(i+2, len(body))])
	}
	if took := time.Since(start); took < 3*idle {
		t.Fatalf("the body took only %s, not longer than the deadline", took)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 || !strings.Contains(string(b), `"ID":"slow"`) {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

// A hijacked connection keeps no deadline, even when its handler read part
// of a body (which set one) and returned while the stream goes on in a
// goroutine: bodyIdle must not arm the deadline it gives an unfinished body
// after the handler on a connection that is no longer the server's. With
// that deadline the echo below fails with an i/o timeout.
func TestHijackedConnKeepsNoDeadline(t *testing.T) {
	const idle = 100 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b [2]byte
		if _, err := io.ReadFull(r.Body, b[:]); err != nil {
			t.Errorf("body: %v", err)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		go func() {
			defer conn.Close()
			io.WriteString(conn, "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
			brw.Discard(8) // the rest of the body
			line, err := brw.ReadString('\n')
			if err != nil {
				io.WriteString(conn, "server read: "+err.Error()+"\n")
				return
			}
			io.WriteString(conn, "echo "+line)
		}()
	})
	addr, _ := serveLimited(t, h, api.Limits{HeaderTimeout: time.Second, IdleTimeout: idle, BodyIdle: idle})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 2 of the 10 body bytes first: the handler returns with its body unfinished
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 10\r\n\r\nab")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	time.Sleep(5 * idle)
	io.WriteString(c, "cdefghij")
	io.WriteString(c, "hello\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := br.ReadString('\n')
	if line != "echo hello\n" {
		t.Fatalf("after %s quiet the stream answered %q (%v)", 5*idle, line, err)
	}
}

// Real attach and exec streams outlive every server timeout: an exec of
// cat left quiet for several times BodyIdle and IdleTimeout still echoes.
func TestStreamsOutliveTimeouts(t *testing.T) {
	const idle = 100 * time.Millisecond
	_, _, cl := limitedAPI(t, api.Limits{HeaderTimeout: idle, IdleTimeout: idle, BodyIdle: idle})
	c := ctx(t)
	id, err := cl.CreatePod(c, []byte(`{"id":"quiet","containers":[{"image":"sleeper","name":"q"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	at, err := cl.Attach(c, "q", false)
	if err != nil || at.Status != 101 {
		t.Fatalf("attach %v %v", at, err)
	}
	if err := cl.StartPod(c, id); err != nil {
		t.Fatal(err)
	}
	eid, err := cl.ExecCreate(c, "q", []string{"cat"}, false)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.ExecStart(c, "q", eid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * idle)
	var out bytes.Buffer
	if err := st.Pump(false, strings.NewReader("ping\n"), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ping\n" {
		t.Fatalf("exec after %s quiet: %q", 5*idle, out.String())
	}
	// the attach, quiet all along, still ends with its container
	if err := cl.KillContainer(c, "q", 9); err != nil {
		t.Fatal(err)
	}
	if err := at.Pump(false, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("attach after %s: %v", 5*idle, err)
	}
}

// Beyond MaxConns a connection is refused at once with a 503 naming the
// cap; a slot freed by a closed connection serves the next one.
func TestConnectionCap(t *testing.T) {
	addr, lim, _ := limitedAPI(t, api.Limits{HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxConns: 2})
	ping := func(c net.Conn) (int, string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("ping: %v", err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	held := []net.Conn{dial(), dial()}
	for i, c := range held {
		if code, body := ping(c); code != 200 {
			t.Fatalf("conn %d within the cap: %d %s", i, code, body)
		}
	}
	if code, body := ping(dial()); code != 503 || !strings.Contains(body, "too many connections (--max-connections 2)") {
		t.Fatalf("conn beyond the cap: %d %s", code, body)
	}
	held[0].Close()
	waitFor(t, func() bool { return lim.Open() == 1 })
	if code, body := ping(dial()); code != 200 {
		t.Fatalf("conn after a slot was freed: %d %s", code, body)
	}
}
