package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// openInRoot opens path resolved inside root (symlinks cannot escape),
// creating missing directories (or, with file, a last empty file).
func openInRoot(root, path string, file bool) (*os.File, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(rfd)
	clean, err := resolveSymlinksIn(rfd, path)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(clean, "/")
	cur := ""
	for i, p := range parts {
		if p == "" {
			continue
		}
		cur += "/" + p
		how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
		fd, err := unix.Openat2(rfd, cur, how)
		if err == unix.ENOENT {
			dir, err2 := unix.Openat2(rfd, filepath.Dir(cur), &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
			if err2 != nil {
				return nil, err2
			}
			if file && i == len(parts)-1 {
				err = unix.Mknodat(dir, p, unix.S_IFREG|0o644, 0)
			} else {
				err = unix.Mkdirat(dir, p, 0o755)
			}
			unix.Close(dir)
			if err != nil && err != unix.EEXIST {
				return nil, fmt.Errorf("create %s: %w", cur, err)
			}
			fd, err = unix.Openat2(rfd, cur, how)
		}
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", cur, err)
		}
		if i == len(parts)-1 {
			return os.NewFile(uintptr(fd), cur), nil
		}
		unix.Close(fd)
	}
	return os.Open(root)
}

// resolveSymlinksIn expands the symlinks of path as seen from root (an
// absolute target restarts at root, ".." stops at root), so that a
// dangling image symlink leads to a directory created inside the root. The
// result is clean and absolute; openat2(RESOLVE_IN_ROOT) still guards
// every later open against races.
func resolveSymlinksIn(rfd int, path string) (string, error) {
	todo := strings.Split(path, "/")
	cur := "/"
	hops := 0
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		switch p {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, p)
		fd, err := unix.Openat2(rfd, next, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err == unix.ENOENT {
			cur = next
			continue
		}
		if err != nil {
			return "", fmt.Errorf("open %s: %w", next, err)
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			buf := make([]byte, 4096)
			var n int
			n, err = unix.Readlinkat(fd, "", buf)
			unix.Close(fd)
			if err != nil {
				return "", fmt.Errorf("readlink %s: %w", next, err)
			}
			if hops++; hops > 40 {
				return "", fmt.Errorf("%s: too many symlinks", path)
			}
			target := string(buf[:n])
			if strings.HasPrefix(target, "/") {
				cur = "/"
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		unix.Close(fd)
		if err != nil {
			return "", err
		}
		cur = next
	}
	return cur, nil
}

func fdPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// mountIn mounts source onto dest resolved inside root.
func mountIn(root, dest, source, fstype string, flags uintptr, data string, file bool) error {
	f, err := openInRoot(root, dest, file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Mount(source, fdPath(f), fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", source, dest, err)
	}
	return nil
}

// setupRoot runs in the shim's fresh mount namespace.
func setupRoot(c *shimConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	root := c.Rootfs
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs: %w", err)
	}
	for _, m := range c.Mounts {
		if m.Dest == "" || m.Source == "" {
			return errors.New("volume without source or destination")
		}
		if m.FSType == "" {
			st, err := os.Stat(m.Source)
			if err != nil {
				return fmt.Errorf("volume %s: %w", m.Source, err)
			}
			if err := mountIn(root, m.Dest, m.Source, "", unix.MS_BIND|unix.MS_REC, "", !st.IsDir()); err != nil {
				return err
			}
			// nodev: a device node in a volume opens nothing (no device
			// cgroup here; see harden.go)
			fl := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NODEV)
			if m.ReadOnly {
				fl |= unix.MS_RDONLY
			}
			if err := mountIn(root, m.Dest, "", "", fl, "", !st.IsDir()); err != nil {
				return err
			}
		} else {
			fl := uintptr(unix.MS_NODEV)
			if m.ReadOnly {
				fl |= unix.MS_RDONLY
			}
			if err := mountIn(root, m.Dest, m.Source, m.FSType, fl, "", false); err != nil {
				return err
			}
		}
	}
	nodev := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := mountIn(root, "/proc", "proc", "proc", nodev, "", false); err != nil {
		return err
	}
	if err := mountIn(root, "/sys", "sysfs", "sysfs", nodev|unix.MS_RDONLY, "", false); err != nil {
		return err
	}
	if err := mountIn(root, "/dev", "tmpfs", "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k", false); err != nil {
		return err
	}
	devs := []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}
	for _, d := range devs {
		f, err := openInRoot(root, "/dev", false)
		if err != nil {
			return err
		}
		err = unix.Mknodat(int(f.Fd()), d.name, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor)))
		if err == nil {
			unix.Fchmodat(int(f.Fd()), d.name, 0o666, 0)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", d.name, err)
		}
	}
	if err := mountIn(root, "/dev/pts", "devpts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620", false); err != nil {
		return err
	}
	if err := mountIn(root, "/dev/shm", "shm", "tmpfs", nodev, "mode=1777,size=65536k", false); err != nil {
		return err
	}
	dev := filepath.Join(root, "dev") // a fresh tmpfs of ours: no foreign symlinks
	for l, t := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(t, filepath.Join(dev, l)); err != nil {
			return err
		}
	}
	if c.Hostname != "" {
		if err := unix.Sethostname([]byte(c.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	for k, v := range c.Sysctl {
		if !allowedSysctl(k) {
			return fmt.Errorf("sysctl %s is not namespaced", k)
		}
		p := filepath.Join(root, "proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	if err := confineProc(root); err != nil {
		return err
	}
	// the files' content, staged by the agent on the host side of the
	// pivot: opened now, copied in once inside
	staged := make([]*os.File, len(c.Files))
	defer func() {
		for _, f := range staged {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i, f := range c.Files {
		if f.Staged == "" {
			continue
		}
		sf, err := os.OpenFile(f.Staged, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		staged[i] = sf
	}
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err == unix.EINVAL && onRamfs("/") {
		// The host's root is the initramfs (rootfs), which pivot_root
		// cannot move (pivot_root(2)); the kvm guest moves its own root
		// to a tmpfs first, a local driver on such a host (the nested
		// runner's L1) cannot. Move the container root over / and chroot
		// into it, as runc's no-pivot mode does: the old root is covered
		// in this mount namespace.
		if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move the root over / (no pivot_root on a ramfs root): %w", err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	} else if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// Now inside the container: paths resolve in its root.
	if len(c.ResolvConf) > 0 {
		writeContainerFile("/etc/resolv.conf", c.ResolvConf, 0o644, 0, 0)
	}
	if c.Hostname != "" {
		writeContainerFile("/etc/hostname", []byte(c.Hostname+"\n"), 0o644, 0, 0)
	}
	for i, f := range c.Files {
		mode := f.Mode & 0o7777
		if mode == 0 {
			mode = 0o644
		}
		var r io.Reader = bytes.NewReader(f.Content)
		if staged[i] != nil {
			r = staged[i]
		}
		if err := writeContainerFileFrom(f.Path, r, mode, f.UID, f.GID); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
	}
	if c.ReadOnlyFS {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only rootfs: %w", err)
		}
	}
	return nil
}

func writeContainerFile(p string, content []byte, mode uint32, uid, gid int) error {
	return writeContainerFileFrom(p, bytes.NewReader(content), mode, uid, gid)
}

// writeContainerFileFrom writes r's content at p in the container's root
// (the caller is inside it), replacing what was there.
func writeContainerFileFrom(p string, r io.Reader, mode uint32, uid, gid int) error {
	p = filepath.Clean("/" + p)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	os.Remove(p)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(mode))
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	f.Chmod(os.FileMode(mode))
	return f.Chown(uid, gid)
}

func allowedSysctl(k string) bool {
	for _, p := range []string{"kernel.msg", "kernel.sem", "kernel.shm", "fs.mqueue.", "net."} {
		if strings.HasPrefix(k, p) {
			return !strings.Contains(k, "/") && !strings.Contains(k, "..")
		}
	}
	return false
}

// onRamfs reports whether path is on a ramfs or tmpfs: the initramfs
// (rootfs) is one of the two, depending on the kernel's config.
func onRamfs(path string) bool {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return false
	}
	// linux/magic.h: RAMFS_MAGIC, TMPFS_MAGIC
	return uint32(st.Type) == 0x858458f6 || uint32(st.Type) == 0x01021994
}
