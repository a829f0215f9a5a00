package guest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestLoadFromFiles loads the same kernel and initrd by path and from
// memory, twice each: guest memory must come out identical every time.
func TestLoadFromFiles(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := testKernel(0x1000040), bytes.Repeat([]byte("initrd"), 3000)
	kpath, ipath := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
	if err := os.WriteFile(kpath, kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ipath, initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	var first []byte
	for i, cfg := range []Config{
		{Kernel: kpath, Initrd: ipath},
		{KernelImage: kernel, InitrdImage: initrd},
		{Kernel: kpath, InitrdImage: initrd},
		{Kernel: "/nonexistent", KernelImage: kernel, Initrd: "/nonexistent", InitrdImage: initrd}, // bytes win
	} {
		cfg.Cmdline, cfg.ACPI = "console=ttyS0", testACPI()
		mem := make([]byte, 32<<20)
		if _, err := Load(mem, cfg); err != nil {
			t.Fatalf("config %d: %v", i, err)
		}
		if first == nil {
			first = mem
		} else if !bytes.Equal(mem, first) {
			t.Errorf("config %d: guest memory differs from config 0", i)
		}
	}
}

// FuzzLoadELF: no kernel image may panic the loader or make it write
// outside guest memory.
func FuzzLoadELF(f *testing.F) {
	f.Add(testKernel(0x1000123))
	f.Add(mkELF(emX8664, 0, testSeg{typ: ptLoad, paddr: 0x100000, data: []byte{1, 2, 3}, memsz: 0x1000}))
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mem := make([]byte, 2<<20)
		k, err := LoadELF(mem, bytes.NewReader(b))
		if err == nil && (k.End > uint64(len(mem)) || k.Start > k.End) {
			t.Fatalf("kernel [%#x,%#x) outside %#x bytes", k.Start, k.End, len(mem))
		}
	})
}

// FuzzLoadBzImage: no setup header may panic the bzImage path.
func FuzzLoadBzImage(f *testing.F) {
	f.Add(mkBzImage(goodBz, make([]byte, 100)))
	f.Add(mkBzImage(bzImageOpts{protocol: 0x20c, loadflags: 1, xloadflags: 1}, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		mem := make([]byte, 2<<20)
		bz, err := loadBzImage(mem, memImage{bytes.NewReader(b)})
		if err == nil && bz.end > uint64(len(mem)) {
			t.Fatalf("bzImage end %#x beyond memory", bz.end)
		}
	})
}

func FuzzFindPVHNote(f *testing.F) {
	f.Add(elfNote("Xen", 18, le.AppendUint32(nil, 0x1000000)))
	f.Add(append(elfNote("GNU", 3, make([]byte, 20)), elfNote("Xen", 18, le.AppendUint64(nil, 1))...))
	f.Fuzz(func(t *testing.T, b []byte) {
		findPVHNote(b, le)
	})
}
