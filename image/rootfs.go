package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// lockKey serialises the building of one cached artefact (rootfs dir, disk image).
func (s *Store) lockKey(key string) func() {
	s.mu.Lock()
	m := s.builds[key]
	if m == nil {
		m = &sync.Mutex{}
		s.builds[key] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func hexOf(id string) string { return strings.TrimPrefix(id, "sha256:") }

// RootfsDir returns a directory holding the image's flattened root filesystem
// (whiteouts applied). It is built once per image id, in a temporary directory renamed
// into place when complete; callers must treat it as read-only.
func (s *Store) RootfsDir(ctx context.Context, id string) (string, error) {
	r, err := s.getRec(id)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(s.root, "rootfs", hexOf(r.ID))
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	defer s.lockKey("rootfs:" + r.ID)()
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	tmp, err := os.MkdirTemp(s.tmpDir(), "rootfs-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	for _, l := range r.Layers {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		rc, err := s.openLayer(l.Digest)
		if err != nil {
			return "", fmt.Errorf("image %s: %w", r.ID, err)
		}
		err = ApplyLayer(tmp, rc)
		rc.Close()
		if err != nil {
			return "", fmt.Errorf("image %s: unpacking layer %s: %w", r.ID, l.Digest, err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// ApplyLayer extracts an uncompressed tar layer onto dir, applying OCI whiteouts
// (".wh.<name>" deletes name, ".wh..wh..opq" empties the directory of what lower
// layers put there). Nothing is written outside dir, whatever the tar's names and
// symlinks say.
func ApplyLayer(dir string, r io.Reader) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	seen := map[string]bool{} // paths written by this layer
	type dirTime struct {
		name string
		hdr  *tar.Header
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := path.Clean("/" + hdr.Name)[1:]
		if name == "" {
			name = "."
		}
		base := path.Base(name)
		parent, err := resolveIn(root, path.Dir(name))
		if err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if name != "." {
			name = path.Join(parent, base)
		}
		if base == ".wh..wh..opq" {
			ents, err := fs.ReadDir(root.FS(), parent)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			for _, e := range ents {
				p := path.Join(parent, e.Name())
				if !seen[p] {
					if err := root.RemoveAll(p); err != nil {
						return err
					}
				}
			}
			continue
		}
		if strings.HasPrefix(base, ".wh.") {
			if err := root.RemoveAll(path.Join(parent, strings.TrimPrefix(base, ".wh."))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			continue
		}
		if parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		}
		seen[name] = true
		mode := fs.FileMode(hdr.Mode).Perm()
		if hdr.Mode&04000 != 0 {
			mode |= fs.ModeSetuid
		}
		if hdr.Mode&02000 != 0 {
			mode |= fs.ModeSetgid
		}
		if hdr.Mode&01000 != 0 {
			mode |= fs.ModeSticky
		}
		// Replace whatever is there unless both are directories.
		if fi, err := root.Lstat(name); err == nil && name != "." {
			if !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
				if err := root.RemoveAll(name); err != nil {
					return err
				}
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name != "." {
				if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
					return err
				}
			}
			dirs = append(dirs, dirTime{name, hdr})
			if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return err
			}
			if err := root.Chmod(name, mode); err != nil {
				return err
			}
			continue
		case tar.TypeReg, tar.TypeRegA:
			f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
		case tar.TypeLink:
			target, err := resolveIn(root, path.Clean("/" + hdr.Linkname)[1:])
			if err != nil {
				return fmt.Errorf("hard link %s: %w", hdr.Name, err)
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("hard link %s -> %s: %w", hdr.Name, hdr.Linkname, err)
			}
			continue
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			// os.Root has no mknod: the parent was created through root above, and
			// Lstat of the parent through root proves it is a real directory inside.
			if fi, err := root.Lstat(parent); err != nil || !fi.IsDir() {
				return fmt.Errorf("%s: parent is not a directory", hdr.Name)
			}
			m := uint32(mode.Perm())
			switch hdr.Typeflag {
			case tar.TypeChar:
				m |= syscall.S_IFCHR
			case tar.TypeBlock:
				m |= syscall.S_IFBLK
			default:
				m |= syscall.S_IFIFO
			}
			dev := int((hdr.Devmajor&0xfff)<<8 | hdr.Devminor&0xff | (hdr.Devminor&^0xff)<<12)
			if err := syscall.Mknod(filepath.Join(dir, name), m, dev); err != nil {
				return fmt.Errorf("%s: mknod: %w", hdr.Name, err)
			}
		default:
			continue // pax globals, GNU volume headers...: nothing to create
		}
		if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
		if err := setXattrs(dir, name, hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeSymlink {
			if err := root.Chmod(name, mode); err != nil {
				return err
			}
			if err := root.Chtimes(name, hdr.AccessTime, hdr.ModTime); err != nil {
				return err
			}
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		root.Chtimes(dirs[i].name, dirs[i].hdr.AccessTime, dirs[i].hdr.ModTime)
	}
	return nil
}

// DiskImage returns a read-only ext4 disk image of the image's root filesystem, built
// once per image id with `mkfs.ext4 -d` and sized from the content.
func (s *Store) DiskImage(ctx context.Context, id string) (string, string, error) {
	r, err := s.getRec(id)
	if err != nil {
		return "", "", err
	}
	dst := filepath.Join(s.root, "disk", hexOf(r.ID)+".ext4")
	if _, err := os.Stat(dst); err == nil {
		return dst, "ext4", nil
	}
	dir, err := s.RootfsDir(ctx, r.ID)
	if err != nil {
		return "", "", err
	}
	defer s.lockKey("disk:" + r.ID)()
	if _, err := os.Stat(dst); err == nil {
		return dst, "ext4", nil
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return "", "", fmt.Errorf("building disk image: mkfs.ext4 not found (install e2fsprogs): %w", err)
	}
	var bytes, inodes int64
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		inodes++
		fi, err := d.Info()
		if err != nil {
			return err
		}
		// Round every file up to a 4 KiB block; directories and symlinks take a block.
		bytes += (fi.Size() + 4095) &^ 4095
		if !fi.Mode().IsRegular() {
			bytes += 4096
		}
		return nil
	})
	if err != nil {
		return "", "", err
	}
	// Content + 25% + room for metadata (inode tables, journal-less) + 16 MiB floor.
	size := bytes + bytes/4 + inodes*512 + 16<<20
	size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	f, err := os.CreateTemp(s.tmpDir(), "disk-*.ext4")
	if err != nil {
		return "", "", err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Truncate(size); err != nil {
		f.Close()
		return "", "", err
	}
	f.Close()
	nInodes := inodes*2 + 1024
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-O", "^has_journal", "-N", fmt.Sprint(nInodes),
		"-E", "root_owner=0:0", "-L", "rootfs", "-d", dir, tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("mkfs.ext4 -d %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", "", err
	}
	return dst, "ext4", nil
}

// resolveIn resolves the directory p inside root as if root were "/" (chroot
// semantics): symlinks among its components are followed, absolute ones relative to
// root and ".." never above it. The result has no symlink components.
func resolveIn(root *os.Root, p string) (string, error) {
	todo := strings.Split(path.Clean("/" + p)[1:], "/")
	cur := ""
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			if cur == "." || cur == "/" {
				cur = ""
			}
			continue
		}
		next := path.Join(cur, c)
		fi, err := root.Lstat(next)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			cur = next // missing components are created later as directories
			continue
		}
		if links++; links > 255 {
			return "", fmt.Errorf("too many levels of symbolic links in %s", p)
		}
		target, err := root.Readlink(next)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			cur = ""
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	if cur == "" {
		return ".", nil
	}
	return cur, nil
}

// setXattrs restores extended attributes (file capabilities...) recorded as PAX
// SCHILY.xattr.* records. name has no symlink components but its last one (Lsetxattr
// does not follow it). Attributes the filesystem refuses (ENOTSUP) are skipped.
func setXattrs(dir, name string, hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		err := unix.Lsetxattr(filepath.Join(dir, name), attr, []byte(v), 0)
		if err != nil && !errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%s: setting xattr %s: %w", hdr.Name, attr, err)
		}
	}
	return nil
}
