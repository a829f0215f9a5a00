// This file owns the mapping, the namespace and its idmapped mounts.

package userns

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Map maps container ids 0..Size-1 to host ids Host..Host+Size-1, the same
// for uids and gids.
type Map struct {
	Host uint32 // the host id of container id 0
	Size uint32 // how many ids (65536 covers every usual image)
}

// String is the HOST:SIZE form Parse reads.
func (m Map) String() string { return fmt.Sprintf("%d:%d", m.Host, m.Size) }

// Parse reads HOST:SIZE.
func Parse(s string) (Map, error) {
	h, n, ok := strings.Cut(s, ":")
	host, err1 := strconv.ParseUint(h, 10, 32)
	size, err2 := strconv.ParseUint(n, 10, 32)
	m := Map{Host: uint32(host), Size: uint32(size)}
	if !ok || err1 != nil || err2 != nil || m.check() != nil {
		return Map{}, fmt.Errorf("%q: want HOST:SIZE, a host id above 0 and a size above 0 that fit in 32 bits", s)
	}
	return m, nil
}

func (m Map) check() error {
	if m.Host == 0 || m.Size == 0 || uint64(m.Host)+uint64(m.Size) > 1<<32-1 {
		return fmt.Errorf("user namespace: bad mapping %d:%d", m.Host, m.Size)
	}
	return nil
}

// IDMap is m for syscall.SysProcAttr's UidMappings and GidMappings.
func (m Map) IDMap() []syscall.SysProcIDMap {
	return []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(m.Host), Size: int(m.Size)}}
}

// HoldArg is the argument that makes a binary the namespace holder
// (RunHold); the hyper-agent binary handles it.
const HoldArg = "userns-hold"

// RunHold is the namespace holder: it waits for its stdin to close.
func RunHold() {
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// NS is an open user namespace with a Map. The holder process that made
// it is gone; the descriptor keeps the namespace.
type NS struct {
	Map
	fd int
}

// New makes a user namespace with m: holder (a binary that runs RunHold
// when given HoldArg) is started in it, the namespace opened, the holder
// let go.
func New(m Map, holder string) (*NS, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	defer w.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	pid, err := syscall.ForkExec(holder, []string{filepath.Base(holder), HoldArg}, &syscall.ProcAttr{
		Dir:   "/",
		Files: []uintptr{r.Fd(), devnull.Fd(), devnull.Fd()},
		Sys: &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER, UidMappings: m.IDMap(), GidMappings: m.IDMap(),
			Pdeathsig: unix.SIGKILL},
	})
	if err != nil {
		return nil, fmt.Errorf("user namespace: %w", err)
	}
	// ForkExec returned after writing the mappings
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	w.Close()
	// our child: collected here unless a reaper (an agent as PID 1)
	// already did
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("user namespace: %w", err)
	}
	return &NS{Map: m, fd: fd}, nil
}

// Close releases the namespace (mounts idmapped with it keep it).
func (n *NS) Close() error { return unix.Close(n.fd) }

// Probe tells whether dir's file system can be idmapped with n.
func (n *NS) Probe(dir string) error {
	p, err := os.MkdirTemp(dir, ".idmap-probe")
	if err != nil {
		return err
	}
	defer os.Remove(p)
	fd, err := n.Idmapped(p, false, false)
	if err != nil {
		return fmt.Errorf("%s cannot be idmapped: %w", dir, err)
	}
	return unix.Close(fd)
}

// Idmapped returns a detached copy of the mount tree at src (with its
// submounts when recursive), idmapped with n, nodev, read-only with ro;
// move_mount(2) attaches it.
func (n *NS) Idmapped(src string, recursive, ro bool) (int, error) {
	fl := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	sfl := uint(unix.AT_EMPTY_PATH)
	if recursive {
		fl |= unix.AT_RECURSIVE
		sfl |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, fl)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", src, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NODEV, Userns_fd: uint64(n.fd)}
	if ro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", sfl, &attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("idmap %s: %w", src, err)
	}
	return fd, nil
}

// Probe tells whether containers can have a user namespace with m while
// their files are in dir; holder as for New.
func Probe(m Map, holder, dir string) error {
	n, err := New(m, holder)
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Probe(dir)
}
