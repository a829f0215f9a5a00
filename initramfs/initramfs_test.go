package initramfs

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

func readArchive(t *testing.T, p string) map[string]cpio.Record {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var zr io.Reader
	if strings.HasSuffix(p, ".zst") {
		d, err := zstd.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		zr = d
	} else if zr, err = gzip.NewReader(f); err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]cpio.Record{}
	for _, r := range recs {
		m[r.Name] = r
	}
	return m
}

func content(t *testing.T, r cpio.Record) string {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBuild: the archive holds what the guest needs, in either
// compression, and is cached by its content (and its compression).
func TestBuild(t *testing.T) {
	for _, z := range []bool{false, true} {
		t.Run(map[bool]string{false: "gzip", true: "zstd"}[z], func(t *testing.T) { testBuild(t, z) })
	}
}

func testBuild(t *testing.T, z bool) {
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	os.WriteFile(agent, []byte("\x7fELF fake agent"), 0o755)
	mods := filepath.Join(dir, "mods")
	os.MkdirAll(filepath.Join(mods, "kernel/fs"), 0o755)
	os.WriteFile(filepath.Join(mods, "kernel/fs/overlay.ko"), []byte("overlay module"), 0o644)
	os.WriteFile(filepath.Join(mods, "vsock.ko"), []byte("vsock module"), 0o644)
	cache := filepath.Join(dir, "cache")
	ctx := context.Background()

	p, err := Build(ctx, Options{AgentPath: agent, ModulesDir: mods, ModuleOrder: []string{"vsock.ko", "kernel/fs/overlay.ko"}, CacheDir: cache, Zstd: z})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]string{false: ".cpio.gz", true: ".cpio.zst"}[z]; !strings.HasSuffix(p, want) {
		t.Errorf("archive %s, want a %s", p, want)
	}
	if z {
		// the guest kernel sizes its workspace from the frame's window
		b, _ := os.ReadFile(p)
		var h zstd.Header
		err := h.Decode(b)
		window := h.WindowSize
		if h.SingleSegment { // no window descriptor: the content is the window
			window = h.FrameContentSize
		}
		if err != nil || window == 0 || window > zstdWindow {
			t.Errorf("zstd frame window %d (%v), want 1..%d", window, err, zstdWindow)
		}
	}
	got := readArchive(t, p)
	tests := []struct {
		name, content string
		mode          uint64
	}{
		{"init", "\x7fELF fake agent", cpio.S_IFREG | 0o755},
		{"lib/modules/vsock.ko", "vsock module", cpio.S_IFREG | 0o644},
		{"lib/modules/overlay.ko", "overlay module", cpio.S_IFREG | 0o644},
		{"lib/modules/order", "vsock.ko\noverlay.ko\n", cpio.S_IFREG | 0o644},
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", cpio.S_IFREG | 0o644},
		{"dev/console", "", cpio.S_IFCHR | 0o600},
		{"proc", "", cpio.S_IFDIR | 0o755},
	}
	for _, tt := range tests {
		r, ok := got[tt.name]
		if !ok {
			t.Errorf("%s missing", tt.name)
			continue
		}
		if r.Mode != tt.mode {
			t.Errorf("%s mode %o, want %o", tt.name, r.Mode, tt.mode)
		}
		if c := content(t, r); c != tt.content {
			t.Errorf("%s = %q, want %q", tt.name, c, tt.content)
		}
	}

	// cache hit: same inputs, same path, file untouched
	st1, _ := os.Stat(p)
	p2, err := Build(ctx, Options{AgentPath: agent, ModulesDir: mods, ModuleOrder: []string{"vsock.ko", "kernel/fs/overlay.ko"}, CacheDir: cache, Zstd: z})
	if err != nil || p2 != p {
		t.Fatalf("rebuild: %s %v, want %s", p2, err, p)
	}
	if st2, _ := os.Stat(p2); !st2.ModTime().Equal(st1.ModTime()) {
		t.Error("cached archive was rewritten")
	}
	// a changed agent is a new archive
	os.WriteFile(agent, []byte("\x7fELF other agent"), 0o755)
	p3, err := Build(ctx, Options{AgentPath: agent, ModulesDir: mods, ModuleOrder: []string{"vsock.ko", "kernel/fs/overlay.ko"}, CacheDir: cache, Zstd: z})
	if err != nil || p3 == p {
		t.Fatalf("changed agent: %s %v", p3, err)
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	os.WriteFile(agent, []byte("a"), 0o755)
	tests := []struct {
		name string
		o    Options
	}{
		{"no agent", Options{CacheDir: dir}},
		{"no cache", Options{AgentPath: agent}},
		{"missing agent", Options{AgentPath: filepath.Join(dir, "nope"), CacheDir: dir}},
		{"escaping module", Options{AgentPath: agent, CacheDir: dir, ModulesDir: dir, ModuleOrder: []string{"../x.ko"}}},
		{"absolute module", Options{AgentPath: agent, CacheDir: dir, ModulesDir: dir, ModuleOrder: []string{"/etc/passwd"}}},
		{"missing module", Options{AgentPath: agent, CacheDir: dir, ModulesDir: dir, ModuleOrder: []string{"x.ko"}}},
	}
	for _, tt := range tests {
		if _, err := Build(context.Background(), tt.o); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}
