// This file owns what goes into the project's L1: l1init as /init, the L1
// kernel modules from `make kernel`, the project's binaries and guest
// kernel at their host paths, the host tools the kvm suites call (with
// their libraries and configuration), and any test binaries.
package nested

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Image is what Build writes: a kernel for L1 and the initramfs.
type Image struct {
	Kernel string // build/vmlinuz (the Debian cloud kernel, a bzImage)
	Initrd string
}

// ImageConfig says what to put in L1 beyond the fixed set.
type ImageConfig struct {
	// Repo is the module root; its build/ (from make kernel) and bin/ (from
	// make build, if present) are copied at their host paths.
	Repo string
	// Out is where the initramfs is written.
	Out string
	// Files are more host files or directories, copied at their paths
	// (test binaries, their data).
	Files []string
}

// Tools are the host programs the kvm suites and the demo run inside L1:
// the e2e suite's curl, registry (docker-registry, htpasswd, skopeo), CNI plugins and
// process checks, the kvm driver's mkfs.ext4, the benchmark's QEMU peer.
var Tools = []string{
	"/bin/sh", "/bin/busybox", "/usr/bin/pgrep", "/usr/bin/pkill", "/usr/bin/ps",
	"/usr/bin/curl", "/sbin/mkfs.ext4", "/sbin/mke2fs", "/sbin/dumpe2fs", "/sbin/debugfs",
	"/usr/bin/docker-registry", "/usr/bin/htpasswd", "/usr/bin/skopeo",
	"/usr/bin/qemu-system-x86_64", "/usr/bin/timeout", "/usr/bin/env",
	"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback",
}

// toolData are the data files those tools read.
var toolData = []string{
	"/etc/mke2fs.conf", "/etc/containers",
	"/usr/share/qemu/bios-microvm.bin", "/usr/share/qemu/bios-256k.bin", "/usr/share/qemu/linuxboot_dma.bin",
	"/usr/share/qemu/pvh.bin", "/usr/share/seabios/bios-microvm.bin", "/usr/share/seabios/bios-256k.bin",
	"/usr/share/qemu/kvmvapic.bin",
}

// Build assembles the L1 initramfs.
func Build(ctx context.Context, cfg ImageConfig) (Image, error) {
	img := Image{Kernel: filepath.Join(cfg.Repo, "build", "vmlinuz")}
	build := filepath.Join(cfg.Repo, "build")
	for _, p := range []string{img.Kernel, filepath.Join(build, "vmlinux"), filepath.Join(build, "guest", "vmlinux"), filepath.Join(build, "l1modules", "order"), filepath.Join(build, "modules", "order")} {
		if _, err := os.Stat(p); err != nil {
			return img, fmt.Errorf("nested: %v (run make kernel)", err)
		}
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return img, err
	}
	t := NewTree()
	// l1init, static
	initBin := filepath.Join(cfg.Out, "l1init")
	gb := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, "./e2e/nested/l1init")
	gb.Dir = cfg.Repo
	gb.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gb.CombinedOutput(); err != nil {
		return img, fmt.Errorf("nested: building l1init: %v\n%s", err, out)
	}
	if err := t.File("/init", initBin); err != nil {
		return img, err
	}
	order, err := os.ReadFile(filepath.Join(build, "l1modules", "order"))
	if err != nil {
		return img, err
	}
	t.Data("/l1/modules/order", order, 0o644)
	for _, m := range strings.Fields(string(order)) {
		if err := t.File("/l1/modules/"+m, filepath.Join(build, "l1modules", m)); err != nil {
			return img, err
		}
	}
	// the guest kernels (ours in guest/, Debian's with its modules), the
	// binaries, where the tests look
	for _, p := range []string{"guest", "vmlinux", "vmlinuz", "config", "modules", "kernel.release"} {
		if err := t.Host(filepath.Join(build, p)); err != nil {
			return img, err
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Repo, "bin", "hyperd")); err == nil {
		if err := t.Host(filepath.Join(cfg.Repo, "bin")); err != nil {
			return img, err
		}
	}
	for _, p := range Tools {
		if err := t.Host(p); err != nil {
			return img, fmt.Errorf("nested: host tool %s: %w (the .ci/run package list installs it)", p, err)
		}
	}
	for _, p := range toolData {
		if _, err := os.Stat(p); err == nil {
			if err := t.Host(p); err != nil {
				return img, err
			}
		}
	}
	if err := t.Host(cfg.Files...); err != nil {
		return img, err
	}
	// busybox applets the tree lacks (a shell script's cat, ls, sleep ...)
	if err := busyboxLinks(t); err != nil {
		return img, err
	}
	t.Data("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644)
	t.Data("/etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	t.Data("/etc/hosts", []byte("127.0.0.1 localhost\n::1 localhost\n"), 0o644)
	t.Data("/etc/nsswitch.conf", []byte("passwd: files\ngroup: files\nhosts: files dns\n"), 0o644)
	for _, d := range []string{"/tmp", "/var/tmp", "/root", "/var/lib", "/var/run", "/proc", "/sys", "/run"} {
		t.Dir(d, 0o755)
	}
	img.Initrd = filepath.Join(cfg.Out, "l1.cpio")
	f, err := os.Create(img.Initrd)
	if err != nil {
		return img, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := t.WriteCPIO(w); err != nil {
		f.Close()
		return img, err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return img, err
	}
	return img, f.Close()
}

func busyboxLinks(t *Tree) error {
	out, err := exec.Command("/bin/busybox", "--list-full").Output()
	if err != nil {
		return fmt.Errorf("nested: busybox --list-full: %v", err)
	}
	have := map[string]bool{}
	for _, p := range t.Paths() {
		have[filepath.Base(p)] = true
	}
	for _, a := range strings.Fields(string(out)) {
		name := filepath.Base(a)
		if have[name] || name == "init" || name == "linuxrc" {
			continue
		}
		t.Symlink("/usr/local/bin/"+name, "/usr/bin/busybox")
	}
	return nil
}
