package agent

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"golang.org/x/sys/unix"
)

func TestResolveUser(t *testing.T) {
	passwd := parseColon(strings.NewReader("root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001:App:/home/app:/bin/sh\nshort:x\n"))
	group := parseColon(strings.NewReader("root:x:0:\napp:x:1001:\nextra:x:2000:app,other\nstaff:x:50:\n"))
	tests := []struct {
		user      string
		uid, gid  uint32
		groups    []uint32
		home      string
		wantError bool
	}{
		{"", 0, 0, nil, "/root", false},
		{"root", 0, 0, nil, "/root", false},
		{"app", 1000, 1001, []uint32{2000}, "/home/app", false},
		{"1000", 1000, 1001, nil, "/home/app", false},
		{"4242", 4242, 0, nil, "/", false},
		{"app:staff", 1000, 50, []uint32{2000}, "/home/app", false},
		{"123:456", 123, 456, nil, "/", false},
		{"nobody", 0, 0, nil, "", true},
		{"app:nogroup", 0, 0, nil, "", true},
		{"-1", 0, 0, nil, "", true},
		{"99999999999", 0, 0, nil, "", true},
	}
	for _, tt := range tests {
		cred, home, err := resolveUserFrom(tt.user, passwd, group)
		if tt.wantError {
			if err == nil {
				t.Errorf("%q: no error", tt.user)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.user, err)
			continue
		}
		if cred.Uid != tt.uid || cred.Gid != tt.gid || home != tt.home || !reflect.DeepEqual(cred.Groups, tt.groups) {
			t.Errorf("%q: got %d:%d %v %s, want %d:%d %v %s", tt.user, cred.Uid, cred.Gid, cred.Groups, home, tt.uid, tt.gid, tt.groups, tt.home)
		}
	}
}

func TestOutputTailSince(t *testing.T) {
	o, err := newOutput(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	o.write(streamStdout, []byte("a"))
	o.write(streamStderr, []byte("b"))
	time.Sleep(2 * time.Millisecond)
	mid := time.Now()
	o.write(streamStdout, []byte("c"))
	o.write(streamStderr, []byte("d"))
	o.finish()
	all := map[byte]bool{streamStdout: true, streamStderr: true}
	out := map[byte]bool{streamStdout: true}
	tests := []struct {
		name    string
		tail    int
		since   time.Time
		streams map[byte]bool
		want    string
	}{
		{"all", -1, time.Time{}, all, "abcd"},
		{"tail 2", 2, time.Time{}, all, "cd"},
		{"tail 0", 0, time.Time{}, all, ""},
		{"tail 1 stdout", 1, time.Time{}, out, "c"},
		{"tail beyond", 10, time.Time{}, all, "abcd"},
		{"since", -1, mid, all, "cd"},
		{"since and tail", 1, mid, all, "d"},
	}
	for _, tt := range tests {
		r, err := o.open(false, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.off = o.startOffset(r.f, tt.tail, tt.since, tt.streams)
		var got string
		for {
			rec, err := r.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.streams[rec.stream] {
				got += string(rec.data)
			}
		}
		r.close()
		if got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestWriteLayer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (mknod of an overlay whiteout)")
	}
	up := t.TempDir()
	os.MkdirAll(filepath.Join(up, "etc"), 0o755)
	os.WriteFile(filepath.Join(up, "etc/conf"), []byte("data"), 0o640)
	os.Symlink("conf", filepath.Join(up, "etc/link"))
	if err := unix.Mknod(filepath.Join(up, "etc/deleted"), unix.S_IFCHR|0o000, 0); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := writeLayer(&buf, up); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[h.Name] = string(h.Typeflag) + ":" + string(b) + ":" + h.Linkname
	}
	want := map[string]string{
		"etc/":            string(tar.TypeDir) + "::",
		"etc/conf":        string(tar.TypeReg) + ":data:",
		"etc/link":        string(tar.TypeSymlink) + "::conf",
		"etc/.wh.deleted": string(tar.TypeReg) + "::",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layer %v, want %v", got, want)
	}
}

func TestValidID(t *testing.T) {
	for id, ok := range map[string]bool{"abc": true, "a-b_c.1": true, "": false, ".": false, "..": false, "a/b": false, "a b": false, strings.Repeat("x", 129): false} {
		if validID(id) != ok {
			t.Errorf("validID(%q) = %v", id, !ok)
		}
	}
}

func TestResolveSymlinksIn(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755)
	os.Symlink("/usr/lib", filepath.Join(root, "lib"))
	os.Symlink("../../..", filepath.Join(root, "usr/lib/up"))
	os.Symlink("/nonexistent/dir", filepath.Join(root, "dangling"))
	os.Symlink("loop", filepath.Join(root, "loop"))
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	tests := []struct {
		in, want string
		err      bool
	}{
		{"/usr/lib", "/usr/lib", false},
		{"lib/x", "/usr/lib/x", false},
		{"/usr/lib/up/etc", "/etc", false},
		{"/../../etc", "/etc", false},
		{"/dangling/vol", "/nonexistent/dir/vol", false},
		{"/loop/x", "", true},
	}
	for _, tt := range tests {
		got, err := resolveSymlinksIn(rfd, tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("%s: %q %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestReadCgroupStats(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"cpu.stat":       "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
		"memory.current": "8192\n",
		"memory.max":     "max\n",
		"memory.stat":    "anon 4096\ninactive_file 1024\n",
		"pids.current":   "3\n",
	}
	for n, c := range files {
		os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644)
	}
	var st protocol.ContainerStats
	readCgroupStats(dir, &st)
	want := protocol.ContainerStats{CPUUsageNS: 1500000, CPUUserNS: 1000000, CPUSystemNS: 500000, MemoryUsage: 8192, WorkingSet: 7168, Pids: 3, Source: StatsCgroup}
	if st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
}

func TestReadProcTreeStats(t *testing.T) {
	stat := func(pid, ppid int, comm string, utime, stime, rss int) string {
		return fmt.Sprintf("%d (%s) S %d 1 1 0 -1 4194560 100 0 0 0 %d %d 0 0 20 0 1 0 100 1000000 %d 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n", pid, comm, ppid, utime, stime, rss)
	}
	page := uint64(os.Getpagesize())
	for _, tc := range []struct {
		name      string
		procs     map[string]string // dir name -> stat content
		root      int
		pids      uint64
		user, sys uint64
		mem       uint64
	}{
		{"tree", map[string]string{
			"10":   stat(10, 1, "hyper-agent", 1, 2, 10),
			"11":   stat(11, 10, "sh", 3, 4, 20),
			"12":   stat(12, 11, "a) (b", 5, 0, 30), // parentheses in the name
			"13":   stat(13, 1, "other", 100, 100, 100),
			"self": stat(13, 1, "other", 100, 100, 100), // non-numeric: ignored
		}, 10, 3, 9, 6, 60},
		{"gone", map[string]string{"10": stat(10, 1, "x", 1, 1, 1)}, 20, 0, 0, 0, 0},
		{"no root", map[string]string{"10": stat(10, 1, "x", 1, 1, 1)}, 0, 0, 0, 0, 0},
		{"garbage", map[string]string{"10": "10 (x S", "11": "junk", "12": stat(12, 10, "y", 1, 1, 1)}, 10, 0, 0, 0, 0},
		{"cycle", map[string]string{"10": stat(10, 11, "x", 1, 0, 1), "11": stat(11, 10, "y", 1, 0, 1)}, 10, 2, 2, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, c := range tc.procs {
				os.MkdirAll(filepath.Join(dir, n), 0o755)
				if err := os.WriteFile(filepath.Join(dir, n, "stat"), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var st protocol.ContainerStats
			readProcTreeStats(dir, tc.root, &st)
			tick := uint64(1e9 / clockTicks)
			want := protocol.ContainerStats{Source: StatsProc, Pids: tc.pids, CPUUserNS: tc.user * tick, CPUSystemNS: tc.sys * tick,
				CPUUsageNS: (tc.user + tc.sys) * tick, MemoryUsage: tc.mem * page, WorkingSet: tc.mem * page}
			if st != want {
				t.Errorf("got %+v\nwant %+v", st, want)
			}
		})
	}
}

func TestMemAvailable(t *testing.T) {
	for _, tc := range []struct {
		name, meminfo string
		want          uint64
	}{
		{"guest", "MemTotal:         117004 kB\nMemFree:           98012 kB\nMemAvailable:      95500 kB\nBuffers:               0 kB\n", 95500 << 10},
		{"absent", "MemTotal:         117004 kB\nMemFree:           98012 kB\n", 0},
		{"no unit", "MemAvailable:      95500\n", 0},
		{"not a number", "MemAvailable:      lots kB\n", 0},
		{"absurd", "MemAvailable:      99999999999999999 kB\n", 0},
		{"empty", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "meminfo")
			if err := os.WriteFile(p, []byte(tc.meminfo), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := memAvailable(p); got != tc.want {
				t.Fatalf("memAvailable = %d, want %d", got, tc.want)
			}
		})
	}
	if got := memAvailable("/nonexistent/meminfo"); got != 0 {
		t.Fatalf("memAvailable of a missing file = %d", got)
	}
}
