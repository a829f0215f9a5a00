package image

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func (s *Store) blobPath(digest string) string {
	return filepath.Join(s.root, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

func (s *Store) hasBlob(digest string) bool {
	_, err := os.Stat(s.blobPath(digest))
	return err == nil
}

func (s *Store) readBlob(digest string) ([]byte, error) {
	b, err := os.ReadFile(s.blobPath(digest))
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	}
	return b, err
}

// putBlobBytes stores a small blob whose digest is computed here, pinned by l.
func (s *Store) putBlobBytes(l *lease, b []byte) (string, error) {
	d := "sha256:" + sha256hex(b)
	l.pin(d) // before looking: a GC may be removing it right now
	if s.hasBlob(d) {
		return d, nil
	}
	_, _, _, err := s.putBlob(l, bytes.NewReader(b), d, "", nil)
	return d, err
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// putBlob copies r into a temporary file, checking that its sha256 is digest (when
// given) and, when diffID is non-empty, that the sha256 of its decompressed content is
// diffID. Only a verified blob is renamed into blobs/, and only once l pins it, so no
// GC can remove it before the image referencing it is registered. It returns the
// blob's digest, its size and its uncompressed size. count, if non-nil, is called
// with the bytes read so far.
func (s *Store) putBlob(l *lease, r io.Reader, digest, diffID string, count func(int64)) (string, int64, int64, error) {
	f, err := os.CreateTemp(s.tmpDir(), "blob-")
	if err != nil {
		return "", 0, 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	defer f.Close()

	h := sha256.New()
	var w io.Writer = io.MultiWriter(f, h)
	var pw *io.PipeWriter
	type ures struct {
		diff string
		n    int64
		err  error
	}
	done := make(chan ures, 1)
	if diffID != "" {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		w = io.MultiWriter(w, pw)
		go func() {
			uh := sha256.New()
			dr, err := decompress(bufio.NewReaderSize(pr, 1<<16))
			if err != nil {
				pr.CloseWithError(err)
				done <- ures{err: err}
				return
			}
			n, err := io.Copy(uh, dr)
			dr.Close()
			io.Copy(io.Discard, pr) // drain trailing bytes so the writer never blocks
			pr.CloseWithError(err)
			done <- ures{"sha256:" + hex.EncodeToString(uh.Sum(nil)), n, err}
		}()
	}
	var cw io.Writer = w
	if count != nil {
		cw = &countWriter{w: w, f: count}
	}
	size, err := io.CopyBuffer(cw, r, make([]byte, 1<<17))
	var usize int64
	if pw != nil {
		pw.CloseWithError(err)
		u := <-done
		if err == nil && u.err != nil {
			err = fmt.Errorf("decompressing layer: %w", u.err)
		}
		if err == nil && u.diff != diffID {
			err = fmt.Errorf("layer diff id mismatch: content is %s, config says %s: %w", u.diff, diffID, ErrInvalid)
		}
		usize = u.n
	}
	if err != nil {
		return "", 0, 0, err
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if digest != "" && got != digest {
		return "", 0, 0, fmt.Errorf("blob digest mismatch: got %s, want %s: %w", got, digest, ErrInvalid)
	}
	if err := f.Sync(); err != nil {
		return "", 0, 0, err
	}
	if err := f.Close(); err != nil {
		return "", 0, 0, err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return "", 0, 0, err
	}
	l.pin(got)
	if err := os.Rename(tmp, s.blobPath(got)); err != nil {
		return "", 0, 0, err
	}
	s.hookAt("stored", got)
	return got, size, usize, nil
}

type countWriter struct {
	w io.Writer
	n int64
	f func(int64)
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.f(c.n)
	return n, err
}

// decompress returns a reader of the uncompressed content of a layer that may be
// gzip- or zstd-compressed or plain tar.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 1<<16)
	}
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		return gzip.NewReader(br)
	case len(magic) == 4 && bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// openLayer opens a stored layer blob, decompressed.
func (s *Store) openLayer(digest string) (io.ReadCloser, error) {
	f, err := os.Open(s.blobPath(digest))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("layer blob %s missing: %w", digest, ErrNotFound)
		}
		return nil, err
	}
	d, err := decompress(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("layer %s: %w", digest, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{d, closers{d, f}}, nil
}

type closers []io.Closer

func (c closers) Close() error {
	var first error
	for _, x := range c {
		if err := x.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func openFile(p string) (io.ReadCloser, error) { return os.Open(p) }

type hashWriter struct{ h hash.Hash }

func newHashWriter() *hashWriter                  { return &hashWriter{sha256.New()} }
func (w *hashWriter) Write(p []byte) (int, error) { return w.h.Write(p) }
func (w *hashWriter) digest() string              { return "sha256:" + hex.EncodeToString(w.h.Sum(nil)) }
