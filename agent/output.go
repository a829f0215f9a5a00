package agent

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"time"
)

// Stream numbers in an output file.
const (
	streamStdout = 1
	streamStderr = 2
)

// recHeader: 8 bytes unix nanoseconds, 1 byte stream, 4 bytes length.
const recHeader = 13

// output is a process's captured output: an append-only file of timestamped
// records, read by attachers (from the first byte) and by logs. Followers
// wait on notify, which is closed and replaced on every append.
type output struct {
	mu     sync.Mutex
	path   string
	f      *os.File // write side, closed by finish (exec records can pile up)
	size   int64
	index  []recIndex
	closed bool
	notify chan struct{}
}

type recIndex struct {
	off  int64
	time int64
}

func newOutput(path string) (*output, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return &output{path: path, f: f, notify: make(chan struct{})}, nil
}

func (o *output) write(stream byte, p []byte) error {
	now := time.Now().UnixNano()
	b := make([]byte, recHeader+len(p))
	binary.BigEndian.PutUint64(b, uint64(now))
	b[8] = stream
	binary.BigEndian.PutUint32(b[9:], uint32(len(p)))
	copy(b[recHeader:], p)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return errors.New("output closed")
	}
	if _, err := o.f.WriteAt(b, o.size); err != nil {
		return err
	}
	o.index = append(o.index, recIndex{o.size, now})
	o.size += int64(len(b))
	close(o.notify)
	o.notify = make(chan struct{})
	return nil
}

// finish marks the output complete: followers see EOF.
func (o *output) finish() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.closed = true
		o.f.Close()
		close(o.notify)
	}
}

func (o *output) isFinished() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed
}

func (o *output) remove() {
	o.finish()
	os.Remove(o.path)
}

// open returns a reader from offset 0; the caller closes it.
func (o *output) open(follow bool, done <-chan struct{}) (*outReader, error) {
	f, err := os.Open(o.path)
	if err != nil {
		return nil, err
	}
	return &outReader{o: o, f: f, follow: follow, done: done}, nil
}

func (o *output) state() (int64, bool, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.size, o.closed, o.notify
}

// startOffset returns the offset of the first record to deliver for tail
// (<0 all) and since.
func (o *output) startOffset(f *os.File, tail int, since time.Time, streams map[byte]bool) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	idx := o.index
	if !since.IsZero() {
		s := since.UnixNano()
		i := 0
		for i < len(idx) && idx[i].time < s {
			i++
		}
		idx = idx[i:]
	}
	if tail >= 0 && tail < len(idx) {
		// count records of the selected streams from the end
		var hdr [recHeader]byte
		n := 0
		i := len(idx) - 1
		for ; i >= 0 && n < tail; i-- {
			if _, err := f.ReadAt(hdr[:], idx[i].off); err == nil && streams[hdr[8]] {
				n++
			}
		}
		if i+1 < len(idx) {
			return idx[i+1].off
		}
		return o.size
	}
	if len(idx) == 0 {
		return o.size
	}
	return idx[0].off
}

type record struct {
	stream byte
	time   time.Time
	data   []byte
}

// reader iterates records from an offset.
type outReader struct {
	o      *output
	f      *os.File
	off    int64
	follow bool
	done   <-chan struct{} // reader cancelled
}

var errCancelled = errors.New("cancelled")

func (r *outReader) next() (record, error) {
	for {
		size, closed, notify := r.o.state()
		if r.off+recHeader <= size {
			var hdr [recHeader]byte
			if _, err := r.f.ReadAt(hdr[:], r.off); err != nil {
				return record{}, err
			}
			n := int64(binary.BigEndian.Uint32(hdr[9:]))
			data := make([]byte, n)
			if _, err := r.f.ReadAt(data, r.off+recHeader); err != nil {
				return record{}, err
			}
			r.off += recHeader + n
			return record{hdr[8], time.Unix(0, int64(binary.BigEndian.Uint64(hdr[:]))), data}, nil
		}
		if closed || !r.follow {
			return record{}, io.EOF
		}
		select {
		case <-notify:
		case <-r.done:
			return record{}, errCancelled
		}
	}
}

func (r *outReader) close() { r.f.Close() }
