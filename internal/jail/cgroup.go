// This file owns the jailed process's cgroup v2: finding the hierarchy,
// handing the controllers down, creating the cgroup with its limits, and
// removing it.

package jail

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Limits are written into a new cgroup; 0 leaves the kernel's default
// ("max").
type Limits struct {
	MemoryMax int64 // bytes: memory.max
	PidsMax   int   // tasks (threads count): pids.max
}

// Cgroup is a cgroup v2 directory made for one jailed process.
type Cgroup struct {
	Path string
	// Unlimited names the limits that could not be set because the
	// hierarchy does not offer their controller (e.g. a host whose memory
	// controller is bound to cgroup v1). The caller says so loudly.
	Unlimited []string
	fd        int
}

// CgroupMount returns where the cgroup v2 hierarchy is mounted, preferring
// /sys/fs/cgroup.
func CgroupMount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint options... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, typ := strings.Fields(pre), strings.Fields(post)
		if ok && len(fields) >= 5 && len(typ) > 0 && typ[0] == "cgroup2" && fields[3] == "/" {
			found = append(found, fields[4])
		}
	}
	if len(found) == 0 {
		return "", errors.New("jail: no cgroup v2 hierarchy mounted")
	}
	if slices.Contains(found, "/sys/fs/cgroup") {
		return "/sys/fs/cgroup", nil
	}
	return found[0], nil
}

// NewCgroup creates parent/name (parent inside the cgroup v2 mount at mnt,
// made if missing), hands the memory and pids controllers down to it where
// the hierarchy has them, and writes lim. A stale empty cgroup of the same
// name (a VM that died with a previous daemon) is replaced.
func NewCgroup(mnt, parent, name string, lim Limits) (*Cgroup, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("jail: bad cgroup name %q", name)
	}
	rel, err := filepath.Rel(mnt, parent)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("jail: cgroup parent %s is not under the cgroup v2 mount %s", parent, mnt)
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("jail: cgroup parent: %w", err)
	}
	// enable the controllers from the mount down to parent; a level
	// that refuses (e.g. it holds processes) leaves them off below it,
	// which Unlimited reports
	dir := mnt
	for _, part := range append([]string{""}, strings.Split(rel, "/")...) {
		if part != "" && part != "." {
			dir = filepath.Join(dir, part)
		}
		have := controllers(dir)
		var on []string
		for _, c := range []string{"memory", "pids"} {
			if slices.Contains(have, c) {
				on = append(on, "+"+c)
			}
		}
		if len(on) > 0 {
			os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(on, " ")), 0)
		}
	}
	path := filepath.Join(parent, name)
	os.Remove(path) // stale and empty, or it fails below
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("jail: cgroup: %w", err)
	}
	cg := &Cgroup{Path: path, fd: -1}
	have := controllers(path)
	for _, l := range []struct {
		ctl, file string
		val       int64
	}{{"memory", "memory.max", lim.MemoryMax}, {"pids", "pids.max", int64(lim.PidsMax)}} {
		if l.val <= 0 {
			continue
		}
		if !slices.Contains(have, l.ctl) {
			cg.Unlimited = append(cg.Unlimited, l.file)
			continue
		}
		if err := os.WriteFile(filepath.Join(path, l.file), []byte(fmt.Sprint(l.val)), 0); err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("jail: cgroup %s: %w", l.file, err)
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("jail: cgroup: %w", err)
	}
	cg.fd = fd
	return cg, nil
}

func controllers(dir string) []string {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	return strings.Fields(string(b))
}

// FD is the cgroup directory, for SysProcAttr's CgroupFD.
func (c *Cgroup) FD() int { return c.fd }

// Close releases the directory fd (the cgroup stays); call it once the
// process has started.
func (c *Cgroup) Close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// RemoveCgroup removes a jailed process's cgroup once the process is gone;
// the kernel may report it busy for a moment after the last task was
// reaped, so it waits up to a second.
func RemoveCgroup(path string) error {
	if path == "" {
		return nil
	}
	var err error
	for range 100 {
		if err = unix.Rmdir(path); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("jail: removing cgroup %s: %w", path, err)
}
