package guest

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMemoryMap(t *testing.T) {
	low := []MemoryRegion{
		{0, 0x9fc00, E820RAM},
		{0x9fc00, 0x400, E820Reserved},
		{0xa0000, 0x40000, E820Reserved},
		{0xe0000, 0x20000, E820Reserved},
	}
	for _, tc := range []struct {
		name    string
		memSize uint64
		high    []MemoryRegion
		end     uint64
	}{
		{"16 MiB", 16 << 20, []MemoryRegion{{1 << 20, 15 << 20, E820RAM}}, 16 << 20},
		{"256 MiB", 256 << 20, []MemoryRegion{{1 << 20, 255 << 20, E820RAM}}, 256 << 20},
		{"3 GiB, up to the hole", 3 << 30, []MemoryRegion{{1 << 20, 3<<30 - 1<<20, E820RAM}}, 3 << 30},
		{"3 GiB + 1 MiB", 3<<30 + 1<<20, []MemoryRegion{{1 << 20, 3<<30 - 1<<20, E820RAM}, {4 << 30, 1 << 20, E820RAM}}, 4<<30 + 1<<20},
		{"8 GiB", 8 << 30, []MemoryRegion{{1 << 20, 3<<30 - 1<<20, E820RAM}, {4 << 30, 5 << 30, E820RAM}}, 9 << 30},
	} {
		got := MemoryMap(tc.memSize)
		want := append(slices.Clone(low), tc.high...)
		if !slices.Equal(got, want) {
			t.Errorf("%s: MemoryMap = %x, want %x", tc.name, got, want)
		}
		if e := AddressSpaceEnd(tc.memSize); e != tc.end {
			t.Errorf("%s: AddressSpaceEnd = %#x, want %#x", tc.name, e, tc.end)
		}
		var ram uint64
		for i, r := range got {
			if i > 0 && r.Addr < got[i-1].End() {
				t.Errorf("%s: region %d overlaps or is out of order", tc.name, i)
			}
			if r.Type == E820RAM {
				ram += r.Size
				if r.Addr < MMIOHoleEnd && r.End() > MMIOHoleStart {
					t.Errorf("%s: RAM %x reaches into the MMIO hole", tc.name, r)
				}
			}
		}
		// All of memSize but the 384 KiB hole below 1 MiB (plus the EBDA's KiB).
		if want := tc.memSize - (1<<20 - 0x9fc00); ram != want {
			t.Errorf("%s: %#x bytes of RAM, want %#x", tc.name, ram, want)
		}
	}
}

func TestPlaceInitrd(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		size, kernelEnd, maxAddr uint64
		want                     uint64
		ok                       bool
	}{
		{"top of memory", 100000, 0x2000000, 0x10000000, (0x10000000 - 100000) &^ 0xfff, true},
		{"page sized", 0x1000, 0x2000000, 0x10000000, 0x10000000 - 0x1000, true},
		{"below initrd_addr_max", 0x5000, 0x2000000, 0x7fffffff + 1, 0x80000000 - 0x5000, true},
		{"exactly fits", 0x1000, 0x1fff001, 0x2001000, 0x2000000, true},
		{"overlaps the kernel", 0x2000, 0x1fff001, 0x2001000, 0, false},
		{"larger than memory", 0x20000000, 0x2000000, 0x10000000, 0, false},
	} {
		got, err := placeInitrd(tc.size, tc.kernelEnd, tc.maxAddr)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: %#x, %v; want %#x ok=%v", tc.name, got, err, tc.want, tc.ok)
		}
		if err == nil && (got%4096 != 0 || got+tc.size > tc.maxAddr || got < tc.kernelEnd) {
			t.Errorf("%s: %#x+%#x breaks the placement rules", tc.name, got, tc.size)
		}
	}
}

// decodeSegment reads the GDT descriptor for sel as the CPU would load it
// into a segment register (Intel SDM Vol. 3A 3.4.5, Figure 3-8).
func decodeSegment(mem []byte, gdtBase uint64, sel uint16) Segment {
	d := le.Uint64(mem[gdtBase+uint64(sel&^7):])
	limit := uint32(d&0xffff | (d>>48&0xf)<<16)
	g := uint8(d >> 55 & 1)
	if g == 1 {
		limit = limit<<12 | 0xfff
	}
	return Segment{
		Base:     d>>16&0xffffff | (d>>56&0xff)<<24,
		Limit:    limit,
		Selector: sel,
		Type:     uint8(d >> 40 & 0xf),
		S:        uint8(d >> 44 & 1),
		DPL:      uint8(d >> 45 & 3),
		Present:  uint8(d >> 47 & 1),
		L:        uint8(d >> 53 & 1),
		DB:       uint8(d >> 54 & 1),
		G:        g,
	}
}

// checkGDT makes sure the hidden segment state we hand to KVM is what the
// GDT says, so a kernel reloading a selector gets the same segment.
func checkGDT(t *testing.T, mem []byte, e *EntryState) {
	t.Helper()
	if e.GDTBase != GDTAddr || int(e.GDTLimit)+1 != 8*len(bootGDT) {
		t.Errorf("GDT %#x/%#x", e.GDTBase, e.GDTLimit)
	}
	for _, s := range []Segment{e.CS, e.DS, e.TR} {
		if int(s.Selector)+8 > int(e.GDTLimit)+1 {
			t.Errorf("selector %#x beyond the GDT", s.Selector)
			continue
		}
		if d := decodeSegment(mem, e.GDTBase, s.Selector); d != s {
			t.Errorf("selector %#x: entry state %+v, GDT says %+v", s.Selector, s, d)
		}
	}
}

// translate walks our 4-level page tables for va (Intel SDM Vol. 3A 4.5).
func translate(mem []byte, cr3, va uint64) (uint64, bool) {
	const addrMask = 0x000ffffffffff000
	pml4e := le.Uint64(mem[cr3&addrMask+8*(va>>39&511):])
	if pml4e&ptePresent == 0 {
		return 0, false
	}
	pdpte := le.Uint64(mem[pml4e&addrMask+8*(va>>30&511):])
	if pdpte&ptePresent == 0 {
		return 0, false
	}
	if pdpte&ptePS != 0 {
		return pdpte&addrMask&^(1<<30-1) | va&(1<<30-1), true
	}
	pde := le.Uint64(mem[pdpte&addrMask+8*(va>>21&511):])
	if pde&ptePresent == 0 || pde&ptePS == 0 {
		return 0, false
	}
	return pde&addrMask&^(1<<21-1) | va&(1<<21-1), true
}

func TestLoadPVH(t *testing.T) {
	for _, tc := range []struct {
		name   string
		initrd []byte
	}{
		{"with initrd", bytes.Repeat([]byte{0xa5}, 100000)},
		{"without initrd", nil},
	} {
		mem := bytes.Repeat([]byte{0xee}, 64<<20)
		cmdline := "console=ttyS0 reboot=k panic=-1"
		l, err := Load(mem, Config{KernelImage: testKernel(0x1000123), InitrdImage: tc.initrd, Cmdline: cmdline, ACPI: testACPI()})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		e := l.Entry
		want := EntryState{
			Mode: "pvh", RIP: 0x1000123, RBX: StartInfoAddr, RSP: BootStackTop, RFLAGS: 2,
			CR0: 0x11, CS: code32Seg, DS: dataSeg, TR: tssSeg, GDTBase: GDTAddr, GDTLimit: 39,
		}
		if e != want {
			t.Errorf("%s: entry %+v\nwant %+v", tc.name, e, want)
		}
		if e.CS.DB != 1 || e.CS.L != 0 || e.CS.Limit != 0xffffffff || e.CS.Base != 0 || e.CR0&cr0PG != 0 || e.CR4 != 0 || e.EFER != 0 {
			t.Errorf("%s: not flat 32-bit protected mode without paging: %+v", tc.name, e)
		}
		checkGDT(t, mem, &e)
		if l.KernelEnd != 0x1203000 || l.RSDP != ACPIStart {
			t.Errorf("%s: kernel end %#x, RSDP %#x", tc.name, l.KernelEnd, l.RSDP)
		}
		// hvm_start_info (start_info.h), field by field.
		si := mem[StartInfoAddr:]
		nmod := uint32(0)
		modlist := uint64(0)
		if tc.initrd != nil {
			nmod, modlist = 1, ModlistAddr
		}
		for _, f := range []struct {
			name      string
			off, size int
			want      uint64
		}{
			{"magic", 0, 4, startInfoMagic},
			{"version", 4, 4, 1},
			{"flags", 8, 4, 0},
			{"nr_modules", 12, 4, uint64(nmod)},
			{"modlist_paddr", 16, 8, modlist},
			{"cmdline_paddr", 24, 8, CmdlineAddr},
			{"rsdp_paddr", 32, 8, ACPIStart},
			{"memmap_paddr", 40, 8, MemmapAddr},
			{"memmap_entries", 48, 4, uint64(len(l.MemoryMap))},
		} {
			var got uint64
			if f.size == 4 {
				got = uint64(le.Uint32(si[f.off:]))
			} else {
				got = le.Uint64(si[f.off:])
			}
			if got != f.want {
				t.Errorf("%s: start_info.%s = %#x, want %#x", tc.name, f.name, got, f.want)
			}
		}
		if !slices.Equal(l.MemoryMap, MemoryMap(64<<20)) {
			t.Errorf("%s: memory map %x", tc.name, l.MemoryMap)
		}
		for i, r := range l.MemoryMap {
			m := mem[MemmapAddr+memmapEntrySize*i:]
			if le.Uint64(m) != r.Addr || le.Uint64(m[8:]) != r.Size || le.Uint32(m[16:]) != r.Type || le.Uint32(m[20:]) != 0 {
				t.Errorf("%s: memmap entry %d % x, want %x", tc.name, i, m[:24], r)
			}
		}
		if got := string(cstring(mem[CmdlineAddr:])); got != cmdline {
			t.Errorf("%s: command line %q", tc.name, got)
		}
		if tc.initrd != nil {
			m := mem[ModlistAddr:]
			if le.Uint64(m) != l.InitrdAddr || le.Uint64(m[8:]) != l.InitrdSize || le.Uint64(m[16:]) != 0 {
				t.Errorf("%s: modlist entry % x", tc.name, m[:32])
			}
			if l.InitrdAddr != (64<<20-100000)&^0xfff || l.InitrdSize != 100000 || !bytes.Equal(mem[l.InitrdAddr:l.InitrdAddr+l.InitrdSize], tc.initrd) {
				t.Errorf("%s: initrd at %#x+%d", tc.name, l.InitrdAddr, l.InitrdSize)
			}
		}
		// Boot data lies inside the reserved BIOS area.
		for _, a := range []uint64{GDTAddr, StartInfoAddr, ModlistAddr, MemmapAddr, CmdlineAddr, BootStackTop - 1, ACPIStart} {
			if a < ACPIStart || a >= BIOSEnd {
				t.Errorf("boot data at %#x outside the reserved area", a)
			}
		}
	}
}

// bzImageOpts are the setup header fields a test bzImage varies.
type bzImageOpts struct {
	protocol      uint16
	loadflags     uint8
	xloadflags    uint16
	initrdAddrMax uint32
	cmdlineSize   uint32
}

var goodBz = bzImageOpts{protocol: 0x20f, loadflags: loadedHigh, xloadflags: 3, initrdAddrMax: 0x2ffffff, cmdlineSize: 2047}

// mkBzImage builds a bzImage: three setup sectors plus the boot sector
// holding the setup header (boot.rst offsets), then a payload.
func mkBzImage(o bzImageOpts, payload []byte) []byte {
	b := make([]byte, 4*512)
	b[hdrSetupSects] = 3
	le.PutUint16(b[0x1fa:], 0xffff) // vid_mode: "normal"
	b[0x1fe], b[0x1ff] = 0x55, 0xaa
	b[hdrJump], b[hdrJump+1] = 0xeb, 0x66 // jmp to 0x268: the header ends there
	le.PutUint32(b[hdrMagicOff:], hdrMagic)
	le.PutUint16(b[hdrVersion:], o.protocol)
	b[hdrLoadflags] = o.loadflags
	le.PutUint32(b[hdrInitrdAddrMax:], o.initrdAddrMax)
	le.PutUint32(b[0x230:], 0x200000) // kernel_alignment
	b[0x234] = 1                      // relocatable_kernel
	le.PutUint16(b[hdrXloadflags:], o.xloadflags)
	le.PutUint32(b[hdrCmdlineSize:], o.cmdlineSize)
	le.PutUint64(b[hdrPrefAddress:], 0x1000000)
	le.PutUint32(b[hdrInitSize:], 0x200000)
	return append(b, payload...)
}

func TestLoadBzImage(t *testing.T) {
	payload := make([]byte, 10000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	mem := bytes.Repeat([]byte{0xee}, 64<<20)
	initrd := bytes.Repeat([]byte{0x5a}, 8192)
	cmdline := "console=ttyS0"
	l, err := Load(mem, Config{KernelImage: mkBzImage(goodBz, payload), InitrdImage: initrd, Cmdline: cmdline, ACPI: testACPI()})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem[BzImageLoadAddr:BzImageLoadAddr+len(payload)], payload) {
		t.Errorf("protected-mode kernel not at 1 MiB")
	}
	if l.KernelEnd != 0x1200000 {
		t.Errorf("kernel end %#x, want pref_address + init_size = 0x1200000", l.KernelEnd)
	}
	// The initrd ends at initrd_addr_max + 1, below the top of RAM.
	if l.InitrdAddr != 0x3000000-8192 || !bytes.Equal(mem[l.InitrdAddr:l.InitrdAddr+8192], initrd) {
		t.Errorf("initrd at %#x", l.InitrdAddr)
	}
	zp := mem[ZeroPageAddr:]
	for _, f := range []struct {
		name      string
		off, size int
		want      uint64
	}{
		{"hdr magic", hdrMagicOff, 4, hdrMagic},
		{"vid_mode (copied header)", 0x1fa, 2, 0xffff},
		{"version", hdrVersion, 2, 0x20f},
		{"type_of_loader", hdrTypeOfLoader, 1, 0xff},
		{"loadflags", hdrLoadflags, 1, loadedHigh},
		{"ramdisk_image", hdrRamdiskImage, 4, l.InitrdAddr},
		{"ramdisk_size", hdrRamdiskSize, 4, 8192},
		{"cmd_line_ptr", hdrCmdLinePtr, 4, CmdlineAddr},
		{"acpi_rsdp_addr", zpACPIRSDPAddr, 8, ACPIStart},
		{"e820_entries", zpE820Entries, 1, uint64(len(l.MemoryMap))},
	} {
		var got uint64
		switch f.size {
		case 1:
			got = uint64(zp[f.off])
		case 2:
			got = uint64(le.Uint16(zp[f.off:]))
		case 4:
			got = uint64(le.Uint32(zp[f.off:]))
		case 8:
			got = le.Uint64(zp[f.off:])
		}
		if got != f.want {
			t.Errorf("boot_params %s = %#x, want %#x", f.name, got, f.want)
		}
	}
	for i, r := range l.MemoryMap {
		e := zp[zpE820Table+20*i:]
		if le.Uint64(e) != r.Addr || le.Uint64(e[8:]) != r.Size || le.Uint32(e[16:]) != r.Type {
			t.Errorf("e820 entry %d % x, want %x", i, e[:20], r)
		}
	}
	e := l.Entry
	want := EntryState{
		Mode: "bzimage-64", RIP: 0x100200, RSI: ZeroPageAddr, RSP: BootStackTop, RFLAGS: 2,
		CR0: 0x80000011, CR3: PML4Addr, CR4: 0x20, EFER: 0x500,
		CS: code64Seg, DS: dataSeg, TR: tssSeg, GDTBase: GDTAddr, GDTLimit: 39,
	}
	if e != want {
		t.Errorf("entry %+v\nwant %+v", e, want)
	}
	if e.CS.Selector != 0x10 || e.DS.Selector != 0x18 || e.CS.L != 1 || e.CS.DB != 0 {
		t.Errorf("boot.rst wants CS = __BOOT_CS (0x10, 64-bit) and DS = __BOOT_DS (0x18): %+v %+v", e.CS, e.DS)
	}
	checkGDT(t, mem, &e)
	for _, va := range []uint64{0, ZeroPageAddr, CmdlineAddr, 0x100200, l.KernelEnd - 1, l.InitrdAddr, 3 << 30, 1<<32 - 1} {
		if pa, ok := translate(mem, e.CR3, va); !ok || pa != va {
			t.Errorf("va %#x -> %#x (%v), want identity", va, pa, ok)
		}
	}
	if _, ok := translate(mem, e.CR3, 1<<32); ok {
		t.Errorf("4 GiB is mapped; the tables should cover 0-4 GiB only")
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	junk := []byte(strings.Repeat("this is not a kernel at all. ", 40))
	bz := func(f func(*bzImageOpts)) []byte {
		o := goodBz
		f(&o)
		return mkBzImage(o, make([]byte, 4096))
	}
	for _, tc := range []struct {
		name string
		mem  int
		cfg  Config
		want string
	}{
		{"no kernel", 32 << 20, Config{ACPI: testACPI()}, "no kernel"},
		{"missing kernel", 32 << 20, Config{Kernel: dir + "/nope", ACPI: testACPI()}, "no such file"},
		{"missing initrd", 32 << 20, Config{KernelImage: testKernel(0x1000000), Initrd: dir + "/nope", ACPI: testACPI()}, "initrd"},
		{"empty initrd", 32 << 20, Config{KernelImage: testKernel(0x1000000), InitrdImage: []byte{}, ACPI: testACPI()}, "empty"},
		{"not a kernel", 32 << 20, Config{KernelImage: junk, ACPI: testACPI()}, "neither an ELF vmlinux nor a bzImage"},
		{"huge cmdline", 32 << 20, Config{KernelImage: junk, Cmdline: strings.Repeat("x", CmdlineMax), ACPI: testACPI()}, "command line"},
		{"NUL in cmdline", 32 << 20, Config{KernelImage: junk, Cmdline: "a\x00b", ACPI: testACPI()}, "NUL"},
		{"no CPUs", 32 << 20, Config{KernelImage: testKernel(0x1000000)}, "vCPUs"},
		{"8 MiB", 8 << 20, Config{KernelImage: testKernel(0x1000000), ACPI: testACPI()}, "too little"},
		{"MemSize beyond mem", 32 << 20, Config{KernelImage: testKernel(0x1000000), MemSize: 64 << 20, ACPI: testACPI()}, "memory slice"},
		{"ELF without PVH", 32 << 20, Config{KernelImage: testKernel(0), ACPI: testACPI()}, "no PVH entry"},
		{"ELF below 1 MiB", 32 << 20, Config{KernelImage: mkELF(emX8664, 0, testSeg{typ: ptLoad, paddr: 0x80000, data: []byte{1}},
			testSeg{typ: ptNote, data: elfNote("Xen", 18, le.AppendUint32(nil, 0x80000))}), ACPI: testACPI()}, "below 1 MiB"},
		{"initrd too big", 32 << 20, Config{KernelImage: testKernel(0x1000000), InitrdImage: make([]byte, 16<<20), ACPI: testACPI()}, "does not fit"},
		{"bzImage protocol 2.10", 32 << 20, Config{KernelImage: bz(func(o *bzImageOpts) { o.protocol = 0x20a }), ACPI: testACPI()}, "protocol"},
		{"bzImage without 64-bit entry", 32 << 20, Config{KernelImage: bz(func(o *bzImageOpts) { o.xloadflags = 0 }), ACPI: testACPI()}, "XLF_KERNEL_64"},
		{"bzImage not loaded high", 32 << 20, Config{KernelImage: bz(func(o *bzImageOpts) { o.loadflags = 0 }), ACPI: testACPI()}, "loaded-high"},
		{"bzImage short cmdline_size", 32 << 20, Config{KernelImage: bz(func(o *bzImageOpts) { o.cmdlineSize = 4 }), Cmdline: "console=ttyS0", ACPI: testACPI()}, "at most 4"},
		{"initrd_addr_max below the kernel", 32 << 20, Config{KernelImage: bz(func(o *bzImageOpts) { o.initrdAddrMax = 0x11fffff }), InitrdImage: make([]byte, 4096), ACPI: testACPI()}, "does not fit"},
		{"bzImage init_size beyond memory", 17 << 20, Config{KernelImage: bz(func(*bzImageOpts) {}), ACPI: testACPI()}, "init_size"},
	} {
		_, err := Load(make([]byte, tc.mem), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

// TestLoadAboveTheHole gives the guest 3.5 GiB: RAM continues at 4 GiB,
// the initrd stays below the hole, the memory map says so. The address
// space is reserved, not touched.
func TestLoadAboveTheHole(t *testing.T) {
	const memSize = 3<<30 + 512<<20
	end := AddressSpaceEnd(memSize)
	mem, err := unix.Mmap(-1, 0, int(end), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatalf("reserving %#x bytes of address space: %v", end, err)
	}
	defer unix.Munmap(mem)
	l, err := Load(mem, Config{KernelImage: testKernel(0x1000000), InitrdImage: make([]byte, 5000), MemSize: memSize, ACPI: testACPI()})
	if err != nil {
		t.Fatal(err)
	}
	if l.InitrdAddr != MMIOHoleStart-0x2000 {
		t.Errorf("initrd at %#x, want just below the hole", l.InitrdAddr)
	}
	n := len(l.MemoryMap)
	if got := l.MemoryMap[n-2:]; got[0] != (MemoryRegion{HighMemStart, MMIOHoleStart - HighMemStart, E820RAM}) ||
		got[1] != (MemoryRegion{MMIOHoleEnd, 512 << 20, E820RAM}) {
		t.Errorf("RAM regions %x", got)
	}
	if le.Uint32(mem[StartInfoAddr+48:]) != uint32(n) || le.Uint64(mem[MemmapAddr+24*(n-1):]) != MMIOHoleEnd {
		t.Errorf("start_info memory map does not describe the RAM above 4 GiB")
	}
}
