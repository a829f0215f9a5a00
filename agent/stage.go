// This file owns container files on their way in: files staged in chunks
// by the host (OpStage) for content too big for one frame, and the files a
// container gets, put on disk in its state directory for the shim to copy
// into the container's root (a shim message is one bounded datagram; a
// file of any accepted size is not).
package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"golang.org/x/sys/unix"
)

// maxStaged bounds the bytes staged and not yet taken by a container, all
// names together: the host's own limits are far below (the API takes a pod
// spec of 16 MiB, uri files of 16 MiB each). A variable for tests.
var maxStaged int64 = 512 << 20

// stage writes one chunk of a staged file.
func (s *Server) stage(ch protocol.StageChunk) *protocol.Error {
	if !validID(ch.Name) {
		return protocol.Errorf(protocol.CodeBadRequest, "invalid staged file name %q", ch.Name)
	}
	if len(ch.Data) > protocol.StageChunkMax {
		return protocol.Errorf(protocol.CodeBadRequest, "staged chunk of %d bytes: the limit is %d", len(ch.Data), protocol.StageChunkMax)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.staged == nil {
		s.staged = map[string]int64{}
	}
	var total int64
	for _, n := range s.staged {
		total += n
	}
	prev := s.staged[ch.Name]
	if !ch.Append {
		total -= prev
		prev = 0
	}
	if total+int64(len(ch.Data)) > maxStaged {
		return protocol.Errorf(protocol.CodeBadRequest, "staged files would exceed %d bytes", maxStaged)
	}
	dir := s.statePath("staged")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return protocol.Errorf(protocol.CodeInternal, "stage: %v", err)
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if ch.Append {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	f, err := os.OpenFile(filepath.Join(dir, ch.Name), flags|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return protocol.Errorf(protocol.CodeInternal, "stage %s: %v", ch.Name, err)
	}
	_, werr := f.Write(ch.Data)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return protocol.Errorf(protocol.CodeInternal, "stage %s: %v", ch.Name, werr)
	}
	s.staged[ch.Name] = prev + int64(len(ch.Data))
	return nil
}

// takeStaged moves the staged file name to dst; it is no longer staged.
func (s *Server) takeStaged(name, dst string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.staged[name]; !ok || !validID(name) {
		return fmt.Errorf("no staged file %q", name)
	}
	if err := os.Rename(filepath.Join(s.statePath("staged"), name), dst); err != nil {
		return err
	}
	delete(s.staged, name)
	return nil
}

// writeFiles puts the container's files under its state directory and
// returns them as the shim gets them: Staged is the path there, Content
// empty.
func (c *container) writeFiles() ([]protocol.File, error) {
	if len(c.spec.Files) == 0 {
		return nil, nil
	}
	dir := filepath.Join(c.dir, "files")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var out []protocol.File
	for i, f := range c.spec.Files {
		p := filepath.Join(dir, strconv.Itoa(i))
		if f.Staged != "" {
			if err := c.s.takeStaged(f.Staged, p); err != nil {
				return nil, fmt.Errorf("file %s: %w", f.Path, err)
			}
		} else if err := os.WriteFile(p, f.Content, 0o600); err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Path, err)
		}
		// the shim opens it by name in the directory openStaged sends
		f.Content, f.Staged = nil, strconv.Itoa(i)
		out = append(out, f)
	}
	return out, nil
}

// openStaged opens the directory of writeFiles' files for the shim, whose
// container root owns them when it has a user namespace (the directory and
// its files stay unreadable by others).
func (c *container) openStaged() (*os.File, error) {
	dir := filepath.Join(c.dir, "files")
	if us := c.s.userns; us != nil {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if err := os.Lchown(filepath.Join(dir, e.Name()), int(us.Host), int(us.Host)); err != nil {
				return nil, err
			}
		}
		if err := os.Chown(dir, int(us.Host), int(us.Host)); err != nil {
			return nil, err
		}
	}
	return os.Open(dir)
}
