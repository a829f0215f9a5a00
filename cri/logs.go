// This file owns the CRI log files: a follower per started container
// copies its output from the core's log (Core.Logs, following) into the
// file the kubelet named, in the CRI log format; followers resume after a
// restart; ReopenContainerLog reopens a file after the kubelet rotated it.

package cri

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// logWriters are the running followers, by container id.
type logWriters struct {
	core Core
	log  *slog.Logger
	mu   sync.Mutex
	w    map[string]*logWriter
}

type logWriter struct {
	cid, path string
	mu        sync.Mutex // guards f and last
	f         *os.File
	last      time.Time // time of the last record written
	cancel    context.CancelFunc
	done      chan struct{}
}

func newLogWriters(core Core, log *slog.Logger) *logWriters {
	return &logWriters{core: core, log: log, w: map[string]*logWriter{}}
}

// start begins following cid's output into path, from records after
// since (zero: all). A follower already running for cid is kept.
func (l *logWriters) start(cid, path string, since time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w := l.w[cid]; w != nil {
		select {
		case <-w.done:
		default:
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &logWriter{cid: cid, path: path, f: f, cancel: cancel, done: make(chan struct{})}
	l.w[cid] = w
	w.last = since
	go func() {
		defer close(w.done)
		for {
			opt := pod.LogOptions{Stdout: true, Stderr: true, Follow: true, Tail: -1, Since: w.since()}
			err := l.core.Logs(ctx, cid, opt, w.write)
			if err != nil && ctx.Err() == nil {
				l.log.Warn("cri: container log follower ended", "container", cid, "path", path, "err", err)
			}
			// the core ends a follow when the container's log is not
			// live: it exited, or (after a restart of hyperd) its sandbox
			// is not reattached yet; follow again while it runs
			if ctx.Err() != nil || !l.running(cid) {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		w.mu.Lock()
		w.f.Close()
		w.f = nil
		w.mu.Unlock()
	}()
	return nil
}

// running: the core says cid runs (or may: its pod is being reattached).
func (l *logWriters) running(cid string) bool {
	ci, err := l.core.ContainerInfo(cid)
	return err == nil && ci.Status.Phase == pod.PhaseRunning
}

// since is where a follow starts: after the last record written.
func (w *logWriter) since() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last.IsZero() {
		return w.last
	}
	return w.last.Add(time.Nanosecond)
}

// write appends one record of the core's log in the CRI format: a line
// per newline-terminated piece ("F"), a last piece without a newline as a
// partial line ("P") that the next record of the stream continues.
func (w *logWriter) write(e pod.LogEntry) error {
	stream := e.Stream
	if stream != "stderr" {
		stream = "stdout"
	}
	ts := e.Time.UTC().Format(time.RFC3339Nano)
	var buf bytes.Buffer
	data := e.Data
	for len(data) > 0 {
		line, rest, full := bytes.Cut(data, []byte{'\n'})
		tag := "P"
		if full {
			tag = "F"
		}
		buf.WriteString(ts + " " + stream + " " + tag + " ")
		buf.Write(line)
		buf.WriteByte('\n')
		data = rest
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	if e.Time.After(w.last) {
		w.last = e.Time
	}
	_, err := w.f.Write(buf.Bytes())
	return err
}

// wait waits up to d for cid's follower to finish (its container exited
// and its output is all in the file).
func (l *logWriters) wait(cid string, d time.Duration) {
	l.mu.Lock()
	w := l.w[cid]
	l.mu.Unlock()
	if w == nil {
		return
	}
	select {
	case <-w.done:
	case <-time.After(d):
	}
}

// stop ends cid's follower (removal of the container).
func (l *logWriters) stop(cid string) {
	l.mu.Lock()
	w := l.w[cid]
	delete(l.w, cid)
	l.mu.Unlock()
	if w != nil {
		w.cancel()
		<-w.done
	}
}

func (l *logWriters) closeAll() {
	l.mu.Lock()
	ids := make([]string, 0, len(l.w))
	for id := range l.w {
		ids = append(ids, id)
	}
	l.mu.Unlock()
	for _, id := range ids {
		l.stop(id)
	}
}

// reopen closes and reopens cid's file at its path; false when no
// follower writes it.
func (l *logWriters) reopen(cid string) (bool, error) {
	l.mu.Lock()
	w := l.w[cid]
	l.mu.Unlock()
	if w == nil {
		return false, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return false, nil
	}
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return true, err
	}
	w.f.Close()
	w.f = f
	return true, nil
}

// lastLogTime is the time of the last line of a CRI log file (zero when
// the file is missing, empty or unreadable).
func lastLogTime(path string) time.Time {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return time.Time{}
	}
	off := max(st.Size()-64<<10, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return time.Time{}
	}
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	ts, _, _ := bytes.Cut(b, []byte{' '})
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return time.Time{}
	}
	return t
}

// resumeLogs starts a follower for every started CRI container with a log
// path, after the last time its file holds (hyperd restarted: what the
// container wrote meanwhile is in the core's log).
func (s *Server) resumeLogs() {
	for _, e := range s.core.ListContainers("", "") {
		id, _, _ := strings.Cut(e, ":") // id:name:pod:phase
		ci, err := s.core.ContainerInfo(id)
		if err != nil {
			continue
		}
		c, ok := asContainer(ci)
		if !ok || c.meta.LogPath == "" || !c.started() {
			continue
		}
		if err := s.logs.start(id, c.meta.LogPath, lastLogTime(c.meta.LogPath)); err != nil {
			s.log.Warn("cri: resuming a container's log", "container", id, "err", err)
		}
	}
}

// ReopenContainerLog reopens a running container's log file at its path.
func (s *Server) ReopenContainerLog(ctx context.Context, r *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	c, err := s.runningContainer(r.ContainerId)
	if err != nil {
		return nil, err
	}
	ok, err := s.logs.reopen(c.id())
	if err != nil {
		return nil, grpcErr(err)
	}
	if !ok {
		return nil, precondition("container %s has no CRI log file (no log_path)", c.id())
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
