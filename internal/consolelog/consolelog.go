// This file owns the capped, buffered console log writer and the reader
// of its end (see doc.go for the two-file layout).

package consolelog

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"
)

const (
	// DefaultMax is the cap the kvm driver gives a VM's console log.
	DefaultMax = 1 << 20
	// MinMax is the smallest cap accepted.
	MinMax = 2 << 10
	// block is the most bytes buffered before they are written.
	block = 8 << 10
	// FlushDelay is how long console bytes may wait in the buffer: a
	// failure's tail is on disk this long after the guest printed it.
	FlushDelay = 50 * time.Millisecond
)

// Writer is the capped, buffered console log. It is safe for concurrent
// use; Write never fails (a console must not stop the VM): a write error
// drops the bytes and is reported by Err and Close. It opens its two files
// once, in Open, and never again: the VMM that feeds it may be jailed
// (no path to them, no open(2)) by the time it rotates.
type Writer struct {
	half  int64 // cap of each file
	block int

	mu     sync.Mutex
	f      *os.File // PATH, the current file
	prev   *os.File // PATH.1, the one before
	size   int64    // of the current file
	buf    []byte
	timer  *time.Timer
	err    error
	writes int // write syscalls, for tests
}

// Open starts a fresh console log at path and path.1 (older content of
// both is dropped), capped at max bytes in all.
func Open(path string, max int64) (*Writer, error) {
	if max < MinMax {
		return nil, errors.New("console log cap below 2 KiB")
	}
	prev, err := os.OpenFile(path+".1", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	// read back when it rotates
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		prev.Close()
		return nil, err
	}
	w := &Writer{half: max / 2, block: int(min(block, max/2)), f: f, prev: prev}
	w.buf = make([]byte, 0, w.block)
	return w, nil
}

// Write buffers p; full blocks are written at once, the rest within
// FlushDelay.
func (w *Writer) Write(p []byte) (int, error) {
	n := len(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return n, nil
	}
	for len(p) > 0 {
		k := min(len(p), w.block-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == w.block {
			w.flushLocked()
		}
	}
	if len(w.buf) > 0 && w.timer == nil {
		w.timer = time.AfterFunc(FlushDelay, func() { w.Flush() })
	}
	return n, nil
}

// Flush writes what is buffered.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		w.flushLocked()
	}
	return w.err
}

func (w *Writer) flushLocked() {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if len(w.buf) == 0 {
		return
	}
	if w.size > 0 && w.size+int64(len(w.buf)) > w.half {
		w.rotateLocked()
	}
	if w.f != nil {
		n, err := w.f.Write(w.buf)
		w.writes++
		w.size += int64(n)
		if err != nil && w.err == nil {
			w.err = err
		}
	}
	w.buf = w.buf[:0]
}

// rotateLocked copies the current file over PATH.1 and empties the
// current one: with pread, write, ftruncate and lseek on the two open
// files, nothing else (no rename, no open: the VMM may be jailed). A
// rotation copies at most half the cap, once per half the cap written.
func (w *Writer) rotateLocked() {
	err := w.prev.Truncate(0)
	if err == nil {
		_, err = w.prev.Seek(0, io.SeekStart)
	}
	buf := make([]byte, 32<<10)
	for off := int64(0); err == nil && off < w.size; {
		n, rerr := w.f.ReadAt(buf[:min(int64(len(buf)), w.size-off)], off)
		if n > 0 {
			_, err = w.prev.Write(buf[:n])
		}
		off += int64(n)
		if rerr != nil && err == nil && off < w.size {
			err = rerr
		}
	}
	// the current file starts over even if the copy failed: the newest
	// bytes matter most
	terr := w.f.Truncate(0)
	if terr == nil {
		_, terr = w.f.Seek(0, io.SeekStart)
	}
	if err == nil {
		err = terr
	}
	if err != nil && w.err == nil {
		w.err = err
	}
	w.size = 0
}

// Close flushes and closes the log.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return w.err
	}
	w.flushLocked()
	for _, f := range []*os.File{w.f, w.prev} {
		if err := f.Close(); err != nil && w.err == nil {
			w.err = err
		}
	}
	w.f, w.prev = nil, nil
	return w.err
}

// Tail returns the last n bytes of the console log at path (PATH.1 then
// PATH). A missing PATH.1 is no error; a missing PATH is.
func Tail(path string, n int64) ([]byte, error) {
	cur, err := lastBytes(path, n)
	if err != nil {
		return nil, err
	}
	if int64(len(cur)) >= n {
		return cur, nil
	}
	old, err := lastBytes(path+".1", n-int64(len(cur)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return append(old, cur...), nil
}

func lastBytes(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		if _, err := f.Seek(st.Size()-n, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, n))
}
