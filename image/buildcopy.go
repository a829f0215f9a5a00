// This file owns COPY and ADD steps of a Dockerfile build: the layer they
// make from the context (files, directories, local archives), the
// directories they create in the image, and lookups in the image root.

package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/hyperhq/hyperd-go/image/dockerfile"
)

// mkdirLayer returns a layer creating dir and its missing parents (following
// symlinks inside the image as a container would), or nil when dir exists.
func (b *builder) mkdirLayer(dir string) (io.ReadCloser, error) {
	rel := path.Clean("/" + dir)[1:]
	if b.img != nil {
		r, err := b.imageRoot()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		if rel, err = resolveIn(r, dir); err != nil {
			return nil, fmt.Errorf("WORKDIR %s: %v: %w", dir, err, ErrInvalid)
		}
		if fi, err := r.Stat(rel); err == nil {
			if !fi.IsDir() {
				return nil, fmt.Errorf("WORKDIR %s: not a directory in the image: %w", dir, ErrInvalid)
			}
			return nil, nil
		}
		// Keep the existing prefix out of the layer: only missing directories are added.
		var missing []string
		for p := rel; p != "." && p != ""; p = path.Dir(p) {
			if _, err := r.Lstat(p); err == nil {
				break
			}
			missing = append([]string{p}, missing...)
		}
		return dirTar(missing)
	}
	if rel == "" {
		return nil, nil
	}
	var all []string
	for p := rel; p != "."; p = path.Dir(p) {
		all = append([]string{p}, all...)
	}
	return dirTar(all)
}

func dirTar(dirs []string) (io.ReadCloser, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return io.NopCloser(&buf), nil
}

// copyStep builds the COPY/ADD layer in a temp file, hashing file content and
// metadata (not times) for the cache key.
func (b *builder) copyStep(in dockerfile.Instruction) error {
	uid, gid := 0, 0
	for _, f := range in.Flags {
		switch {
		case strings.HasPrefix(f, "--chown="):
			u, g, _ := strings.Cut(strings.TrimPrefix(f, "--chown="), ":")
			if g == "" {
				g = u
			}
			var err1, err2 error
			uid, err1 = strconv.Atoi(u)
			gid, err2 = strconv.Atoi(g)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("--chown supports numeric uid:gid only, got %q: %w", f, ErrInvalid)
			}
		default:
			return fmt.Errorf("unsupported flag %s: %w", f, ErrInvalid)
		}
	}
	args, err := b.expandAll(in.Args, in.Escape)
	if err != nil {
		return err
	}
	srcs, dest := args[:len(args)-1], args[len(args)-1]
	workdir := "/"
	if b.img != nil && b.img.Config.WorkingDir != "" {
		workdir = b.img.Config.WorkingDir
	}
	destDir := strings.HasSuffix(dest, "/") || dest == "." || len(srcs) > 1
	if !path.IsAbs(dest) {
		dest = path.Join(workdir, dest)
	}
	dest = path.Clean(dest)
	if !destDir && b.img != nil {
		// "COPY file /etc" puts the file inside an existing directory, as Docker does.
		isDir, err := b.isDirInImage(dest)
		if err != nil {
			return err
		}
		destDir = isDir
	}
	f, err := os.CreateTemp(b.tmp, "layer-")
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	h := sha256.New()
	add := func(hdr *tar.Header, body io.Reader) error {
		hdr.Name = strings.TrimPrefix(hdr.Name, "/")
		if err := checkNotWhiteout(strings.TrimSuffix(hdr.Name, "/")); err != nil {
			return err
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = uid, gid, "", ""
		fmt.Fprintf(h, "%s\x00%d\x00%o\x00%s\x00%d\x00", hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Linkname, hdr.Size)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if body != nil {
			_, err := io.Copy(io.MultiWriter(tw, h), body)
			return err
		}
		return nil
	}
	n := 0
	for _, src := range srcs {
		if strings.Contains(src, "://") {
			return fmt.Errorf("%s from a URL is not supported (only local files): %w", in.Cmd, ErrInvalid)
		}
		pattern := path.Clean("/" + src)[1:]
		if pattern == "" {
			pattern = "."
		}
		var matches []string
		if strings.ContainsAny(pattern, `*?[\`) {
			if matches, err = fs.Glob(b.root.FS(), pattern); err != nil {
				return fmt.Errorf("bad pattern %q: %w", src, ErrInvalid)
			}
		} else if _, err := b.root.Lstat(pattern); err == nil {
			matches = []string{pattern} // Glob would follow a symlink (maybe out of the context)
		}
		if len(matches) == 0 {
			return fmt.Errorf("%s %s: no such file or directory in the build context: %w", in.Cmd, src, ErrNotFound)
		}
		for _, m := range matches {
			fi, err := b.root.Lstat(m)
			if err != nil {
				return err
			}
			n++
			switch {
			case fi.IsDir():
				err = fs.WalkDir(b.root.FS(), m, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					rel := strings.TrimPrefix(strings.TrimPrefix(p, m), "/")
					if m == "." {
						rel = p
						if p == "." {
							rel = ""
						}
					}
					if rel == "" {
						return add(&tar.Header{Name: dest + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
					}
					return b.addPath(add, p, path.Join(dest, rel))
				})
			case in.Cmd == "ADD" && b.isArchive(m):
				err = b.addArchive(add, m, dest)
			default:
				target := dest
				if destDir {
					target = path.Join(dest, path.Base(m))
				}
				err = b.addPath(add, m, target)
			}
			if err != nil {
				return fmt.Errorf("%s %s: %w", in.Cmd, m, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	key := b.cacheKey(in.Cmd, args, h.Sum(nil))
	return b.commit(key, func() (io.ReadCloser, error) { return os.Open(f.Name()) }, nil, "/bin/sh -c #(nop) "+in.Cmd+" "+strings.Join(args, " "))
}

func (b *builder) addPath(add func(*tar.Header, io.Reader) error, src, dst string) error {
	fi, err := b.root.Lstat(src)
	if err != nil {
		return err
	}
	var link string
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = b.root.Readlink(src); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = dst
	// The context's own modes (setuid... included), not the plain host copy's;
	// directories the context tar only implied are 0755.
	if m, ok := b.modes[path.Clean(src)]; ok {
		hdr.Mode = m
	} else if fi.IsDir() {
		hdr.Mode = 0o755
	}
	if fi.IsDir() {
		hdr.Name += "/"
	}
	if !fi.Mode().IsRegular() {
		return add(hdr, nil)
	}
	f, err := b.root.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return add(hdr, f)
}

// openArchive reads context file p as a (possibly compressed) tar.
func (b *builder) openArchive(p string) (_ *tar.Reader, closeAll func(), err error) {
	f, err := b.root.Open(p)
	if err != nil {
		return nil, nil, err
	}
	d, err := decompressContext(b.ctx, f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return tar.NewReader(d), func() { d.Close(); f.Close() }, nil
}

func (b *builder) isArchive(p string) bool {
	tr, closeAll, err := b.openArchive(p)
	if err != nil {
		return false
	}
	defer closeAll()
	_, err = tr.Next()
	return err == nil
}

// addArchive is ADD's auto-extraction of a local (possibly compressed) tar into dest.
func (b *builder) addArchive(add func(*tar.Header, io.Reader) error, p, dest string) error {
	tr, closeAll, err := b.openArchive(p)
	if err != nil {
		return err
	}
	defer closeAll()
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Join(dest, path.Clean("/"+hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = path.Join(dest, path.Clean("/"+hdr.Linkname))
		}
		hdr.Name = name
		if err := add(hdr, tr); err != nil {
			return err
		}
	}
}

// imageRoot opens the current image's flattened root filesystem.
func (b *builder) imageRoot() (*os.Root, error) {
	rootfs, err := b.s.RootfsDir(b.ctx, b.img.ID)
	if err != nil {
		return nil, err
	}
	return os.OpenRoot(rootfs)
}

// isDirInImage reports whether p is a directory (following symlinks inside the
// image) in the current image's root filesystem.
func (b *builder) isDirInImage(p string) (bool, error) {
	r, err := b.imageRoot()
	if err != nil {
		return false, err
	}
	defer r.Close()
	rp, err := resolveIn(r, p)
	if err != nil {
		return false, nil
	}
	fi, err := r.Lstat(rp)
	return err == nil && fi.IsDir(), nil
}
