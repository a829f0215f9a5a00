package initramfs

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

// formatVersion changes whenever the layout below changes, so cached
// archives of an older layout are not reused.
const formatVersion = "hyperd-initramfs-1"

// Options of Build.
type Options struct {
	// AgentPath is the static hyper-agent binary; it becomes /init.
	AgentPath string
	// ModulesDir holds kernel modules (.ko); "" = none.
	ModulesDir string
	// ModuleOrder lists module files relative to ModulesDir in load order;
	// nil = ModulesDir/order if it exists.
	ModuleOrder []string
	// CacheDir receives initramfs-<hash>.cpio.gz (.cpio.zst with Zstd).
	CacheDir string
	// Zstd compresses with zstd instead of gzip: about a third smaller
	// and quicker for the guest kernel to unpack (which, under nested or
	// emulated KVM, is seconds of ring-0 work), but the kernel needs
	// CONFIG_RD_ZSTD. Both kernels of make kernel have it; gzip
	// (CONFIG_RD_GZIP) is what any kernel reads.
	Zstd bool
}

// zstdWindow bounds the zstd window (the frame header's Window_Size,
// RFC 8878 3.1.1.1.2): the guest kernel allocates its decompression
// workspace from it while 128 MiB guests boot.
const zstdWindow = 1 << 21

// Build writes (or finds in the cache) a gzip (or zstd) newc cpio with the agent as
// /init, /etc basics, and /lib/modules/<name> plus /lib/modules/order.
// The file name carries the content hash of everything that goes in.
func Build(ctx context.Context, o Options) (string, error) {
	if o.AgentPath == "" || o.CacheDir == "" {
		return "", errors.New("initramfs: AgentPath and CacheDir are required")
	}
	agent, err := os.ReadFile(o.AgentPath)
	if err != nil {
		return "", fmt.Errorf("initramfs: agent: %w", err)
	}
	order := o.ModuleOrder
	if order == nil && o.ModulesDir != "" {
		if order, err = readOrder(filepath.Join(o.ModulesDir, "order")); err != nil {
			return "", err
		}
	}
	type mod struct {
		name string
		data []byte
	}
	var mods []mod
	seen := map[string]bool{}
	for _, m := range order {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		clean := path.Clean(m)
		if m == "" || path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return "", fmt.Errorf("initramfs: bad module path %q", m)
		}
		base := path.Base(clean)
		if seen[base] {
			return "", fmt.Errorf("initramfs: module %s listed twice", base)
		}
		seen[base] = true
		b, err := os.ReadFile(filepath.Join(o.ModulesDir, filepath.FromSlash(clean)))
		if err != nil {
			return "", fmt.Errorf("initramfs: module: %w", err)
		}
		mods = append(mods, mod{base, b})
	}

	var recs []cpio.Record
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "lib", "lib/modules", "root", "mnt"} {
		recs = append(recs, cpio.Directory(d, 0o755))
	}
	recs = append(recs,
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.StaticRecord(agent, cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755}),
		cpio.StaticFile("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
		cpio.StaticFile("etc/group", "root:x:0:\n", 0o644),
		cpio.StaticFile("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n", 0o644),
		cpio.StaticFile("etc/resolv.conf", "", 0o644),
	)
	var orderFile strings.Builder
	for _, m := range mods {
		recs = append(recs, cpio.StaticRecord(m.data, cpio.Info{Name: "lib/modules/" + m.name, Mode: cpio.S_IFREG | 0o644}))
		orderFile.WriteString(m.name + "\n")
	}
	recs = append(recs, cpio.StaticFile("lib/modules/order", orderFile.String(), 0o644))

	h := sha256.New()
	io.WriteString(h, formatVersion)
	ext := ".cpio.gz"
	if o.Zstd {
		ext = ".cpio.zst"
	}
	io.WriteString(h, ext)
	for _, r := range recs {
		fmt.Fprintf(h, "\x00%s\x00%o\x00%d:%d\x00%d\x00", r.Name, r.Mode, r.Rmajor, r.Rminor, r.FileSize)
		if r.ReaderAt != nil {
			io.Copy(h, io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		}
	}
	sum := hex.EncodeToString(h.Sum(nil))[:32]
	out := filepath.Join(o.CacheDir, "initramfs-"+sum+ext)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	tmp, err := os.CreateTemp(o.CacheDir, ".initramfs-*")
	if err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	var zw io.WriteCloser
	if o.Zstd {
		zw, err = zstd.NewWriter(tmp, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithWindowSize(zstdWindow), zstd.WithEncoderConcurrency(1))
	} else {
		zw, err = gzip.NewWriterLevel(tmp, gzip.BestSpeed)
	}
	if err != nil {
		tmp.Close()
		return "", err
	}
	w := cpio.Newc.Writer(zw)
	if err := cpio.WriteRecords(w, recs); err == nil {
		err = cpio.WriteTrailer(w)
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = ctx.Err()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("initramfs: write: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	return out, nil
}

func readOrder(p string) ([]string, error) {
	f, err := os.Open(p)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
