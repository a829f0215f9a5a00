package guest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// Segment is a segment register as the entry state needs it (the hidden
// descriptor cache included).
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
}

// EntryState is the register state the boot vCPU starts in. DS is also
// loaded into ES, FS, GS and SS.
type EntryState struct {
	RIP, RSP, RBX, RSI, RFLAGS uint64
	CR0, CR3, CR4, EFER        uint64
	CS, DS, TR                 Segment
	GDTBase                    uint64
	GDTLimit                   uint16
	Mode                       string // "pvh" or "bzimage-64"
}

// Config is everything Load needs.
type Config struct {
	Kernel  string // path to an ELF vmlinux (PVH) or a bzImage
	Initrd  string // optional
	Cmdline string
	ACPI    ACPIConfig
}

// Loaded is what Load put in memory.
type Loaded struct {
	Entry      EntryState
	KernelEnd  uint64
	InitrdAddr uint64
	InitrdSize uint64
	RSDP       uint64
	MemoryMap  []MemoryRegion
}

// PVH start info (xen/include/public/arch-x86/hvm/start_info.h).
const (
	startInfoMagic   = 0x336ec578
	startInfoVersion = 1
	startInfoSize    = 56
	memmapEntrySize  = 24
	modlistEntrySize = 32
)

// GDT entries for the entry state: null, 32-bit code (0x08), data (0x10),
// 64-bit code (0x18), TSS (0x20). Intel SDM Vol. 3A 3.4.5.
var bootGDT = []uint64{
	0,
	0x00cf9b000000ffff, // 0x08: code, base 0, limit 4 GiB, 32-bit, accessed
	0x00cf93000000ffff, // 0x10: data, base 0, limit 4 GiB, accessed
	0x00af9b000000ffff, // 0x18: code, 64-bit (L)
	0x00008b0000000067, // 0x20: 32-bit busy TSS at 0, limit 0x67
}

const (
	selCode32 = 0x08
	selData   = 0x10
	selCode64 = 0x18
	selTSS    = 0x20
)

func writeGDT(mem []byte) {
	for i, d := range bootGDT {
		binary.LittleEndian.PutUint64(mem[GDTAddr+8*i:], d)
	}
}

var (
	dataSeg = Segment{Limit: 0xffffffff, Selector: selData, Type: 3, Present: 1, DB: 1, S: 1, G: 1}
	tssSeg  = Segment{Limit: 0x67, Selector: selTSS, Type: 0xb, Present: 1}
)

// Load puts the kernel, initrd, command line, boot information and ACPI
// tables in mem (guest RAM at physical address 0) and returns the entry
// state. An ELF kernel must have a PVH entry note; a bzImage is booted
// through the 64-bit boot protocol.
func Load(mem []byte, cfg Config) (*Loaded, error) {
	memSize := uint64(len(mem))
	if memSize < 16<<20 {
		return nil, fmt.Errorf("guest: %d MiB of memory is too little for Linux", memSize>>20)
	}
	if len(cfg.Cmdline)+1 > CmdlineMax {
		return nil, fmt.Errorf("guest: command line of %d bytes, at most %d", len(cfg.Cmdline), CmdlineMax-1)
	}
	f, err := os.Open(cfg.Kernel)
	if err != nil {
		return nil, fmt.Errorf("guest: kernel: %w", err)
	}
	defer f.Close()
	var magic [4]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil {
		return nil, fmt.Errorf("guest: reading kernel %s: %w", cfg.Kernel, err)
	}
	l := &Loaded{MemoryMap: MemoryMap(memSize)}
	copy(mem[CmdlineAddr:], cfg.Cmdline)
	mem[CmdlineAddr+len(cfg.Cmdline)] = 0
	writeGDT(mem)
	if l.RSDP, err = WriteACPI(mem, cfg.ACPI); err != nil {
		return nil, err
	}
	isELF := bytes.Equal(magic[:], []byte("\x7fELF"))
	var bz *bzImage
	var pvhEntry uint64
	if isELF {
		k, err := LoadELF(mem, f)
		if err != nil {
			return nil, err
		}
		if k.PVHEntry == 0 {
			return nil, errors.New("guest: the ELF kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y or boot its bzImage")
		}
		l.KernelEnd, pvhEntry = k.End, k.PVHEntry
	} else {
		if bz, err = loadBzImage(mem, f); err != nil {
			return nil, err
		}
		l.KernelEnd = bz.end
	}
	if cfg.Initrd != "" {
		maxAddr := memSize
		if bz != nil && uint64(bz.initrdAddrMax)+1 < maxAddr {
			maxAddr = uint64(bz.initrdAddrMax) + 1
		}
		if l.InitrdAddr, l.InitrdSize, err = loadInitrd(mem, cfg.Initrd, l.KernelEnd, maxAddr); err != nil {
			return nil, err
		}
	}
	if bz == nil {
		writeStartInfo(mem, l)
		l.Entry = EntryState{
			Mode: "pvh", RIP: pvhEntry, RBX: StartInfoAddr, RFLAGS: 2,
			CR0: 0x11, // PE | ET: protected mode, paging off
			CS:  Segment{Limit: 0xffffffff, Selector: selCode32, Type: 0xb, Present: 1, DB: 1, S: 1, G: 1},
			DS:  dataSeg, TR: tssSeg,
			GDTBase: GDTAddr, GDTLimit: uint16(8*len(bootGDT) - 1),
		}
		return l, nil
	}
	writeBootParams(mem, bz, l)
	writeIdentityPageTables(mem)
	l.Entry = EntryState{
		Mode: "bzimage-64", RIP: BzImageLoadAddr + 0x200, RSI: ZeroPageAddr, RFLAGS: 2,
		CR0: 0x80000011, CR3: PML4Addr, CR4: 1 << 5, EFER: 1<<8 | 1<<10, // PG|PE|ET, PAE, LME|LMA
		CS: Segment{Limit: 0xffffffff, Selector: selCode64, Type: 0xb, Present: 1, S: 1, L: 1, G: 1},
		DS: dataSeg, TR: tssSeg,
		GDTBase: GDTAddr, GDTLimit: uint16(8*len(bootGDT) - 1),
	}
	return l, nil
}

// loadInitrd reads the initrd to the highest page-aligned address below
// maxAddr that leaves it above the kernel.
func loadInitrd(mem []byte, path string, kernelEnd, maxAddr uint64) (addr, size uint64, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("guest: initrd: %w", err)
	}
	size = uint64(len(data))
	if size == 0 {
		return 0, 0, fmt.Errorf("guest: initrd %s is empty", path)
	}
	if size > maxAddr {
		return 0, 0, fmt.Errorf("guest: initrd of %d MiB does not fit in memory", size>>20)
	}
	addr = (maxAddr - size) &^ 0xfff
	if addr < (kernelEnd+0xfff)&^0xfff {
		return 0, 0, fmt.Errorf("guest: initrd of %d MiB does not fit between the kernel (ends at %#x) and %#x; give the VM more memory", size>>20, kernelEnd, maxAddr)
	}
	copy(mem[addr:], data)
	return addr, size, nil
}

// writeStartInfo writes hvm_start_info, its memory map and module list.
func writeStartInfo(mem []byte, l *Loaded) {
	si := mem[StartInfoAddr : StartInfoAddr+startInfoSize]
	clear(si)
	le.PutUint32(si[0:], startInfoMagic)
	le.PutUint32(si[4:], startInfoVersion)
	if l.InitrdSize > 0 {
		le.PutUint32(si[12:], 1) // nr_modules
		le.PutUint64(si[16:], ModlistAddr)
		m := mem[ModlistAddr : ModlistAddr+modlistEntrySize]
		clear(m)
		le.PutUint64(m[0:], l.InitrdAddr)
		le.PutUint64(m[8:], l.InitrdSize)
	}
	le.PutUint64(si[24:], CmdlineAddr)
	le.PutUint64(si[32:], l.RSDP)
	le.PutUint64(si[40:], MemmapAddr)
	le.PutUint32(si[48:], uint32(len(l.MemoryMap)))
	for i, r := range l.MemoryMap {
		e := mem[MemmapAddr+memmapEntrySize*i:]
		le.PutUint64(e[0:], r.Addr)
		le.PutUint64(e[8:], r.Size)
		le.PutUint32(e[16:], r.Type)
		le.PutUint32(e[20:], 0)
	}
}

// writeIdentityPageTables maps the first 4 GiB 1:1 with 2 MiB pages.
func writeIdentityPageTables(mem []byte) {
	const present, rw, ps = 1, 2, 0x80
	clear(mem[PML4Addr : PDAddr+4*0x1000])
	le.PutUint64(mem[PML4Addr:], PDPTAddr|present|rw)
	for i := uint64(0); i < 4; i++ {
		le.PutUint64(mem[PDPTAddr+8*i:], (PDAddr+0x1000*i)|present|rw)
		for j := uint64(0); j < 512; j++ {
			le.PutUint64(mem[PDAddr+0x1000*i+8*j:], (i<<30|j<<21)|present|rw|ps)
		}
	}
}
