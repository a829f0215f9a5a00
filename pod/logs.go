// This file owns container logs on the host: the log file format, following
// a container's log stream from the agent, and reading logs back.

package pod

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// Host-side container log: a file of records
//
//	[1 byte stream: 1 stdout, 2 stderr][8 bytes unix nanos BE][4 bytes len BE][data]
//
// written by the daemon as it follows the agent's log stream. Readers tail
// the file; followers are woken on every append and stop when the log is
// closed for the current run and they reached its end.
type logFile struct {
	path string

	mu      sync.Mutex
	f       *os.File
	size    int64
	records int64
	last    time.Time
	live    bool          // a follower of the agent stream is writing
	wake    chan struct{} // closed and replaced on every append or state change
	persist func(LogIndex)
}

const logHeader = 13

func openLogFile(path string, idx LogIndex, persist func(LogIndex)) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	l := &logFile{path: path, f: f, size: st.Size(), records: idx.Records, last: idx.Last, wake: make(chan struct{}), persist: persist}
	// A kill -9 may have left a torn record: scan and truncate to the last whole one.
	good, n, last := scanLog(f)
	if good != l.size {
		f.Truncate(good)
		l.size = good
	}
	l.records, l.last = n, last
	return l, nil
}

func scanLog(f *os.File) (good int64, n int64, last time.Time) {
	r := bufio.NewReader(io.NewSectionReader(f, 0, 1<<62))
	var h [logHeader]byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		ln := int64(binary.BigEndian.Uint32(h[9:]))
		if _, err := r.Discard(int(ln)); err != nil {
			return
		}
		good += logHeader + ln
		n++
		last = time.Unix(0, int64(binary.BigEndian.Uint64(h[1:])))
	}
}

func (l *logFile) append(rec sandbox.LogRecord) error {
	var h [logHeader]byte
	h[0] = 1
	if rec.Stream == "stderr" {
		h[0] = 2
	}
	t := recordTime(rec.Time, time.Now())
	binary.BigEndian.PutUint64(h[1:], uint64(t.UnixNano()))
	binary.BigEndian.PutUint32(h[9:], uint32(len(rec.Data)))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("log closed")
	}
	if _, err := l.f.WriteAt(append(h[:], rec.Data...), l.size); err != nil {
		return err
	}
	l.size += int64(logHeader + len(rec.Data))
	l.records++
	l.last = t
	l.signal()
	if l.persist != nil {
		l.persist(LogIndex{Path: l.path, Size: l.size, Records: l.records, Last: l.last})
	}
	return nil
}

func (l *logFile) signal() {
	close(l.wake)
	l.wake = make(chan struct{})
}

func (l *logFile) setLive(v bool) {
	l.mu.Lock()
	l.live = v
	l.signal()
	l.mu.Unlock()
}

func (l *logFile) isLive() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live
}

func (l *logFile) lastTime() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func (l *logFile) close() {
	l.mu.Lock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	l.live = false
	l.signal()
	l.mu.Unlock()
}

// LogEntry is one record read back.
type LogEntry struct {
	Stream string
	Time   time.Time
	Data   []byte
}

// read calls fn for every record (filtered), the last tail ones if tail >= 0,
// and with follow waits for more while the log is live or until ctx ends.
func (l *logFile) read(ctx context.Context, stdout, stderr bool, tail int, since time.Time, follow bool, fn func(LogEntry) error) error {
	l.mu.Lock()
	f := l.f
	l.mu.Unlock()
	if f == nil {
		return errors.New("log closed")
	}
	var off int64
	if tail >= 0 {
		// find offsets of all matching records, keep the last tail
		var offs []int64
		l.mu.Lock()
		end := l.size
		l.mu.Unlock()
		r := bufio.NewReader(io.NewSectionReader(f, 0, end))
		var h [logHeader]byte
		pos := int64(0)
		for {
			if _, err := io.ReadFull(r, h[:]); err != nil {
				break
			}
			ln := int64(binary.BigEndian.Uint32(h[9:]))
			if match(h, stdout, stderr, since) {
				offs = append(offs, pos)
			}
			if _, err := r.Discard(int(ln)); err != nil {
				break
			}
			pos += logHeader + ln
		}
		if tail == 0 {
			off = pos
		} else if len(offs) > tail {
			off = offs[len(offs)-tail]
		} else if len(offs) > 0 {
			off = offs[0]
		} else {
			off = pos
		}
	}
	var h [logHeader]byte
	for {
		l.mu.Lock()
		end, live, wake := l.size, l.live, l.wake
		l.mu.Unlock()
		for off+logHeader <= end {
			if _, err := f.ReadAt(h[:], off); err != nil {
				return err
			}
			ln := int64(binary.BigEndian.Uint32(h[9:]))
			if off+logHeader+ln > end {
				break
			}
			data := make([]byte, ln)
			if _, err := f.ReadAt(data, off+logHeader); err != nil {
				return err
			}
			off += logHeader + ln
			if !match(h, stdout, stderr, since) {
				continue
			}
			st := "stdout"
			if h[0] == 2 {
				st = "stderr"
			}
			if err := fn(LogEntry{Stream: st, Time: time.Unix(0, int64(binary.BigEndian.Uint64(h[1:]))), Data: data}); err != nil {
				return err
			}
		}
		if !follow || !live {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		}
	}
}

func match(h [logHeader]byte, stdout, stderr bool, since time.Time) bool {
	if h[0] == 1 && !stdout || h[0] == 2 && !stderr {
		return false
	}
	if !since.IsZero() && time.Unix(0, int64(binary.BigEndian.Uint64(h[1:]))).Before(since) {
		return false
	}
	return true
}

// followAgent copies the agent's log stream of a container into the file
// until the stream ends (the process exited) or ctx is cancelled. Records at
// or before 'after' are skipped (they were persisted by a previous daemon).
func (l *logFile) followAgent(ctx context.Context, ag sandbox.Agent, cid string, after time.Time) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lr, err := ag.Logs(ctx, cid, sandbox.LogOptions{Stdout: true, Stderr: true, Follow: true, Tail: -1})
	if err != nil {
		return fmt.Errorf("follow logs of %s: %w", cid, err)
	}
	defer lr.Close()
	go func() { <-ctx.Done(); lr.Close() }()
	for {
		rec, err := lr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !after.IsZero() && !rec.Time.After(after) {
			continue
		}
		if err := l.append(rec); err != nil {
			return err
		}
	}
}

func (d *Daemon) openLogs(cid string, idx LogIndex) (*logFile, error) {
	dir := filepath.Join(d.cfg.DataRoot, "logs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, cid+".log")
	// persist the index (a bbolt write, fsynced) at most every 200ms per
	// container, by the host's clock: the records' times come from the
	// guest, which must not choose the daemon's fsync rate
	lf, err := openLogFile(path, idx, rateLimited(200*time.Millisecond, time.Now, func(li LogIndex) {
		li.ContainerID = cid
		d.st.put(bLogs, cid, li)
	}))
	if err != nil {
		return nil, err
	}
	return lf, nil
}

// rateLimited calls fn at most once per interval of now's clock, dropping
// the calls in between (each LogIndex supersedes the last).
func rateLimited(interval time.Duration, now func() time.Time, fn func(LogIndex)) func(LogIndex) {
	var last time.Time
	return func(li LogIndex) {
		t := now()
		if !last.IsZero() && t.Sub(last) < interval {
			return
		}
		last = t
		fn(li)
	}
}

// recordTime is the time stored for a record the guest stamped t: the
// guest's clock, unless it is unset or absurd (before 2000, or more than a
// day ahead of the host's), then the host's.
func recordTime(t, now time.Time) time.Time {
	if t.Before(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) || t.After(now.Add(24*time.Hour)) {
		return now
	}
	return t
}
