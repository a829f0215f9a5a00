package api

// streams.go owns a process's streams: /attach and /tty/resize, the
// hijacked connection that pumps stdio (stream, also /exec/start's), its
// teardown when the client hangs up, and Docker's stdout/stderr frames
// (also the logs').

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// attach streams a container's stdio; type=pod attaches to the pod's
// first container.
func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if q(r, "type") == "pod" {
		// original: type=pod&value=<pod> attaches to the pod's first container
		pi, err := s.Pods.PodInfo(id)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if len(pi.Spec.Containers) == 0 {
			s.fail(w, r, badParam("pod %s has no container", id))
			return
		}
		id = pi.Spec.Containers[0].ContainerID
	}
	stdin := boolParam(r, "stdin", true)
	tty, err := s.Pods.ContainerTty(id, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	s.stream(w, r, tty, cancel, func() (sandbox.Stdio, func(), error) {
		st, _, release, err := s.Pods.Attach(ctx, id, "", stdin)
		return st, release, err
	})
}

// ttyResize resizes the tty of a container, or of its exec.
func (s *Server) ttyResize(r *http.Request) (any, error) {
	id, err := ctrRef(r)
	if err != nil {
		return nil, err
	}
	wd, err1 := strconv.Atoi(q(r, "w", "width"))
	ht, err2 := strconv.Atoi(q(r, "h", "height"))
	if err1 != nil || err2 != nil || wd <= 0 || ht <= 0 || wd > 65535 || ht > 65535 {
		return nil, badParam("w and h must be positive numbers")
	}
	return struct{}{}, s.Pods.Resize(r.Context(), id, q(r, "exec"), wd, ht)
}

// writeFrame writes one Docker stream-multiplexing frame:
// [1=stdout|2=stderr, 0, 0, 0, big-endian uint32 length] + data.
func writeFrame(w io.Writer, stream string, data []byte) error {
	var h [8]byte
	h[0] = 1
	if stream == "stderr" {
		h[0] = 2
	}
	binary.BigEndian.PutUint32(h[4:], uint32(len(data)))
	if _, err := w.Write(append(h[:], data...)); err != nil {
		return err
	}
	return nil
}

type frameWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	stream string
	raw    bool
}

func (f *frameWriter) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.raw {
		return f.w.Write(b)
	}
	if err := writeFrame(f.w, f.stream, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

type closeWriter interface{ CloseWrite() error }

// maxStreamBody bounds the body of an upgrading stream request (a client's
// JSON config), read and dropped before the upgrade.
const maxStreamBody = 64 << 10

// stream hijacks the connection and pumps a process's stdio over it:
// 101 UPGRADED (or 200 when the client did not ask to upgrade), raw bytes
// with a tty, Docker frames without. The client's half-close ends stdin.
// The connection is closed when the process's output ends, or as soon as
// the client hangs up (watchHangup): the agent's streams are closed then
// too, and every goroutine of the stream ends, however silent the process.
//
// open is called after the 101 went out: attaching to a container that has
// not started yet blocks until its pod starts, and the original client only
// starts the pod once the upgrade was answered (as Docker, whose attach to
// a created container waits for its start). The wait ends when the client
// hangs up (its context is cancelled). An error from open is sent in-band
// (a stderr frame, or raw text with a tty) before closing.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, tty bool, cancel context.CancelFunc, open func() (sandbox.Stdio, func(), error)) {
	defer cancel()
	upgrade := strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") || r.Header.Get("Upgrade") != ""
	if upgrade && r.ContentLength > 0 {
		// The docker CLI sends its exec start config ({"Detach":false,
		// "Tty":false}) as the body of the upgrade request: not stdin,
		// which follows the upgrade. Read it off the connection first.
		if r.ContentLength > maxStreamBody {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("a stream request's body is at most %d bytes (stdin follows the upgrade)", maxStreamBody))
			abandon(cancel, open)
			return
		}
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			abandon(cancel, open)
			return
		}
	}
	hj, ok := findHijacker(w)
	if !ok {
		writeError(w, 500, "connection cannot be hijacked")
		abandon(cancel, open)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		s.Log.Error("hijack", "err", err)
		abandon(cancel, open)
		return
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.hijacked, sw.status = true, 101
	}
	defer conn.Close()
	status := "HTTP/1.1 200 OK\r\n"
	if upgrade {
		status = "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
	}
	brw.WriteString(status + "Content-Type: application/vnd.docker.raw-stream\r\n\r\n")
	if err := brw.Flush(); err != nil {
		abandon(cancel, open) // the client is gone already
		return
	}
	ss := &session{conn: conn, cancel: cancel}
	stopWatch := watchHangup(conn, ss.teardown)
	defer stopWatch()
	defer ss.teardown()
	st, release, err := open()
	if err != nil {
		msg := []byte("hyperd: " + err.Error() + "\n")
		if tty {
			conn.Write(msg)
		} else {
			writeFrame(conn, "stderr", msg)
		}
		return
	}
	defer release()
	if !ss.set(st) {
		return // the client hung up while open returned
	}
	if st.Stdin != nil {
		go func() {
			io.Copy(st.Stdin, brw.Reader)
			st.Stdin.Close()
		}()
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	pump := func(src io.Reader, name string) {
		defer wg.Done()
		if src == nil {
			return
		}
		if _, err := io.Copy(&frameWriter{mu: &mu, w: conn, stream: name, raw: tty}, src); err != nil {
			// the client went away: stop the other side too
			ss.teardown()
		}
	}
	wg.Add(2)
	go pump(st.Stdout, "stdout")
	go pump(st.Stderr, "stderr")
	wg.Wait()
	if cw, ok := conn.(closeWriter); ok {
		cw.CloseWrite()
	}
}

// abandon ends an open whose stream will never be served (the client is
// gone before the upgrade went out): a waiting attach is cancelled, and
// streams already opened (exec's) are closed.
func abandon(cancel context.CancelFunc, open func() (sandbox.Stdio, func(), error)) {
	cancel()
	if st, release, err := open(); err == nil {
		closeAll(st)
		release()
	}
}

// session is one hijacked stream's teardown: whichever comes first (the
// output ending, a write to the client failing, the client hanging up)
// cancels the open, closes the process's streams and the client's
// connection, once.
type session struct {
	conn   net.Conn
	cancel context.CancelFunc
	mu     sync.Mutex
	st     *sandbox.Stdio
	done   bool
}

// set records the opened streams; false (and the streams closed) when the
// session was torn down already.
func (ss *session) set(st sandbox.Stdio) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.done {
		closeAll(st)
		return false
	}
	ss.st = &st
	return true
}

func (ss *session) teardown() {
	ss.mu.Lock()
	if ss.done {
		ss.mu.Unlock()
		return
	}
	ss.done = true
	st := ss.st
	ss.mu.Unlock()
	ss.cancel()
	if st != nil {
		closeAll(*st)
	}
	ss.conn.Close()
}

// closeAll closes a process's streams: the output ones, and stdin, whose
// pending write (a process not reading it) is cut first so its copier
// ends. Closing stdin is EOF for the process, as the client's own close
// would have been.
func closeAll(st sandbox.Stdio) {
	closeStdio(st)
	if st.Stdin != nil {
		if d, ok := st.Stdin.(interface{ SetWriteDeadline(time.Time) error }); ok {
			d.SetWriteDeadline(time.Unix(1, 0))
		}
		st.Stdin.Close()
	}
}

// watchHangup calls gone once the client has closed its connection for good
// (not a half-close: that only ends stdin), without reading from it (the
// stdin copier does), and returns a stop that ends the watch and waits for
// it. The watch polls a duplicate of the socket for POLLHUP/POLLERR through
// the runtime's poller: a unix socket reports the peer's close at once; a
// TCP one when a reset arrives (a write, or keepalive, after the peer
// closed). A connection without a file descriptor is not watched: a
// failing write still ends its stream.
func watchHangup(conn net.Conn, gone func()) (stop func()) {
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok { // TLS
		conn = nc.NetConn()
	}
	fc, ok := conn.(interface{ File() (*os.File, error) })
	if !ok {
		return func() {}
	}
	f, err := fc.File()
	if err != nil {
		return func() {}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hup := false
		err := rc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd)}} // no events: only HUP/ERR/NVAL report
			n, err := unix.Poll(pfd, 0)
			hup = err == nil && n > 0
			return hup || (err != nil && err != unix.EINTR)
		})
		if err == nil && hup {
			gone()
		}
	}()
	return func() {
		f.Close() // wakes the watch with an error
		<-done
	}
}

// closeStdio closes the output streams (stdin is closed by its copier).
func closeStdio(st sandbox.Stdio) {
	if st.Stdout != nil {
		st.Stdout.Close()
	}
	if st.Stderr != nil {
		st.Stderr.Close()
	}
}

func findHijacker(w http.ResponseWriter) (http.Hijacker, bool) {
	for {
		if hj, ok := w.(http.Hijacker); ok {
			return hj, true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil, false
		}
		w = u.Unwrap()
	}
}
