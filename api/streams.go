package api

// streams.go owns a process's streams: /attach and /tty/resize, the
// hijacked connection that pumps stdio (stream, also /exec/start's) and
// Docker's stdout/stderr frames (also the logs').

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

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

// stream hijacks the connection and pumps a process's stdio over it:
// 101 UPGRADED (or 200 when the client did not ask to upgrade), raw bytes
// with a tty, Docker frames without. The client's half-close ends stdin.
// The connection is closed when the process's output ends.
//
// open is called after the 101 went out: attaching to a container that has
// not started yet blocks until its pod starts, and the original client only
// starts the pod once the upgrade was answered. An error from open is sent
// in-band (a stderr frame, or raw text with a tty) before closing.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, tty bool, cancel context.CancelFunc, open func() (sandbox.Stdio, func(), error)) {
	defer cancel()
	hj, ok := findHijacker(w)
	if !ok {
		writeError(w, 500, "connection cannot be hijacked")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		s.Log.Error("hijack", "err", err)
		return
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.hijacked, sw.status = true, 101
	}
	defer conn.Close()
	upgrade := strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") || r.Header.Get("Upgrade") != ""
	status := "HTTP/1.1 200 OK\r\n"
	if upgrade {
		status = "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
	}
	brw.WriteString(status + "Content-Type: application/vnd.docker.raw-stream\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
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
	defer closeStdio(st)
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
			// client went away: stop the other side too
			closeStdio(st)
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
