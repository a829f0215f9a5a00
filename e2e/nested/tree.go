// This file owns the L1 root file system: a Tree of files (copied from the
// host at the same absolute paths, or given as data) with the shared
// libraries every dynamically linked binary needs, written as an
// uncompressed newc cpio (u-root's pkg/cpio) that L1 boots as its
// initramfs.
package nested

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"
)

// entry is one archive member: a regular file read from src (or data), a
// symlink, or a directory.
type entry struct {
	src    string
	data   []byte
	link   string
	dir    bool
	mode   uint64
	device [3]uint64 // char device: 1, major, minor
}

// Tree is the L1 root file system being assembled. Paths are absolute
// archive paths ("/usr/bin/curl").
type Tree struct {
	m map[string]*entry
}

// NewTree starts a tree with the host's merged-/usr links (/bin, /sbin,
// /lib, /lib64 → usr/...) so host files keep their paths.
func NewTree() *Tree {
	t := &Tree{m: map[string]*entry{}}
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"} {
		if target, err := os.Readlink(d); err == nil {
			t.m[d] = &entry{link: target}
		}
	}
	t.Dir("/dev", 0o755)
	t.m["/dev/console"] = &entry{mode: 0o600, device: [3]uint64{1, 5, 1}}
	return t
}

func clean(p string) string { return path.Clean("/" + p) }

// Dir adds a directory.
func (t *Tree) Dir(p string, mode uint64) { t.m[clean(p)] = &entry{dir: true, mode: mode} }

// Data adds a file with the given content.
func (t *Tree) Data(p string, data []byte, mode uint64) {
	t.m[clean(p)] = &entry{data: data, mode: mode}
}

// Symlink adds a symbolic link.
func (t *Tree) Symlink(p, target string) { t.m[clean(p)] = &entry{link: target} }

// File adds the host file src at dst (its mode kept).
func (t *Tree) File(dst, src string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("nested: %s is a directory", src)
	}
	t.m[clean(dst)] = &entry{src: src, mode: uint64(st.Mode().Perm())}
	return nil
}

// Host adds host paths at the same paths, following symlinks (each link
// is kept as a link and its target added too) and, for ELF programs and
// libraries, adding the shared libraries ldd names. Directories are
// added whole.
func (t *Tree) Host(paths ...string) error {
	for _, p := range paths {
		if err := t.host(p, 0); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tree) host(p string, depth int) error {
	if depth > 16 {
		return fmt.Errorf("nested: too many links at %s", p)
	}
	p = filepath.Clean(p)
	// the directory part through the host's links (e.g. /lib → usr/lib)
	dir, err := filepath.EvalSymlinks(filepath.Dir(p))
	if err != nil {
		return err
	}
	p = filepath.Join(dir, filepath.Base(p))
	if _, ok := t.m[p]; ok {
		return nil
	}
	st, err := os.Lstat(p)
	if err != nil {
		return err
	}
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		t.m[p] = &entry{link: target}
		if !filepath.IsAbs(target) {
			target = filepath.Join(dir, target)
		}
		return t.host(target, depth+1)
	case st.IsDir():
		ents, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		t.m[p] = &entry{dir: true, mode: uint64(st.Mode().Perm())}
		for _, e := range ents {
			if err := t.host(filepath.Join(p, e.Name()), depth); err != nil {
				return err
			}
		}
		return nil
	case st.Mode().IsRegular():
		t.m[p] = &entry{src: p, mode: uint64(st.Mode().Perm())}
		if st.Mode().Perm()&0o111 != 0 || strings.Contains(filepath.Base(p), ".so") {
			libs, err := SharedLibs(p)
			if err != nil {
				return err
			}
			for _, l := range libs {
				if err := t.host(l, 0); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return nil // sockets, fifos, devices of the host are not copied
}

// lddLine matches "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)"
// and "/lib64/ld-linux-x86-64.so.2 (0x...)".
var lddLine = regexp.MustCompile(`^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)`)

// SharedLibs returns the shared libraries (with the dynamic loader) a
// binary needs, as ldd resolves them on this host; none for a static
// binary or a file that is not ELF.
func SharedLibs(bin string) ([]string, error) {
	f, err := os.Open(bin)
	if err != nil {
		return nil, err
	}
	magic := make([]byte, 4)
	_, err = io.ReadFull(f, magic)
	f.Close()
	if err != nil || !bytes.Equal(magic, []byte("\x7fELF")) {
		return nil, nil
	}
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) || bytes.Contains(out, []byte("statically linked")) {
			return nil, nil
		}
		return nil, fmt.Errorf("nested: ldd %s: %v: %s", bin, err, out)
	}
	return parseLdd(out)
}

func parseLdd(out []byte) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("nested: ldd: %s", strings.TrimSpace(line))
		}
		if m := lddLine.FindStringSubmatch(line); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, sc.Err()
}

// Paths lists the archive's paths, sorted.
func (t *Tree) Paths() []string {
	ps := make([]string, 0, len(t.m))
	for p := range t.m {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// WriteCPIO writes the tree as a newc cpio, every parent directory before
// its children.
func (t *Tree) WriteCPIO(w io.Writer) error {
	rw := cpio.Newc.Writer(w)
	written := map[string]bool{"/": true}
	var mkdirs func(p string) error
	mkdirs = func(p string) error {
		if written[p] {
			return nil
		}
		if err := mkdirs(path.Dir(p)); err != nil {
			return err
		}
		written[p] = true
		mode := uint64(0o755)
		if e, ok := t.m[p]; ok && e.dir {
			mode = e.mode
		} else if ok && !e.dir {
			return fmt.Errorf("nested: %s is both a file and a directory in the tree", p)
		}
		return rw.WriteRecord(cpio.Directory(p[1:], mode))
	}
	for _, p := range t.Paths() {
		e := t.m[p]
		if err := mkdirs(path.Dir(p)); err != nil {
			return err
		}
		if e.dir {
			if err := mkdirs(p); err != nil {
				return err
			}
			continue
		}
		written[p] = true
		var rec cpio.Record
		switch {
		case e.link != "":
			rec = cpio.Symlink(p[1:], e.link)
		case e.device[0] == 1:
			rec = cpio.CharDev(p[1:], e.mode, e.device[1], e.device[2])
		case e.src != "":
			f, err := os.Open(e.src)
			if err != nil {
				return err
			}
			st, err := f.Stat()
			if err != nil {
				f.Close()
				return err
			}
			rec = cpio.Record{ReaderAt: f, Info: cpio.Info{Name: p[1:], Mode: unix.S_IFREG | e.mode, FileSize: uint64(st.Size()), NLink: 1}}
			err = rw.WriteRecord(rec)
			f.Close()
			if err != nil {
				return fmt.Errorf("nested: %s: %w", e.src, err)
			}
			continue
		default:
			rec = cpio.StaticFile(p[1:], string(e.data), e.mode)
		}
		if err := rw.WriteRecord(rec); err != nil {
			return err
		}
	}
	return cpio.WriteTrailer(rw)
}
