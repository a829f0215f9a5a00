// Build contexts on the host: decompressing the client's context, extracting
// its tar into the build's temporary directory, .dockerignore, and the names
// a context (or a COPY/ADD) may not put into a layer.
package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"strings"

	"github.com/hyperhq/hyperd-go/image/dockerfile"
)

// extractContext unpacks a build context tar under dir for COPY/ADD to read, and
// returns each entry's tar mode (permissions with setuid, setgid and sticky bits)
// by cleaned path. The host copy is deliberately plain: files 0600 and directories
// 0700 owned by the daemon, no xattrs, so nothing setuid, setgid or capable ever
// exists on the host; COPY puts the recorded modes into the layer, as Docker does.
// Refused (ErrInvalid): names that are absolute or climb out with "..", whiteout
// names (".wh.*", which a layer would turn into deletions), device nodes and FIFOs.
// Writes go through os.Root, so a symlink in the context never leads a later
// entry outside dir.
func extractContext(dir string, r io.Reader) (map[string]int64, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	modes := map[string]int64{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return modes, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the context tar: %v: %w", err, ErrInvalid)
		}
		name, err := contextName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if name == "." {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeSymlink, tar.TypeLink:
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return nil, fmt.Errorf("%s: device nodes and FIFOs are not allowed in a build context: %w", hdr.Name, ErrInvalid)
		default:
			continue // pax globals, GNU volume headers...: nothing to create
		}
		if err := writeContextEntry(root, name, hdr, tr, modes); err != nil {
			if errors.Is(err, ErrInvalid) {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %v: %w", hdr.Name, err, ErrInvalid)
		}
	}
}

// contextName cleans a context entry's name, refusing what cannot be a path
// inside the context or would be a whiteout in a layer.
func contextName(raw string) (string, error) {
	if path.IsAbs(raw) {
		return "", fmt.Errorf("%q: absolute names are not allowed in a build context: %w", raw, ErrInvalid)
	}
	name := path.Clean(raw)
	if name == ".." || strings.HasPrefix(name, "../") {
		return "", fmt.Errorf("%q: the name leaves the build context: %w", raw, ErrInvalid)
	}
	if err := checkNotWhiteout(name); err != nil {
		return "", err
	}
	return name, nil
}

// checkNotWhiteout refuses a path with a component named ".wh.*": in a layer it
// deletes files (".wh.<name>") or empties a directory (".wh..wh..opq") when the
// layer is applied, so neither a build context nor a COPY/ADD may produce one.
func checkNotWhiteout(p string) error {
	for _, c := range strings.Split(p, "/") {
		if strings.HasPrefix(c, ".wh.") {
			return fmt.Errorf("%q: names starting with .wh. are whiteouts in a layer and are not allowed: %w", p, ErrInvalid)
		}
	}
	return nil
}

func writeContextEntry(root *os.Root, name string, hdr *tar.Header, body io.Reader, modes map[string]int64) error {
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	// A later entry replaces an earlier one, unless both are directories.
	if fi, err := root.Lstat(name); err == nil && !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
		if err := root.RemoveAll(name); err != nil {
			return err
		}
	}
	mode := hdr.Mode & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case tar.TypeSymlink:
		if err := root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
	case tar.TypeLink:
		target, err := contextName(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := root.Link(target, name); err != nil {
			return err
		}
		if m, ok := modes[target]; ok {
			mode = m
		}
	default: // regular
		f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := root.Chtimes(name, hdr.AccessTime, hdr.ModTime); err != nil {
			return err
		}
	}
	modes[name] = mode
	return nil
}

// decompressContext accepts identity, gzip, zstd, bzip2 and xz (via the xz tool).
func decompressContext(ctx context.Context, r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(magic, []byte("BZh")):
		return io.NopCloser(bzip2.NewReader(br)), nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		xz, err := exec.LookPath("xz")
		if err != nil {
			return nil, fmt.Errorf("xz-compressed context needs the xz tool (apt-get install -y xz-utils): %w", err)
		}
		cmd := exec.CommandContext(ctx, xz, "-dc")
		cmd.Stdin = br
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return &cmdReader{out, cmd, &stderr}, nil
	}
	return decompress(br)
}

type cmdReader struct {
	io.ReadCloser
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func (c *cmdReader) Close() error {
	io.Copy(io.Discard, c.ReadCloser)
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("xz: %v: %s", err, strings.TrimSpace(c.stderr.String()))
	}
	return nil
}

// applyDockerignore removes what .dockerignore excludes from the extracted context
// so COPY/ADD cannot see it (the Dockerfile was read before).
func applyDockerignore(root *os.Root) error {
	b, err := root.ReadFile(".dockerignore")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ig, err := dockerfile.ParseIgnore(bytes.NewReader(b))
	if err != nil {
		return err
	}
	keepDirs := ig.HasExceptions()
	var remove []string
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		if ig.Excluded(p) {
			if d.IsDir() && keepDirs {
				return nil // an exception may re-include something below
			}
			remove = append(remove, p)
			if d.IsDir() {
				return fs.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range remove {
		if err := root.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}
