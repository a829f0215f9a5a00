package guest

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// realKernel returns the vmlinux `make kernel` produced ($HYPERD_KERNEL or
// build/vmlinux in the repository) and fails when there is none: CI runs
// `make kernel` before the tests.
func realKernel(t *testing.T) string {
	t.Helper()
	p := os.Getenv("HYPERD_KERNEL")
	if p == "" {
		_, file, _, _ := runtime.Caller(0)
		p = filepath.Join(filepath.Dir(file), "..", "build", "vmlinux")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("guest kernel not found: run `make kernel` (or set HYPERD_KERNEL to a vmlinux): %v", err)
	}
	return p
}

// TestLoadRealVmlinux loads the Debian vmlinux through its PVH entry and
// checks that the entry point is in an executable loaded segment and that
// the segments landed at their physical addresses.
func TestLoadRealVmlinux(t *testing.T) {
	k := realKernel(t)
	mem := make([]byte, 256<<20)
	initrd := bytes.Repeat([]byte{0xa5}, 100000)
	l, err := Load(mem, Config{Kernel: k, InitrdImage: initrd, Cmdline: "console=ttyS0", ACPI: testACPI()})
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(k)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inText := false
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if p.Flags&elf.PF_X != 0 && l.Entry.RIP >= p.Paddr && l.Entry.RIP < p.Paddr+p.Filesz {
			inText = true
		}
		// Spot-check the first bytes of each segment.
		n := min(p.Filesz, 4096)
		want := make([]byte, n)
		if _, err := p.ReadAt(want, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mem[p.Paddr:p.Paddr+n], want) {
			t.Errorf("segment at %#x not loaded", p.Paddr)
		}
	}
	if l.Entry.Mode != "pvh" || !inText {
		t.Errorf("PVH entry %#x is not in an executable segment (mode %s)", l.Entry.RIP, l.Entry.Mode)
	}
	if le.Uint32(mem[StartInfoAddr:]) != startInfoMagic || le.Uint32(mem[StartInfoAddr+12:]) != 1 {
		t.Errorf("start_info % x", mem[StartInfoAddr:StartInfoAddr+16])
	}
	if l.InitrdAddr < l.KernelEnd || l.InitrdAddr%4096 != 0 || !bytes.Equal(mem[l.InitrdAddr:l.InitrdAddr+l.InitrdSize], initrd) {
		t.Errorf("initrd at %#x+%d (kernel ends %#x)", l.InitrdAddr, l.InitrdSize, l.KernelEnd)
	}
	t.Logf("%s: PVH entry %#x, kernel up to %#x, initrd at %#x", k, l.Entry.RIP, l.KernelEnd, l.InitrdAddr)
}

// TestLoadRealBzImage loads the bzImage next to the vmlinux through the
// 64-bit boot protocol.
func TestLoadRealBzImage(t *testing.T) {
	bz := filepath.Join(filepath.Dir(realKernel(t)), "vmlinuz")
	data, err := os.ReadFile(bz)
	if err != nil {
		t.Fatalf("bzImage not found next to the vmlinux (`make kernel` makes both): %v", err)
	}
	mem := make([]byte, 256<<20)
	l, err := Load(mem, Config{Kernel: bz, InitrdImage: []byte("initrd"), Cmdline: "console=ttyS0", ACPI: testACPI()})
	if err != nil {
		t.Fatal(err)
	}
	setup := (int(data[hdrSetupSects]) + 1) * 512
	if !bytes.Equal(mem[BzImageLoadAddr:BzImageLoadAddr+len(data)-setup], data[setup:]) {
		t.Errorf("protected-mode kernel not at 1 MiB")
	}
	zp := mem[ZeroPageAddr:]
	if le.Uint32(zp[hdrMagicOff:]) != hdrMagic || zp[hdrTypeOfLoader] != 0xff || le.Uint32(zp[hdrCmdLinePtr:]) != CmdlineAddr {
		t.Errorf("zero page header % x", zp[0x1f1:0x268])
	}
	if l.Entry.RIP != 0x100200 || l.Entry.RSI != ZeroPageAddr {
		t.Errorf("entry %+v", l.Entry)
	}
	t.Logf("%s: boot protocol %#x, kernel needs memory up to %#x, initrd at %#x", bz, le.Uint16(zp[hdrVersion:]), l.KernelEnd, l.InitrdAddr)
}
