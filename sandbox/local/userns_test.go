// This file owns the tests of containers in a user namespace (Driver
// UserNS): what the container sees (root, the image's owners, low ports),
// what the host sees (an unprivileged uid, on-disk ids unmapped in the
// container's changes, its commit and its volumes).
package local

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
	"golang.org/x/sys/unix"
)

func TestUserNamespace(t *testing.T) {
	d := New(agentBin)
	m := testUserNS
	d.UserNS = &m
	p := newPodWith(t, d)
	vol := t.TempDir()
	script := strings.Join([]string{
		"awk '{print $1, $2, $3}' /proc/self/uid_map /proc/self/gid_map",
		"id -u",
		"stat -c 'busybox %u:%g' /bin/busybox",
		"echo changed >> /etc/old && echo etc-writable",
		"touch /own1000 && chown 1000:1000 /own1000",
		"echo v > /data/v && chown 2000:2000 /data/v",
		"cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
		"nc -l -p 80 </dev/null >/dev/null & n=$!",
		"for i in $(seq 100); do cat /proc/net/tcp /proc/net/tcp6 | grep -q ':0050 ' && { echo bound-80; break; }; sleep 0.1; done; kill $n",
		"mknod /tmp/n c 1 3 2>/dev/null || echo no-mknod",
	}, "\n")
	out := p.stdout(sandbox.ContainerSpec{ID: "u", Rootfs: p.rootfs, Mounts: []sandbox.Mount{{Source: vol, Dest: "/data"}},
		Process: sandbox.Process{Args: []string{"sh", "-c", "exec 2>&1\n" + script}}})
	host := strconv.FormatUint(uint64(m.Host), 10)
	want := "0 " + host + " 65536\n0 " + host + " 65536\n0\nbusybox 0:0\netc-writable\n0\nbound-80\nno-mknod\n"
	if out != want {
		t.Errorf("container saw:\n%s\nwant:\n%s", out, want)
	}
	// the host's view of a container's processes: every one of them runs
	// as the mapped uid, none as root
	p.run("s", sandbox.Process{Args: []string{"sleep", "30"}})
	var uids []string
	for i := 0; i < 50 && len(uids) < 2; i++ { // the shim and sleep
		time.Sleep(100 * time.Millisecond)
		uids = containerUIDs(t, p.sb.(*localSandbox).pid)
	}
	if len(uids) < 2 {
		t.Fatalf("container processes under the agent: %v, want the shim and sleep", uids)
	}
	for _, u := range uids {
		if u != host {
			t.Errorf("a container process runs as host uid %s, want %s (all: %v)", u, host, uids)
		}
	}
	if err := p.a.Signal(ctx(t), "s", "", 9); err != nil {
		t.Fatal(err)
	}
	p.wait("s", "")
	// on disk, the container's changes and its volume have the image's
	// and the container's own ids, not the host ids they run as
	upper := filepath.Join(p.sb.(*localSandbox).stateDir, agentDir, "c", "u", "rw", "upper")
	for path, want := range map[string][2]int{filepath.Join(upper, "own1000"): {1000, 1000}, filepath.Join(upper, "etc/old"): {0, 0}, filepath.Join(vol, "v"): {2000, 2000}} {
		uid, gid := owner(t, path)
		if uid != want[0] || gid != want[1] {
			t.Errorf("%s is owned by %d:%d on disk, want %d:%d", path, uid, gid, want[0], want[1])
		}
	}
	layer, err := p.a.Commit(ctx(t), "u")
	if err != nil {
		t.Fatal(err)
	}
	defer layer.Close()
	tr := tar.NewReader(layer)
	seen := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = strconv.Itoa(h.Uid) + ":" + strconv.Itoa(h.Gid)
	}
	if seen["own1000"] != "1000:1000" || seen["etc/old"] != "0:0" {
		t.Errorf("commit owners: own1000 %q, etc/old %q; want 1000:1000 and 0:0 (all: %v)", seen["own1000"], seen["etc/old"], seen)
	}
}

func owner(t *testing.T, path string) (int, int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Uid), int(st.Gid)
}

// containerUIDs returns the host uids of the agent process's descendants
// (the shims and container processes).
func containerUIDs(t *testing.T, agent int) []string {
	t.Helper()
	kids := map[int][]int{}
	uid := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var ppid int
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PPid:"); ok {
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if v, ok := strings.CutPrefix(l, "Uid:"); ok {
				uid[pid] = strings.Fields(v)[0]
			}
		}
		kids[ppid] = append(kids[ppid], pid)
	}
	var out []string
	var walk func(int)
	walk = func(p int) {
		for _, k := range kids[p] {
			out = append(out, uid[k])
			walk(k)
		}
	}
	walk(agent)
	return out
}
