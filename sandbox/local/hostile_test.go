// This file owns the hostile-container tests of the local driver: what a
// root process in a container tries against the host (sysctls, sysrq,
// kernel memory, device nodes from its image or a volume, new device
// nodes, setuid gains), each judged by its effect.
package local

import (
	"crypto/md5"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyperhq/hyperd-go/sandbox"
	"golang.org/x/sys/unix"
)

func TestHostileContainer(t *testing.T) {
	p := newPod(t)
	// a device node shipped in the image (c 1:11 is /dev/kmsg: a write
	// lands in the host's kernel log) and one in a volume
	if err := unix.Mknod(filepath.Join(p.rootfs, "kmsg"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 11))); err != nil {
		t.Fatal(err)
	}
	vol := t.TempDir()
	if err := unix.Mknod(filepath.Join(vol, "kmsg"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 11))); err != nil {
		t.Fatal(err)
	}
	hostCore, err := os.ReadFile("/proc/sys/kernel/core_pattern")
	if err != nil {
		t.Fatal(err)
	}
	// Each probe prints its name and "yes" when the container got its way.
	// The writes are harmless even where they succeed: core_pattern gets
	// its own value back, sysrq 'h' prints help, kmsg one line.
	probes := []struct{ name, cmd string }{
		{"core_pattern", "cat /proc/sys/kernel/core_pattern > /tmp/cp && cat /tmp/cp > /proc/sys/kernel/core_pattern"},
		{"sysrq", "echo h > /proc/sysrq-trigger"},
		{"kcore", "[ -s /proc/kcore ]"},
		{"keys", "[ -n \"$(cat /proc/keys)\" ]"},
		{"timer_list", "[ -n \"$(cat /proc/timer_list)\" ]"},
		{"sys_firmware", "[ -n \"$(ls /sys/firmware)\" ]"},
		{"image_device", "echo '<7>hyperd hostile test: image device' > /kmsg"},
		{"volume_device", "echo '<7>hyperd hostile test: volume device' > /data/kmsg"},
		{"mknod", "mknod /tmp/null c 1 3"},
		{"no_new_privs_off", "grep -q '^NoNewPrivs:[[:space:]]*0' /proc/self/status"},
		{"seccomp_off", "grep -q '^Seccomp:[[:space:]]*0' /proc/self/status"},
		{"user_namespace", "unshare -U -r true"},
		{"mount_namespace", "unshare -m true"},
		{"cap_sys_admin", "[ $(( 0x$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status) >> 21 & 1 )) = 1 ]"},
	}
	var script strings.Builder
	for _, pr := range probes {
		script.WriteString("if ( " + pr.cmd + " ) 2>/dev/null; then echo " + pr.name + "=yes; else echo " + pr.name + "=no; fi\n")
	}
	spec := sandbox.ContainerSpec{ID: "h", Rootfs: p.rootfs, Mounts: []sandbox.Mount{{Source: vol, Dest: "/data"}},
		Process: sandbox.Process{Args: []string{"sh", "-c", script.String()}}}
	out := p.stdout(spec)
	for _, pr := range probes {
		if !strings.Contains(out, pr.name+"=no\n") {
			t.Errorf("%s: the container got its way (%s)", pr.name, pr.cmd)
		}
	}
	if t.Failed() {
		t.Logf("container output:\n%s", out)
	}
	if now, _ := os.ReadFile("/proc/sys/kernel/core_pattern"); string(now) != string(hostCore) {
		t.Errorf("host core_pattern changed: %q -> %q", hostCore, now)
	}
}

// TestPodLimits: a pod's memory, vCPUs and process cap bound its
// containers together, judged by the cgroup files on the host and by
// what a container that exceeds them gets.
func TestPodLimits(t *testing.T) {
	d := testDriver()
	d.PodPids = 40
	p := newPodConfig(t, d, func(c *sandbox.Config) { c.VCPU, c.MemoryMiB = 1, 64 })
	sb := p.sb.(*localSandbox)
	want := map[string]string{"memory.max": "67108864", "cpu.max": "100000 100000", "pids.max": "40"}
	pidsEvents := filepath.Join(sb.cgroup, "pids.events")
	if !unifiedCgroups() {
		v1 := filepath.Join(cgroupV1Root, "%s", "hyperd", sb.id)
		want = map[string]string{
			fmt.Sprintf(v1, "memory") + "/memory.limit_in_bytes": "67108864",
			fmt.Sprintf(v1, "cpu") + "/cpu.cfs_quota_us":         "100000",
			fmt.Sprintf(v1, "pids") + "/pids.max":                "40",
			fmt.Sprintf(v1, "devices") + "/devices.list":         strings.Join(allowedDevices, "\n"),
		}
		pidsEvents = fmt.Sprintf(v1, "pids") + "/pids.events"
	}
	for file, w := range want {
		if !filepath.IsAbs(file) {
			file = filepath.Join(sb.cgroup, file)
		}
		b, err := os.ReadFile(file)
		if err != nil || strings.TrimSpace(string(b)) != w {
			t.Errorf("%s = %q (%v), want %q", file, b, err, w)
		}
	}
	// a 200 MiB buffer filled by dd: past memory.max, the OOM killer
	p.run("mem", sandbox.Process{Args: []string{"sh", "-c", "dd if=/dev/zero of=/dev/null bs=200M count=1"}})
	if st := p.wait("mem", ""); st.Code == 0 {
		t.Errorf("a container held 200 MiB in a 64 MiB pod: %+v", st)
	}
	// 60 sleepers past pids.max 40: forks fail
	p.stdout(sandbox.ContainerSpec{ID: "pids", Rootfs: p.rootfs, Process: sandbox.Process{Args: []string{"sh", "-c",
		"for i in $(seq 60); do sleep 30 & done 2>/dev/null; echo started; kill $(jobs -p) 2>/dev/null; true"}}})
	if b, err := os.ReadFile(pidsEvents); err != nil || !strings.Contains(string(b), "max ") || strings.Contains(string(b), "max 0") {
		t.Errorf("pids.events = %q (%v): no fork was refused at pids.max", b, err)
	}
}

// TestReattachDeadPodRemovesCgroups: a pod whose agent died while no
// daemon ran leaves no cgroup behind once a daemon finds it gone.
func TestReattachDeadPodRemovesCgroups(t *testing.T) {
	d := testDriver()
	p := newPodWith(t, d)
	sb := p.sb.(*localSandbox)
	h := sb.Handle()
	dirs := sb.cgroupsV1
	if unifiedCgroups() {
		dirs = []string{sb.cgroup}
	}
	for _, dir := range dirs {
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("the pod's cgroup %s: %v", dir, err)
		}
	}
	unix.Kill(sb.pid, unix.SIGKILL)
	<-sb.Done()
	if _, err := d.Reattach(ctx(t), h); err == nil {
		t.Fatal("reattached to a dead agent")
	}
	for _, dir := range dirs {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left behind (%v)", dir, err)
		}
	}
}

// TestLargeFiles: pod files of any size the API accepts reach the
// container whole (a shim message is one bounded datagram; an agent frame
// is 16 MiB): 20 MiB, 300 KiB staged, small ones inline.
func TestLargeFiles(t *testing.T) {
	p := newPod(t)
	big := make([]byte, 20<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	mid := big[:300<<10]
	files := []sandbox.File{{Path: "/big", Content: big, Mode: 0o600}, {Path: "/etc/mid", Content: mid}, {Path: "/small", Content: []byte("x\n")}}
	want := ""
	for _, f := range files {
		want += fmt.Sprintf("%x  %s\n", md5.Sum(f.Content), f.Path)
	}
	spec := sandbox.ContainerSpec{ID: "f", Rootfs: p.rootfs, Files: files,
		Process: sandbox.Process{Args: []string{"md5sum", "/big", "/etc/mid", "/small"}}}
	if got := p.stdout(spec); got != want {
		t.Errorf("md5sum in the container:\n%s\nwant\n%s", got, want)
	}
	if ents, _ := os.ReadDir(filepath.Join(p.sb.(*localSandbox).stateDir, agentDir, "staged")); len(ents) != 0 {
		t.Errorf("staged files left behind: %v", ents)
	}
}
