// This file tests a local sandbox's resource figures: cgroup v2
// placement and the per-container statistics' sources.
package local

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
	"golang.org/x/sys/unix"
)

// TestCgroupStats places containers in cgroup v2. This host may mount
// cgroup2 only at /sys/fs/cgroup/unified (hybrid): cpu.stat is there even
// without controllers; memory/pids need the controllers and are only
// checked when the hierarchy offers them.
func TestCgroupStats(t *testing.T) {
	parent := ""
	for _, base := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(base, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			parent = filepath.Join(base, "hyperd-test")
			break
		}
	}
	if parent == "" {
		t.Fatal("no cgroup2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	}
	t.Cleanup(func() { os.Remove(parent) })
	p := newPodWith(t, &Driver{AgentPath: agentBin, CgroupParent: parent})
	p.run("busy", sandbox.Process{Args: []string{"sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"}})
	if st := p.wait("busy", ""); st.Code != 0 {
		t.Fatalf("exit %d", st.Code)
	}
	cg := filepath.Join(parent, p.sb.ID(), "busy")
	if _, err := os.Stat(filepath.Join(cg, "cpu.stat")); err != nil {
		t.Fatalf("container cgroup %s: %v", cg, err)
	}
	st, err := p.a.Stats(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Containers) != 1 || st.Containers[0].CPUUsageNS < 10_000_000 || st.Containers[0].CPUUserNS == 0 {
		t.Errorf("stats after a busy loop: %+v", st.Containers)
	}
	ctrls, _ := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
	if strings.Contains(string(ctrls), "memory") && st.Containers[0].MemoryUsage == 0 {
		t.Errorf("memory controller present but no memory usage: %+v", st.Containers[0])
	}
	if err := p.sb.Stop(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(parent, p.sb.ID())); !os.IsNotExist(err) {
		t.Errorf("pod cgroup left after Stop: %v", err)
	}
}

// TestStatsSources checks per-container figures from cgroup v2 where the
// host has it, and from /proc when the cgroup parent is not on cgroup2.
func TestStatsSources(t *testing.T) {
	hostSource := "proc"
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		hostSource = "cgroup"
	}
	for _, tc := range []struct {
		name   string
		driver func(t *testing.T) *Driver
		want   string
	}{
		{"default", func(*testing.T) *Driver { return testDriver() }, hostSource},
		{"no-cgroup2", func(t *testing.T) *Driver {
			return &Driver{AgentPath: agentBin, CgroupParent: t.TempDir()}
		}, "proc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPodWith(t, tc.driver(t))
			// burn some CPU, then say so and sleep: shim + sleep are the processes
			p.run("busy", sandbox.Process{Args: []string{"sh", "-c",
				"i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo ready; exec sleep 1000"}})
			sio, err := p.a.Attach(ctx(t), "busy", "", false)
			if err != nil {
				t.Fatal(err)
			}
			defer sio.Stdout.Close()
			buf := make([]byte, 6)
			if _, err := io.ReadFull(sio.Stdout, buf); err != nil || string(buf) != "ready\n" {
				t.Fatalf("waiting for ready: %q %v", buf, err)
			}
			ps, err := p.a.Stats(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(ps.Containers) != 1 {
				t.Fatalf("stats %+v", ps)
			}
			c := ps.Containers[0]
			if c.ID != "busy" || c.Source != tc.want {
				t.Errorf("container %q source %q, want busy from %q", c.ID, c.Source, tc.want)
			}
			if c.Pids < 2 || c.MemoryUsage == 0 || c.WorkingSet == 0 || c.WorkingSet > c.MemoryUsage {
				t.Errorf("pids %d memory %d working set %d (want ≥2 pids: shim and sleep; memory > 0)", c.Pids, c.MemoryUsage, c.WorkingSet)
			}
			if c.CPUUsageNS == 0 || c.CPUUserNS+c.CPUSystemNS > c.CPUUsageNS+uint64(10*time.Millisecond) {
				t.Errorf("cpu usage %d user %d system %d after a busy loop", c.CPUUsageNS, c.CPUUserNS, c.CPUSystemNS)
			}
			if err := p.a.Signal(ctx(t), "busy", "", int(unix.SIGKILL)); err != nil {
				t.Fatal(err)
			}
			p.wait("busy", "")
			ps, err = p.a.Stats(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(ps.Containers) != 1 || ps.Containers[0].Pids != 0 {
				t.Errorf("after exit: %+v", ps.Containers)
			}
		})
	}
}
