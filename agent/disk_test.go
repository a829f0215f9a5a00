package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Paths that are not block devices are left to the mount at once; a
// missing path is waited for only under /dev/.
func TestWaitDisksNotBlock(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "img")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		devs     []string
		err      string // substring, "" = none
		waitsFor time.Duration
	}{
		{"nothing", nil, "", 0},
		{"empty regular file", []string{file}, "", 0},
		{"directory", []string{dir}, "", 0},
		{"character device", []string{"/dev/null"}, "", 0},
		{"missing outside /dev", []string{filepath.Join(dir, "nope")}, "no such file", 0},
		{"missing device node", []string{"/dev/hyperd-test-no-such-disk"}, "/dev/hyperd-test-no-such-disk did not appear", 200 * time.Millisecond},
	} {
		start := time.Now()
		err := waitDisks(tt.devs, start.Add(200*time.Millisecond))
		took := time.Since(start)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want error with %q", tt.name, err, tt.err)
		}
		if took < tt.waitsFor || took > tt.waitsFor+time.Second {
			t.Errorf("%s: returned after %v, want after %v", tt.name, took, tt.waitsFor)
		}
	}
}

// A loop device over an empty file stands for a template VM's disk slot:
// it has no size until its backing grows and its capacity is updated
// (LOOP_SET_CAPACITY, as virtio_blk's config change updates a disk's).
func TestWaitDisksAttachedLate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (loop devices): run the agent tests as root")
	}
	img := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// (losetup warns on stderr that the file is smaller than a sector)
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup (util-linux): %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })

	if n, err := diskSize(dev); err != nil || n != 0 {
		t.Fatalf("diskSize(%s) = %d, %v; want 0", dev, n, err)
	}
	start := time.Now()
	err = waitDisks([]string{dev}, start.Add(200*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), dev) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty disk: %v, want an error naming %s as empty", err, dev)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("empty disk: failed after %v, before the 200ms wait", took)
	}

	grown := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		if err := os.Truncate(img, 1<<20); err != nil {
			grown <- err
			return
		}
		if out, err := exec.Command("losetup", "-c", dev).CombinedOutput(); err != nil {
			grown <- &exec.Error{Name: "losetup -c: " + string(out), Err: err}
			return
		}
		grown <- nil
	}()
	start = time.Now()
	err = waitDisks([]string{dev}, start.Add(5*time.Second))
	took := time.Since(start)
	if gerr := <-grown; gerr != nil {
		t.Fatalf("growing the disk: %v", gerr)
	}
	if err != nil {
		t.Fatalf("disk attached late: %v", err)
	}
	if took < 250*time.Millisecond {
		t.Errorf("returned after %v, before the disk had a size", took)
	}
	if n, err := diskSize(dev); err != nil || n != 1<<20 {
		t.Errorf("diskSize(%s) = %d, %v; want 1 MiB", dev, n, err)
	}
}
