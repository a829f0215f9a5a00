// This file owns the figures the agent reads from /proc: a container's
// process tree when it has no cgroup of its own, and the pod's memory.

package agent

import (
	"os"
	"strconv"
	"strings"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"golang.org/x/sys/unix"
)

// Stats sources reported in protocol.ContainerStats.Source.
const (
	StatsCgroup = "cgroup" // the container's cgroup v2 directory
	StatsProc   = "proc"   // summed over the container's processes in /proc (no writable cgroup2)
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; it is
// 100 on every Linux architecture the agent runs on.
const clockTicks = 100

type procEntry struct {
	ppid               int
	utime, stime, rssP uint64
}

// parseProcStat parses /proc/<pid>/stat. The command name may contain
// spaces and parentheses, so fields are counted after the last ')'.
func parseProcStat(b []byte) (procEntry, bool) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procEntry{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 { // f[0] is field 3 (state); rss is field 24
		return procEntry{}, false
	}
	var e procEntry
	var err error
	if e.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procEntry{}, false
	}
	e.utime, _ = strconv.ParseUint(f[11], 10, 64)
	e.stime, _ = strconv.ParseUint(f[12], 10, 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	if rss > 0 {
		e.rssP = uint64(rss)
	}
	return e, true
}

// readProcTreeStats fills st with the figures of root and all its
// descendants read from /proc: the fallback when the container has no
// cgroup. CPU is what the live processes used (reaped children's time is
// counted only once they were waited for, as cutime/cstime of their parent
// is not included), memory is the sum of resident set sizes (shared pages
// counted once per process), and there is no limit.
func readProcTreeStats(procDir string, root int, st *protocol.ContainerStats) {
	st.Source = StatsProc
	if root <= 0 {
		return
	}
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return
	}
	procs := map[int]procEntry{}
	children := map[int][]int{}
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(procDir + "/" + d.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		e, ok := parseProcStat(b)
		if !ok {
			continue
		}
		procs[pid] = e
		children[e.ppid] = append(children[e.ppid], pid)
	}
	if _, ok := procs[root]; !ok {
		return
	}
	page := uint64(os.Getpagesize())
	seen := map[int]bool{}
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		e := procs[pid]
		st.CPUUserNS += e.utime * (1e9 / clockTicks)
		st.CPUSystemNS += e.stime * (1e9 / clockTicks)
		st.MemoryUsage += e.rssP * page
		st.Pids++
		queue = append(queue, children[pid]...)
	}
	st.CPUUsageNS = st.CPUUserNS + st.CPUSystemNS
	st.WorkingSet = st.MemoryUsage
}

// memTotal is the pod's RAM (in a VM, the guest's), in bytes.
func memTotal() uint64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}

// memAvailable reads MemAvailable from a meminfo file, in bytes; 0 if
// absent or malformed.
func memAvailable(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "MemAvailable:" && f[2] == "kB" {
			if n, err := strconv.ParseUint(f[1], 10, 64); err == nil && n < 1<<44 {
				return n << 10
			}
		}
	}
	return 0
}
