package api

// limits.go owns what bounds the API server's connections: the http.Server
// timeouts (NewHTTPServer), the inactivity deadline on request bodies
// (bodyIdle) with hijacked connections freed of it, and the cap on
// connections served at once (LimitListener).
//
// There is no whole-request read timeout and no write timeout: /image/load
// and /image/build upload bodies of any length, and attach, exec, logs
// follow, pulls and builds answer for as long as they last. What is bounded
// instead is silence: the headers must arrive within HeaderTimeout, a body
// must make progress at least every BodyIdle, a kept-alive connection may
// wait IdleTimeout for its next request.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Limits bound the API server. A zero duration or count is no bound.
type Limits struct {
	HeaderTimeout time.Duration // to read a request's headers
	IdleTimeout   time.Duration // a kept-alive connection waiting for its next request
	BodyIdle      time.Duration // longest pause while a request body is being read
	MaxConns      int           // connections served at once (see LimitListener)
}

// DefaultLimits are hyperd's: 30 s for the headers, 2 min idle between
// requests, 60 s without a byte of a body, 1024 connections.
func DefaultLimits() Limits {
	return Limits{HeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, BodyIdle: time.Minute, MaxConns: 1024}
}

// NewHTTPServer is the http.Server for h with l's timeouts. Its ErrorLog is
// left for the caller. MaxConns is the listener's (LimitListener).
func NewHTTPServer(h http.Handler, l Limits) *http.Server {
	return &http.Server{Handler: bodyIdle(h, l.BodyIdle), ReadHeaderTimeout: l.HeaderTimeout, IdleTimeout: l.IdleTimeout}
}

// bodyIdle gives every read of a request body a deadline idle from now, so
// a body that stops arriving fails the read (and the handler with it) while
// a long upload that keeps flowing is never cut. The deadline is left alone
// once the body ended: net/http then clears it and starts its own background
// read, which a deadline would turn into a cancelled request. A handler that
// returns without reading its whole body leaves the server to discard the
// rest: that too gets idle. A hijacked connection is left without one.
func bodyIdle(h http.Handler, idle time.Duration) http.Handler {
	if idle <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		b := &idleBody{ReadCloser: r.Body, rc: rc, idle: idle}
		hw := &hijackWriter{ResponseWriter: w}
		r.Body = b
		h.ServeHTTP(hw, r)
		if !hw.hijacked && !b.done() {
			rc.SetReadDeadline(time.Now().Add(idle))
		}
	})
}

// idleBody is a request body whose reads each get a deadline.
type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	mu   sync.Mutex
	eof  bool
}

func (b *idleBody) done() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.done() {
		return b.ReadCloser.Read(p)
	}
	if err := b.rc.SetReadDeadline(time.Now().Add(b.idle)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, err
	}
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("request body: nothing received for %s: %w", b.idle, err)
	}
	return n, err
}

// hijackWriter tells bodyIdle that the handler hijacked the connection:
// the stream is then the handler's for as long as it lasts (net/http clears
// the connection's deadlines on hijack), and bodyIdle must not set one on
// it after the handler returned.
type hijackWriter struct {
	http.ResponseWriter
	hijacked bool
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	c, brw, err := hj.Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, brw, err
}

func (w *hijackWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// maxRefusing bounds the refusals being written at once; beyond it an
// excess connection is closed without a word.
const maxRefusing = 16

// ConnLimiter is a listener serving at most max connections at once. A
// connection beyond the cap is refused, not queued: it is accepted, answered
// 503 with a JSON message naming the cap (when refusal is not nil; a TLS
// listener wrapped around this one passes nil and such a connection is just
// closed), and closed. Queueing would make a client wait for a slot that
// long-lived attach or logs-follow streams may never free, indistinguishable
// from a hung daemon.
type ConnLimiter struct {
	net.Listener
	slots    chan struct{}
	refusing chan struct{}
	refusal  []byte
}

// LimitListener caps ln at max connections (max <= 0: ln itself, no cap).
// plain says the connections speak HTTP as accepted (no TLS on top), so a
// refused one can be answered.
func LimitListener(ln net.Listener, max int, plain bool) net.Listener {
	if max <= 0 {
		return ln
	}
	l := &ConnLimiter{Listener: ln, slots: make(chan struct{}, max), refusing: make(chan struct{}, maxRefusing)}
	if plain {
		body := fmt.Sprintf(`{"message":"hyperd: too many connections (--max-connections %d): try again later"}`+"\n", max)
		l.refusal = fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	}
	return l
}

// Open is the number of connections being served.
func (l *ConnLimiter) Open() int { return len(l.slots) }

// Accept returns the next connection within the cap, refusing the others.
func (l *ConnLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			l.refuse(c)
		}
	}
}

// refuse answers c 503 and closes it, in the background and within a
// second, so the accept loop goes on; the request is drained first where
// it arrives in time, so the client reads the answer instead of a reset.
func (l *ConnLimiter) refuse(c net.Conn) {
	if l.refusal == nil {
		c.Close()
		return
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(l.refusal); err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// limitedConn frees its slot when closed (once, however often closed).
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite half-closes like the conn it wraps (a hijacked stream ends its
// output this way, see stream).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
