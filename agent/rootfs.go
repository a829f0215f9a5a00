package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/internal/userns"
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

// prepareRoot runs in the agent, on a thread of its own in a private
// mount namespace the container's shim is then cloned from (container.go
// startShim): it mounts what needs the agent's privileges or its view of
// the host (volumes, their idmapped copies with a user namespace, /dev's
// nodes, sysfs of the pod's network namespace) into root, the container's
// mounted root file system. The shim does the rest (setupRoot).
func prepareRoot(root string, mounts []protocol.Mount, us *userns.NS, scratch string) error {
	for i, m := range mounts {
		if m.Dest == "" || m.Source == "" {
			return errors.New("volume without source or destination")
		}
		src, isDir := m.Source, true
		if m.FSType == "" {
			st, err := os.Stat(m.Source)
			if err != nil {
				return fmt.Errorf("volume %s: %w", m.Source, err)
			}
			isDir = st.IsDir()
		} else if us != nil {
			// a file system image: mounted here, then idmapped in
			src = filepath.Join(scratch, "vol"+strconv.Itoa(i))
			if err := os.MkdirAll(src, 0o700); err != nil {
				return err
			}
			if err := unix.Mount(m.Source, src, m.FSType, unix.MS_NODEV, ""); err != nil {
				return fmt.Errorf("mount %s (%s): %w", m.Source, m.FSType, err)
			}
		}
		switch {
		case us != nil:
			if err := bindIdmapped(us, root, m.Dest, src, m.ReadOnly, !isDir); err != nil {
				return fmt.Errorf("volume %s: %w", m.Source, err)
			}
		case m.FSType == "":
			if err := mountIn(root, m.Dest, m.Source, "", unix.MS_BIND|unix.MS_REC, "", !isDir); err != nil {
				return err
			}
			// nodev: a device node in a volume opens nothing (no device
			// cgroup here; see harden.go)
			fl := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NODEV)
			if m.ReadOnly {
				fl |= unix.MS_RDONLY
			}
			if err := mountIn(root, m.Dest, "", "", fl, "", !isDir); err != nil {
				return err
			}
		default:
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
	if err := mountIn(root, "/sys", "sysfs", "sysfs", nodev|unix.MS_RDONLY, "", false); err != nil {
		return err
	}
	return prepareDev(root, us)
}

// prepareDev mounts the container's /dev: a tmpfs with the usual nodes
// (made here: a container has no CAP_MKNOD, and none at all in a user
// namespace), the places devpts and /dev/shm go, and the usual links. With
// a user namespace they belong to the container's root.
func prepareDev(root string, us *userns.NS) error {
	if err := mountIn(root, "/dev", "tmpfs", "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k", false); err != nil {
		return err
	}
	f, err := openInRoot(root, "/dev", false)
	if err != nil {
		return err
	}
	defer f.Close()
	dev, err := unix.Openat(int(f.Fd()), ".", unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dev)
	owned := []string{"."}
	devs := []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}
	for _, d := range devs {
		if err := unix.Mknodat(dev, d.name, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", d.name, err)
		}
		unix.Fchmodat(dev, d.name, 0o666, 0)
		owned = append(owned, d.name)
	}
	for _, d := range []string{"pts", "shm"} {
		if err := unix.Mkdirat(dev, d, 0o755); err != nil {
			return fmt.Errorf("mkdir /dev/%s: %w", d, err)
		}
		owned = append(owned, d)
	}
	for l, t := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := unix.Symlinkat(t, dev, l); err != nil {
			return err
		}
		owned = append(owned, l)
	}
	if us != nil {
		for _, n := range owned {
			if err := unix.Fchownat(dev, n, int(us.Host), int(us.Host), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("chown /dev/%s: %w", n, err)
			}
		}
	}
	return nil
}

// setupRoot runs in the shim's fresh mount namespace, its working
// directory the container's root that prepareRoot filled: the mounts that
// belong to the container's own namespaces (proc of its pid namespace,
// its devpts instance, /dev/shm), the masks, the pivot, then the files.
// staged is the directory of the pod files' staged content (c.Files'
// Staged names), -1 when none.
func setupRoot(c *shimConfig, staged int) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	// A copy of the root made here, in the shim's namespace: pivot_root
	// refuses a mount copied from a more privileged namespace (the
	// agent's, locked in a user namespace's copy).
	tree, err := unix.OpenTree(unix.AT_FDCWD, ".", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("copy the root: %w", err)
	}
	defer unix.Close(tree)
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, ".", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the root's copy: %w", err)
	}
	if err := unix.Fchdir(tree); err != nil {
		return err
	}
	root := "."
	nodev := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := mountIn(root, "/proc", "proc", "proc", nodev, "", false); err != nil {
		return err
	}
	if err := mountIn(root, "/dev/pts", "devpts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620", false); err != nil {
		return err
	}
	if err := mountIn(root, "/dev/shm", "shm", "tmpfs", nodev, "mode=1777,size=65536k", false); err != nil {
		return err
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
		if strings.HasPrefix(k, "net.") {
			continue // the pod's network namespace: the agent wrote it
		}
		p := filepath.Join(root, "proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	if err := confineProc(root); err != nil {
		return err
	}
	// the files' content, staged by the agent: opened now, copied in once
	// inside
	files := make([]*os.File, len(c.Files))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i, f := range c.Files {
		if f.Staged == "" {
			continue
		}
		if staged < 0 || strings.Contains(f.Staged, "/") {
			return fmt.Errorf("file %s: no staged content", f.Path)
		}
		fd, err := unix.Openat(staged, f.Staged, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		files[i] = os.NewFile(uintptr(fd), f.Staged)
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
		if files[i] != nil {
			r = files[i]
		}
		if err := writeContainerFileFrom(f.Path, r, mode, f.UID, f.GID); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
	}
	if c.ReadOnlyFS {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|keptFlags("/"), ""); err != nil {
			return fmt.Errorf("read-only rootfs: %w", err)
		}
	}
	return nil
}

// keptFlags are the per-mount flags of the mount at path that a bind
// remount must repeat: in a user namespace they may be locked (the root's
// nodev, set by the agent), and a remount that leaves one out is refused.
func keptFlags(path string) uintptr {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return 0
	}
	var fl uintptr
	for _, f := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&f.st != 0 {
			fl |= f.ms
		}
	}
	return fl
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
