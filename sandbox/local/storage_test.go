// This file tests a local sandbox's file systems: commit, volumes,
// staged files, read-only roots and the block-device lower dir.
package local

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/sandbox"
)

func TestCommit(t *testing.T) {
	p := newPod(t)
	p.run("c", sandbox.Process{Args: []string{"sh", "-c", "echo new > /etc/old && rm /etc/gone && mkdir -p /data && echo x > /data/f && rm -rf /var && mkdir /var && echo y > /var/new"}})
	if st := p.wait("c", ""); st.Code != 0 {
		t.Fatalf("exit %d", st.Code)
	}
	rc, err := p.a.Commit(ctx(t), "c")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := imgtest.TarFiles(rc)
	if err != nil {
		t.Fatalf("layer tar: %v", err)
	}
	want := map[string]string{"etc/old": "new\n", "etc/.wh.gone": "", "data/f": "x\n", "var/.wh..wh..opq": "", "var/new": "y\n"}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("tar entry %s = %q (present %v), want %q; entries %v", k, g, ok, v, keys(got))
		}
	}
	for _, k := range []string{"etc/gone", "var/lib/old", "bin/busybox"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s is in the layer", k)
		}
	}
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

func TestVolumesFilesReadOnly(t *testing.T) {
	p := newPod(t)
	vol := t.TempDir()
	os.WriteFile(filepath.Join(vol, "in"), []byte("from host\n"), 0o644)
	outside := t.TempDir()
	// an image symlink pointing out of the root must resolve inside it
	os.Symlink(outside, filepath.Join(p.rootfs, "escape"))
	spec := sandbox.ContainerSpec{ID: "v", Rootfs: p.rootfs, ReadOnlyFS: true,
		Mounts: []sandbox.Mount{{Source: vol, Dest: "/data"}, {Source: vol, Dest: "/ro", ReadOnly: true}, {Source: vol, Dest: "/escape/vol"}},
		Files:  []sandbox.File{{Path: "/etc/app.conf", Content: []byte("k=v\n"), Mode: 0o600, UID: 65534}},
		Process: sandbox.Process{Args: []string{"sh", "-c",
			"cat /data/in; echo written > /data/out; cat /etc/app.conf; stat -c '%a %u' /etc/app.conf; " +
				"touch /ro/x 2>/dev/null || echo ro-volume; touch /newfile 2>/dev/null || echo ro-rootfs; cat /escape/vol/in"}}}
	want := "from host\nk=v\n600 65534\nro-volume\nro-rootfs\nfrom host\n"
	if out := p.stdout(spec); out != want {
		t.Errorf("got %q, want %q", out, want)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "out")); err != nil || string(b) != "written\n" {
		t.Errorf("volume write: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("a mount escaped the container root through a symlink: %v", ents)
	}
}

// TestBlockDeviceLower: the kvm path's rootfs (an ext4 block device as the
// overlay lower) exercised with a loop device.
func TestBlockDeviceLower(t *testing.T) {
	requireRoot(t)
	rootfs := busyboxRootfs(t)
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", rootfs, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 (e2fsprogs): %v %s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", "-r", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	// the device is one of the pod's disks: its device allow-list has it
	p := newPodConfig(t, testDriver(), func(c *sandbox.Config) { c.Disks = []sandbox.Disk{{HostPath: dev, ReadOnly: true}} })
	spec := sandbox.ContainerSpec{ID: "blk", Rootfs: dev, RootfsType: "ext4",
		Process: sandbox.Process{Args: []string{"sh", "-c", "cat /etc/old; echo changed > /etc/old; cat /etc/old"}}}
	if got := p.stdout(spec); got != "old\nchanged\n" {
		t.Errorf("got %q", got)
	}
	if st := p.wait("blk", ""); st.Code != 0 {
		t.Errorf("exit %d", st.Code)
	}
	if err := p.a.RemoveContainer(ctx(t), "blk"); err != nil {
		t.Fatal(err)
	}
}
