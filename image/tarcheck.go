// This file owns the check that a layer tar from a guest (a commit, a
// build step's changes) is whole: every entry complete and the archive's
// end marker (two zero 512-byte blocks, POSIX.1-1988 ustar) present. A
// stream cut short at an entry boundary reads as a clean end to a tar
// reader; only the missing end marker tells.

package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
)

const tarBlock = 512

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// checkTar reads a whole tar stream from r and returns nil only if it is
// complete: each entry's data whole, then the end marker, then nothing but
// zero bytes (a writer may pad to its record size).
func checkTar(r io.Reader) error {
	cr := &countReader{r: r}
	tr := tar.NewReader(cr)
	var end int64 // offset just after the last entry's padded data
	for {
		_, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("layer tar: %v: %w", err, ErrInvalid)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return fmt.Errorf("layer tar: %v: %w", err, ErrInvalid)
		}
		end = cr.n
		// the data's padding to a block is read with the next header
		if rem := end % tarBlock; rem != 0 {
			end += tarBlock - rem
		}
	}
	// archive/tar reads blocks exactly and ends cleanly (io.EOF) after
	// two zero blocks, a zero block then no more input, or no more input
	// at a header; a zero block followed by anything else is ErrHeader.
	// Only the first of these is the end marker: two blocks past end.
	if cr.n < end+2*tarBlock {
		return fmt.Errorf("layer tar: cut short: no end-of-archive marker after %d bytes: %w", cr.n, ErrInvalid)
	}
	var buf [4096]byte
	for {
		n, err := cr.r.Read(buf[:])
		for _, b := range buf[:n] {
			if b != 0 {
				return fmt.Errorf("layer tar: data after the end-of-archive marker: %w", ErrInvalid)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("layer tar: %v: %w", err, ErrInvalid)
		}
	}
}
