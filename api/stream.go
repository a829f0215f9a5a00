package api

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/hyperhq/hyperd-go/sandbox"
)

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
