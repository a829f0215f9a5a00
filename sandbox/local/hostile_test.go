// This file owns the hostile-container tests of the local driver: what a
// root process in a container tries against the host (sysctls, sysrq,
// kernel memory, device nodes from its image or a volume, new device
// nodes, setuid gains), each judged by its effect.
package local

import (
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
		{"cap_sys_admin", "[ $(( 0x$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status) >> 21 & 1 )) = 1 ]"},
	}
	var script strings.Builder
	for _, pr := range probes {
		script.WriteString("if ( " + pr.cmd + " ) 2>/dev/null; then echo " + pr.name + "=yes; else echo " + pr.name + "=no; fi\n")
	}
	spec := sandbox.ContainerSpec{ID: "h", Rootfs: p.rootfs, Mounts: []sandbox.Mount{{Source: vol, Dest: "/data"}},
		Process: sandbox.Process{Args: []string{"sh", "-c", script.String()}}}
	if err := p.a.AddContainer(ctx(t), spec); err != nil {
		t.Fatal(err)
	}
	if err := p.a.StartContainer(ctx(t), "h"); err != nil {
		t.Fatal(err)
	}
	sio, err := p.a.Attach(ctx(t), "h", "", false)
	if err != nil {
		t.Fatal(err)
	}
	out := readAll(t, sio.Stdout)
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
