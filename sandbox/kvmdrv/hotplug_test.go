// This file tests disk hotplug on a real pod VM (it needs a booting guest:
// the nested runner's kvmdrv suite): disks given to a running VM, cold
// booted and restored from a template, mounted by a container as its
// rootfs and as a writable volume; the handle that lists them and a
// reattached sandbox that knows them and takes one more.

package kvmdrv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/client"
	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/initramfs"
	"github.com/hyperhq/hyperd-go/internal/kvmtest"
	"github.com/hyperhq/hyperd-go/internal/testbin"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// agentDriver is a Driver whose VMs run the real agent, on the kernel
// hyperd boots by default (make kernel's own, else Debian's with its
// modules).
func agentDriver(t *testing.T) *Driver {
	t.Helper()
	kvmtest.Need(t)
	kernel := filepath.Join(repoRoot(), "build", "guest", "vmlinux")
	opt := initramfs.Options{AgentPath: testbin.Build(t, "./cmd/hyper-agent"), CacheDir: t.TempDir(), Zstd: true}
	if _, err := os.Stat(kernel); err != nil {
		kernel = filepath.Join(repoRoot(), "build", "vmlinux")
		opt.ModulesDir = filepath.Join(repoRoot(), "build", "modules")
	}
	if _, err := os.Stat(kernel); err != nil {
		t.Fatalf("run make kernel: %v", err)
	}
	initrd, err := initramfs.Build(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return &Driver{Hyperd: buildHyperd(t), Kernel: kernel, Initrd: initrd, BootTimeout: 2 * time.Minute, BootRetries: 2,
		Connect: func(ctx context.Context, dial Dialer) (sandbox.Agent, error) {
			return client.New(ctx, client.Dialer(dial))
		}}
}

// ext4Image makes a 16 MiB ext4 image of dir ("" an empty one).
func ext4Image(t *testing.T, path, dir string) {
	t.Helper()
	args := []string{"-q", "-F", "-t", "ext4"}
	if dir != "" {
		args = append(args, "-d", dir)
	}
	if out, err := exec.Command("mkfs.ext4", append(args, path, "16M")...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
}

func TestHotplugDisk(t *testing.T) {
	d := agentDriver(t)
	tmp := t.TempDir()
	root := filepath.Join(tmp, "rootfs")
	if err := imgtest.Rootfs(root); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "marker"), []byte("hotplugged\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rootImg := filepath.Join(tmp, "rootfs.img")
	ext4Image(t, rootImg, root)
	for _, tc := range []struct {
		name     string
		template bool
	}{
		{name: "cold"},
		{name: "template", template: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Driver{Hyperd: d.Hyperd, Kernel: d.Kernel, Initrd: d.Initrd, BootTimeout: d.BootTimeout, BootRetries: d.BootRetries, Connect: d.Connect}
			if tc.template {
				d.TemplateDir = filepath.Join(tmp, "templates")
			}
			dir := t.TempDir()
			vol, extra := filepath.Join(dir, "vol.img"), filepath.Join(dir, "extra.img")
			ext4Image(t, vol, "")
			ext4Image(t, extra, "")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			s, err := d.Create(ctx, sandbox.Config{ID: "hotplug-" + tc.name, Hostname: "hotplug", VCPU: 1, MemoryMiB: 128, StateDir: filepath.Join(dir, "pod")})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { s.Stop(context.Background()) }()
			if got := s.Handle().Data["boot"]; tc.template != strings.HasPrefix(got, "template") {
				t.Fatalf("the VM started %q", got)
			}
			a := s.(sandbox.DiskAdder)
			for _, dk := range []sandbox.Disk{{HostPath: rootImg, ReadOnly: true}, {HostPath: vol}, {HostPath: rootImg, ReadOnly: true}} {
				if err := a.AddDisk(ctx, dk); err != nil {
					t.Fatalf("AddDisk %s: %v", dk.HostPath, err)
				}
			}
			if err := a.AddDisk(ctx, sandbox.Disk{HostPath: dir}); err == nil || !strings.Contains(err.Error(), "only disk image files") {
				t.Fatalf("AddDisk of a directory: %v", err)
			}
			rootSrc, err1 := s.DiskSource(rootImg)
			volSrc, err2 := s.DiskSource(vol)
			if rootSrc != "/dev/vda" || volSrc != "/dev/vdb" || err1 != nil || err2 != nil {
				t.Fatalf("DiskSource: %s (%v), %s (%v); want /dev/vda and /dev/vdb", rootSrc, err1, volSrc, err2)
			}
			// the container's rootfs and volume are the hot-added disks
			spec := sandbox.ContainerSpec{ID: "c1", Hostname: "hotplug", Rootfs: rootSrc, RootfsType: "ext4",
				Mounts:  []sandbox.Mount{{Source: volSrc, FSType: "ext4", Dest: "/data"}},
				Process: sandbox.Process{Args: []string{"sh", "-c", `test "$(cat /marker)" = hotplugged && echo written > /data/out && sync`}}}
			if err := s.Agent().AddContainer(ctx, spec); err != nil {
				t.Fatalf("AddContainer: %v", err)
			}
			if err := s.Agent().StartContainer(ctx, "c1"); err != nil {
				t.Fatalf("StartContainer: %v", err)
			}
			st, err := s.Agent().Wait(ctx, "c1", "")
			if err != nil || st.Code != 0 {
				t.Fatalf("the container on hot-added disks exited %+v (%v); console:\n%s", st, err, tail(filepath.Join(dir, "pod", consoleLog), 30))
			}
			s.Agent().RemoveContainer(ctx, "c1")

			// a daemon restart: the handle lists the disks, a reattached
			// sandbox knows them and gives the next disk the next slot
			h := s.Handle()
			if h.Data["disks"] != rootImg+"\n"+vol || h.Data["control"] == "" {
				t.Fatalf("handle disks %q control %q", h.Data["disks"], h.Data["control"])
			}
			s.Agent().Close()
			s2, err := d.Reattach(ctx, h)
			if err != nil {
				t.Fatalf("Reattach: %v", err)
			}
			s = s2
			if src, err := s2.DiskSource(vol); src != "/dev/vdb" || err != nil {
				t.Fatalf("reattached DiskSource(vol) = %s, %v", src, err)
			}
			if err := s2.(sandbox.DiskAdder).AddDisk(ctx, sandbox.Disk{HostPath: extra}); err != nil {
				t.Fatalf("AddDisk after reattach: %v", err)
			}
			if src, err := s2.DiskSource(extra); src != "/dev/vdc" || err != nil {
				t.Fatalf("DiskSource(extra) = %s, %v", src, err)
			}
			spec = sandbox.ContainerSpec{ID: "c2", Hostname: "hotplug", Rootfs: rootSrc, RootfsType: "ext4",
				Mounts:  []sandbox.Mount{{Source: "/dev/vdc", FSType: "ext4", Dest: "/extra"}},
				Process: sandbox.Process{Args: []string{"sh", "-c", "grep -q ' /extra ' /proc/mounts"}}}
			if err := s2.Agent().AddContainer(ctx, spec); err != nil {
				t.Fatalf("AddContainer after reattach: %v", err)
			}
			if err := s2.Agent().StartContainer(ctx, "c2"); err != nil {
				t.Fatal(err)
			}
			if st, err := s2.Agent().Wait(ctx, "c2", ""); err != nil || st.Code != 0 {
				t.Fatalf("the container on the disk added after reattach exited %+v (%v)", st, err)
			}
			if err := s2.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			<-s2.Done()
			// the volume was written through the hot-added writable disk
			out, err := exec.Command("debugfs", "-R", "cat /out", vol).Output()
			if err != nil || string(out) != "written\n" {
				t.Fatalf("the volume's /out: %q (%v)", out, err)
			}
			if _, err := os.Stat(h.Data["control"]); !os.IsNotExist(err) {
				t.Errorf("control socket left behind: %v", err)
			}
		})
	}
}
