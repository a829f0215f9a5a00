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
// drops the bytes and is reported by Err and Close.
type Writer struct {
	path  string
	half  int64 // cap of each file
	block int

	mu     sync.Mutex
	f      *os.File
	size   int64 // of the current file
	buf    []byte
	timer  *time.Timer
	err    error
	writes int // write syscalls, for tests
}

// Open starts a fresh console log at path (an older one, and its .1, are
// dropped) capped at max bytes in all.
func Open(path string, max int64) (*Writer, error) {
	if max < MinMax {
		return nil, errors.New("console log cap below 2 KiB")
	}
	if err := os.Remove(path + ".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	w := &Writer{path: path, half: max / 2, block: int(min(block, max/2)), f: f}
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

// rotateLocked makes the current file PATH.1 and starts an empty PATH.
func (w *Writer) rotateLocked() {
	w.f.Close()
	w.f = nil
	err := os.Rename(w.path, w.path+".1")
	if err == nil {
		w.f, err = os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	}
	if err != nil {
		// keep the newest bytes anyway: start the current file over
		w.f, err = os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
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
	if w.f != nil {
		if err := w.f.Close(); err != nil && w.err == nil {
			w.err = err
		}
		w.f = nil
	}
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
