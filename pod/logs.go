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
// written by the daemon as it follows the agent's log stream, rotated by
// the pod's LogLimits (logrotate.go): <cid>.log is the current file, then
// <cid>.log.1 (newest) ... Readers open their own descriptors and walk the
// files oldest first; followers are woken on every append or rotation and
// stop when the log is closed for the current run and they reached its end.
type logFile struct {
	path string
	lim  LogLimits

	mu      sync.Mutex
	f       *os.File
	size    int64  // of the current file
	seq     uint64 // rotations of this logFile: the current file's sequence number
	records int64  // in the current file
	last    time.Time
	live    bool          // a follower of the agent stream is writing
	wake    chan struct{} // closed and replaced on every append or state change
	persist func(LogIndex)
}

const logHeader = 13

func openLogFile(path string, lim LogLimits, idx LogIndex, persist func(LogIndex)) (*logFile, error) {
	if lim.MaxSize <= 0 || lim.MaxFiles < 1 {
		return nil, fmt.Errorf("log %s: bad limits %+v", path, lim)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	dropStale(path, lim.MaxFiles)
	l := &logFile{path: path, lim: lim, f: f, size: st.Size(), wake: make(chan struct{}), persist: persist}
	// A kill -9 may have left a torn record: scan and truncate to the last whole one.
	good, n, last := scanLog(f)
	if good != l.size {
		f.Truncate(good)
		l.size = good
	}
	l.records, l.last = n, last
	if n == 0 && lim.MaxFiles > 1 {
		// just rotated: the last record is the newest rotated file's
		if f1, err := os.Open(segPath(path, 1)); err == nil {
			_, _, l.last = scanLog(f1)
			f1.Close()
		}
	}
	if l.last.IsZero() {
		l.last = idx.Last
	}
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
	b := append(h[:], rec.Data...)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("log closed")
	}
	if l.size > 0 && l.size+int64(len(b)) > l.lim.MaxSize {
		if err := l.rotateLocked(); err != nil {
			l.signal()
			return fmt.Errorf("rotate log %s: %w", l.path, err)
		}
	}
	if _, err := l.f.WriteAt(b, l.size); err != nil {
		return err
	}
	l.size += int64(len(b))
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

// logSeg is a reader's descriptor of one file of the log.
type logSeg struct {
	f   *os.File
	seq uint64
}

// openSegLocked opens the file of sequence number seq, or, when it was
// rotated away (the reader fell more than MaxFiles behind), the oldest one
// kept. l.mu is held, so names and sequence numbers agree.
func (l *logFile) openSegLocked(seq uint64) (logSeg, error) {
	k := int(min(l.seq-seq, uint64(l.lim.MaxFiles-1)))
	for ; k >= 0; k-- {
		f, err := os.Open(segPath(l.path, k))
		if err == nil {
			return logSeg{f, l.seq - uint64(k)}, nil
		}
		if !errors.Is(err, os.ErrNotExist) || k == 0 {
			return logSeg{}, err
		}
	}
	return logSeg{}, os.ErrNotExist
}

// segEnd is how far seg may be read: the current file's written size, or
// the whole file once it was rotated (it no longer changes). sealed says so.
func (l *logFile) segEnd(seg logSeg) (end int64, sealed, live bool, wake chan struct{}, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	live, wake = l.live, l.wake
	if seg.seq == l.seq {
		return l.size, false, live, wake, nil
	}
	st, err := seg.f.Stat()
	if err != nil {
		return 0, true, live, wake, err
	}
	return st.Size(), true, live, wake, nil
}

// logPos is a record's place: which of the reader's files, and the offset.
type logPos struct {
	seg int
	off int64
}

// read calls fn for every record (filtered), the last tail ones if tail >= 0,
// and with follow waits for more while the log is live or until ctx ends.
// It walks the rotated files oldest first, then the current one, and a
// follower moves on to the next file when the one it reads is rotated.
func (l *logFile) read(ctx context.Context, stdout, stderr bool, tail int, since time.Time, follow bool, fn func(LogEntry) error) error {
	// the files as they are now, oldest first, each with its readable end
	var segs []logSeg
	var ends []int64
	defer func() {
		for _, s := range segs {
			s.f.Close()
		}
	}()
	l.mu.Lock()
	if l.f == nil {
		l.mu.Unlock()
		return errors.New("log closed")
	}
	for k := l.lim.MaxFiles - 1; k >= 0; k-- {
		f, err := os.Open(segPath(l.path, k))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && k > 0 {
				continue
			}
			l.mu.Unlock()
			return err
		}
		end := l.size
		if k > 0 {
			st, err := f.Stat()
			if err != nil {
				f.Close()
				l.mu.Unlock()
				return err
			}
			end = st.Size()
		}
		segs = append(segs, logSeg{f, l.seq - uint64(k)})
		ends = append(ends, end)
	}
	l.mu.Unlock()

	pos := logPos{}
	if tail >= 0 {
		var err error
		if pos, err = tailStart(segs, ends, stdout, stderr, since, tail); err != nil {
			return err
		}
	}
	cur := segs[pos.seg]
	off := pos.off
	var h [logHeader]byte
	for {
		end, sealed, live, wake, err := l.segEnd(cur)
		if err != nil {
			return err
		}
		for off+logHeader <= end {
			if _, err := cur.f.ReadAt(h[:], off); err != nil {
				return err
			}
			ln := int64(binary.BigEndian.Uint32(h[9:]))
			if off+logHeader+ln > end {
				break
			}
			data := make([]byte, ln)
			if _, err := cur.f.ReadAt(data, off+logHeader); err != nil {
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
		if sealed {
			// the file was rotated: go on with the next one
			next := -1
			for i, s := range segs {
				if s.seq == cur.seq+1 {
					next = i
				}
			}
			if next >= 0 {
				cur = segs[next]
			} else {
				l.mu.Lock()
				s, err := l.openSegLocked(cur.seq + 1)
				l.mu.Unlock()
				if err != nil {
					return err
				}
				segs = append(segs, s)
				cur = s
			}
			off = 0
			continue
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

// tailStart finds where the last tail matching records begin across segs
// (the end of the last file for tail 0 or no match).
func tailStart(segs []logSeg, ends []int64, stdout, stderr bool, since time.Time, tail int) (logPos, error) {
	last := len(segs) - 1
	if tail == 0 {
		return logPos{last, ends[last]}, nil
	}
	// a ring of the last tail matches
	ring := make([]logPos, 0, min(tail, 1024))
	n := 0
	var h [logHeader]byte
	for i, s := range segs {
		r := bufio.NewReader(io.NewSectionReader(s.f, 0, ends[i]))
		off := int64(0)
		for {
			if _, err := io.ReadFull(r, h[:]); err != nil {
				break
			}
			ln := int64(binary.BigEndian.Uint32(h[9:]))
			if _, err := r.Discard(int(ln)); err != nil {
				break
			}
			if match(h, stdout, stderr, since) {
				if len(ring) < tail {
					ring = append(ring, logPos{i, off})
				} else {
					ring[n%tail] = logPos{i, off}
				}
				n++
			}
			off += logHeader + ln
		}
	}
	if n == 0 {
		return logPos{last, ends[last]}, nil
	}
	if n <= tail {
		return ring[0], nil
	}
	return ring[n%tail], nil
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
func (l *logFile) followAgent(ctx context.Context, ag sandbox.Agent, cid string, after time.Time) (n int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lr, err := ag.Logs(ctx, cid, sandbox.LogOptions{Stdout: true, Stderr: true, Follow: true, Tail: -1})
	if err != nil {
		return 0, fmt.Errorf("follow logs of %s: %w", cid, err)
	}
	defer lr.Close()
	go func() { <-ctx.Done(); lr.Close() }()
	for {
		rec, err := lr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return n, nil
			}
			return n, err
		}
		if !after.IsZero() && !rec.Time.After(after) {
			continue
		}
		if err := l.append(rec); err != nil {
			return n, err
		}
		n++
	}
}

// openLogs opens a container's log with the limits of its pod's log config
// over the daemon's default (the spec was validated at create).
func (d *Daemon) openLogs(cid string, lc LogConfig, idx LogIndex) (*logFile, error) {
	def := d.cfg.LogLimits
	if def.MaxSize <= 0 || def.MaxFiles < 1 {
		def = DefaultLogLimits
	}
	lim, err := ParseLogLimits(lc.Config, def)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(d.cfg.DataRoot, "logs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, cid+".log")
	// persist the index (a bbolt write, fsynced) at most every 200ms per
	// container, by the host's clock: the records' times come from the
	// guest, which must not choose the daemon's fsync rate
	lf, err := openLogFile(path, lim, idx, rateLimited(200*time.Millisecond, time.Now, func(li LogIndex) {
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
