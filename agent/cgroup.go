// This file owns the agent's cgroup v2 use: the pod's cgroup root and its
// controllers, the pod's limits, per-container cgroups and their stats.
package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"golang.org/x/sys/unix"
)

// setupCgroupRoot creates root on a writable cgroup2 hierarchy and enables
// the cpu, memory and pids controllers for its children. It reports
// whether per-container cgroups can be used.
func setupCgroupRoot(root string) bool {
	if root == "" {
		return false
	}
	var st unix.Statfs_t
	base := root
	for {
		if err := unix.Statfs(base, &st); err == nil {
			break
		}
		base = filepath.Dir(base)
		if base == "/" {
			return false
		}
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return false
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return false
	}
	// enable controllers from the hierarchy root down to root
	mnt := base
	for {
		p := filepath.Dir(mnt)
		var ps unix.Statfs_t
		if p == mnt || unix.Statfs(p, &ps) != nil || ps.Type != unix.CGROUP2_SUPER_MAGIC {
			break
		}
		mnt = p
	}
	rel, err := filepath.Rel(mnt, root)
	if err != nil {
		return false
	}
	dir := mnt
	parts := append([]string{""}, strings.Split(rel, "/")...)
	for _, part := range parts {
		if part != "" {
			dir = filepath.Join(dir, part)
		}
		for _, ctl := range []string{"+cpu", "+memory", "+pids"} {
			os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(ctl), 0)
		}
	}
	return true
}

// Limits are a pod's resource limits, enforced on its cgroup root so they
// bound all its containers together (cgroup v2: the kernel's
// Documentation/admin-guide/cgroup-v2.rst, "memory.max", "cpu.max",
// "pids.max").
type Limits struct {
	MemoryBytes int64 // memory.max; swap is refused too, as in a VM
	CPUs        int   // cpu.max: CPUs worth of time per period
	Pids        int   // pids.max
}

// applyLimits writes l into the cgroup dir.
func applyLimits(dir string, l Limits) error {
	const period = 100000 // µs, the kernel's default cpu.max period
	var files [][2]string
	if l.MemoryBytes > 0 {
		files = append(files, [2]string{"memory.max", strconv.FormatInt(l.MemoryBytes, 10)}, [2]string{"memory.swap.max", "0"})
	}
	if l.CPUs > 0 {
		files = append(files, [2]string{"cpu.max", fmt.Sprintf("%d %d", l.CPUs*period, period)})
	}
	if l.Pids > 0 {
		files = append(files, [2]string{"pids.max", strconv.Itoa(l.Pids)})
	}
	for _, f := range files {
		err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0)
		if err != nil && !(f[0] == "memory.swap.max" && os.IsNotExist(err)) { // no swap accounting: nothing to refuse
			return fmt.Errorf("cgroup limit %s=%s: %w", f[0], f[1], err)
		}
	}
	return nil
}

func (s *Server) makeCgroup(id string) string {
	if !s.cgroup {
		return ""
	}
	p := filepath.Join(s.cfg.CgroupRoot, id)
	if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
		return ""
	}
	return p
}

func readUint(p string) uint64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

func readKV(p string) map[string]uint64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	m := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			m[k] = n
		}
	}
	return m
}

func readCgroupStats(dir string, st *protocol.ContainerStats) {
	st.Source = StatsCgroup
	cpu := readKV(filepath.Join(dir, "cpu.stat"))
	st.CPUUsageNS = cpu["usage_usec"] * 1000
	st.CPUUserNS = cpu["user_usec"] * 1000
	st.CPUSystemNS = cpu["system_usec"] * 1000
	st.MemoryUsage = readUint(filepath.Join(dir, "memory.current"))
	st.MemoryLimit = readUint(filepath.Join(dir, "memory.max")) // "max" reads as 0: no limit
	mem := readKV(filepath.Join(dir, "memory.stat"))
	st.WorkingSet = st.MemoryUsage
	if in := mem["inactive_file"]; in < st.WorkingSet {
		st.WorkingSet -= in
	}
	st.Pids = readUint(filepath.Join(dir, "pids.current"))
}
