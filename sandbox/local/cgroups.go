// This file owns a local pod's cgroups on the host: where its limits
// (vCPUs, memory, processes) and its device allow-list are enforced. On a
// cgroup v2 host the agent applies the limits to the pod's cgroup (its
// --memory-mib/--cpus/--pids flags); on a cgroup v1 host (controllers on
// /sys/fs/cgroup/<controller>, as on this project's machines) the driver
// makes one directory per controller, writes the limits and the device
// allow-list, and moves the agent there before it starts any container,
// so every container process inherits them.
package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// cgroupV1Root is where a cgroup v1 host mounts its controllers.
var cgroupV1Root = "/sys/fs/cgroup"

// unifiedCgroups tells whether the host runs cgroup v2 alone (the agent's
// per-container cgroups and the pod's limits live there).
func unifiedCgroups() bool {
	var st unix.Statfs_t
	return unix.Statfs(cgroupV1Root, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// limits are what a pod gets.
type limits struct {
	memMiB, cpus, pids int
	blockDevs          []uint64 // block devices the agent mounts (disks)
}

// allowedDevices is the device allow-list of a pod on cgroup v1 (the
// kernel's Documentation/admin-guide/cgroup-v1/devices.rst): the nodes
// setupRoot makes in a container's /dev, its devpts instance and the pod's
// disks; everything else, reading, writing and mknod, is refused, whatever
// node a container finds or makes.
var allowedDevices = []string{
	"c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", // null zero full random urandom
	"c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", // tty console ptmx pts
}

// v1Files are the files written in each controller's directory, in order.
func (l limits) v1Files() map[string][][2]string {
	const period = 100000 // µs
	m := map[string][][2]string{
		"pids":    {{"pids.max", strconv.Itoa(l.pids)}},
		"devices": {{"devices.deny", "a"}},
	}
	for _, d := range allowedDevices {
		m["devices"] = append(m["devices"], [2]string{"devices.allow", d})
	}
	for _, dev := range l.blockDevs {
		m["devices"] = append(m["devices"], [2]string{"devices.allow", fmt.Sprintf("b %d:%d rw", unix.Major(dev), unix.Minor(dev))})
	}
	if l.memMiB > 0 {
		b := strconv.FormatInt(int64(l.memMiB)<<20, 10)
		// memsw (memory+swap) only where swap is accounted; after the
		// memory limit, which it may not be below
		m["memory"] = [][2]string{{"memory.limit_in_bytes", b}, {"memory.memsw.limit_in_bytes", b}}
	}
	if l.cpus > 0 {
		m["cpu"] = [][2]string{{"cpu.cfs_period_us", strconv.Itoa(period)}, {"cpu.cfs_quota_us", strconv.Itoa(l.cpus * period)}}
	}
	return m
}

// setupV1 makes the pod's cgroup v1 directories under hyperd/<id>, writes
// l there and moves pid (the agent, before it started any container) in.
// It returns the directories made, for removal when the pod stops.
func setupV1(id string, pid int, l limits) ([]string, error) {
	var dirs []string
	fail := func(err error) ([]string, error) {
		removeV1(dirs)
		return nil, err
	}
	for ctl, files := range l.v1Files() {
		base := filepath.Join(cgroupV1Root, ctl)
		var st unix.Statfs_t
		if err := unix.Statfs(base, &st); err != nil || st.Type != unix.CGROUP_SUPER_MAGIC {
			return fail(fmt.Errorf("cgroup v1 controller %s is not mounted at %s: the pod's limits cannot be enforced", ctl, base))
		}
		dir := filepath.Join(base, "hyperd", id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fail(err)
		}
		dirs = append(dirs, dir)
		for _, f := range files {
			err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0)
			if err != nil && f[0] == "memory.memsw.limit_in_bytes" && errors.Is(err, os.ErrNotExist) {
				continue // no swap accounting: nothing to limit
			}
			if err != nil {
				return fail(fmt.Errorf("cgroup %s: %s=%q: %w", dir, f[0], f[1], err))
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fail(fmt.Errorf("cgroup %s: move the agent in: %w", dir, err))
		}
	}
	return dirs, nil
}

// removeV1 removes a pod's cgroup v1 directories (empty once its
// processes are gone).
func removeV1(dirs []string) {
	for _, d := range dirs {
		os.Remove(d)
	}
}
