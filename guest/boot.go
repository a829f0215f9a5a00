package guest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Segment is a segment register as the entry state needs it, hidden
// descriptor cache included (Intel SDM Vol. 3A 3.4.5 "Segment
// Descriptors"): the fields of KVM's struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32 // byte granular: 0xffffffff for a flat 4 GiB segment
	Selector uint16
	Type     uint8 // 4-bit type: 0xb execute/read accessed code, 0x3 read/write accessed data, 0xb busy TSS
	Present  uint8
	DPL      uint8
	DB       uint8 // default operation size: 1 = 32-bit (0 in 64-bit code)
	S        uint8 // 1 = code/data, 0 = system (TSS)
	L        uint8 // 64-bit code
	G        uint8 // limit in 4 KiB units in the descriptor
}

// EntryState is the register state the boot vCPU starts in; the VMM maps
// it onto KVM_SET_SREGS/KVM_SET_REGS. DS is also loaded into ES, FS, GS
// and SS; the IDT is empty (limit 0) and interrupts are disabled
// (RFLAGS.IF = 0). Application processors need no state: they wait for the
// INIT/SIPI the kernel sends.
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
	Kernel      string // path to an ELF vmlinux (PVH) or a bzImage; ignored if KernelImage is set
	KernelImage []byte // the kernel itself, instead of a path
	Initrd      string // optional path; ignored if InitrdImage is set
	InitrdImage []byte // optional initrd contents, instead of a path
	Cmdline     string
	// MemSize is the guest's RAM in bytes; 0 means len(mem) (at most
	// MMIOHoleStart: a larger mem needs an explicit MemSize). Above
	// MMIOHoleStart the RAM continues at 4 GiB, and mem must reach
	// AddressSpaceEnd(MemSize).
	MemSize uint64
	ACPI    ACPIConfig
}

// Loaded is what Load put in memory.
type Loaded struct {
	Entry      EntryState
	KernelEnd  uint64 // one past the kernel's last byte (its init_size for a bzImage)
	InitrdAddr uint64
	InitrdSize uint64
	RSDP       uint64
	MemoryMap  []MemoryRegion
}

// PVH start info (Xen's xen/include/public/arch-x86/hvm/start_info.h,
// version 1): hvm_start_info is 56 bytes (magic, version, flags,
// nr_modules, modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr,
// memmap_entries, reserved); hvm_modlist_entry is 32 (paddr, size,
// cmdline_paddr, reserved); hvm_memmap_table_entry is 24 (addr, size,
// type, reserved).
const (
	startInfoMagic   = 0x336ec578 // XEN_HVM_START_MAGIC_VALUE
	startInfoVersion = 1
	startInfoSize    = 56
	memmapEntrySize  = 24
	modlistEntrySize = 32
)

// The GDT both entry states use (Intel SDM Vol. 3A 3.4.5, Figure 3-8). The
// selectors of the 64-bit boot protocol are fixed by boot.rst ("64-bit
// BOOT PROTOCOL": __BOOT_CS = 0x10, __BOOT_DS = 0x18, both 4 GiB flat);
// PVH leaves selectors unspecified and uses the 32-bit code segment.
var bootGDT = []uint64{
	0,
	0x00cf9b000000ffff, // 0x08: code, base 0, limit 4 GiB (G), 32-bit (D), execute/read, accessed
	0x00af9b000000ffff, // 0x10: __BOOT_CS: code, 64-bit (L), execute/read, accessed
	0x00cf93000000ffff, // 0x18: __BOOT_DS: data, base 0, limit 4 GiB, read/write, accessed
	0x00008b0000000067, // 0x20: 32-bit busy TSS, base 0, limit 0x67 (PVH: "tr ... base 0, limit 0x67")
}

const (
	selCode32 = 0x08
	selCode64 = 0x10
	selData   = 0x18
	selTSS    = 0x20
)

var (
	code32Seg = Segment{Limit: 0xffffffff, Selector: selCode32, Type: 0xb, Present: 1, DB: 1, S: 1, G: 1}
	code64Seg = Segment{Limit: 0xffffffff, Selector: selCode64, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
	dataSeg   = Segment{Limit: 0xffffffff, Selector: selData, Type: 3, Present: 1, DB: 1, S: 1, G: 1}
	tssSeg    = Segment{Limit: 0x67, Selector: selTSS, Type: 0xb, Present: 1}
)

func writeGDT(mem []byte) {
	for i, d := range bootGDT {
		binary.LittleEndian.PutUint64(mem[GDTAddr+8*i:], d)
	}
}

// Control register and EFER bits (Intel SDM Vol. 3A 2.5 "Control
// Registers", 2.2.1 "Extended Feature Enable Register").
const (
	cr0PE   = 1 << 0
	cr0ET   = 1 << 4
	cr0PG   = 1 << 31
	cr4PAE  = 1 << 5
	eferLME = 1 << 8
	eferLMA = 1 << 10
	rflags1 = 1 << 1 // reserved, always 1
)

// Load puts the kernel, initrd, command line, boot information and ACPI
// tables in mem (guest memory indexed by physical address) and returns the
// entry state. An ELF kernel must have a PVH entry note; a bzImage is
// booted through the 64-bit boot protocol.
func Load(mem []byte, cfg Config) (*Loaded, error) {
	memSize := cfg.MemSize
	if memSize == 0 {
		memSize = min(uint64(len(mem)), MMIOHoleStart)
	}
	if err := checkMemory(mem, memSize); err != nil {
		return nil, err
	}
	if len(cfg.Cmdline)+1 > CmdlineMax {
		return nil, fmt.Errorf("guest: command line of %d bytes, at most %d", len(cfg.Cmdline), CmdlineMax-1)
	}
	if bytes.IndexByte([]byte(cfg.Cmdline), 0) >= 0 {
		return nil, errors.New("guest: command line contains a NUL byte")
	}
	kernel, err := openImage("kernel", cfg.Kernel, cfg.KernelImage)
	if err != nil {
		return nil, err
	}
	defer kernel.Close()
	var magic [4]byte
	if _, err := kernel.ReadAt(magic[:], 0); err != nil {
		return nil, fmt.Errorf("guest: reading the kernel: %w", err)
	}
	l := &Loaded{MemoryMap: MemoryMap(memSize)}
	if l.RSDP, err = WriteACPI(mem, cfg.ACPI); err != nil {
		return nil, err
	}
	clear(mem[BootData:BIOSEnd])
	copy(mem[CmdlineAddr:], cfg.Cmdline)
	writeGDT(mem)
	var bz *bzImage
	var pvhEntry uint64
	if bytes.Equal(magic[:], []byte(elfMagic)) {
		k, err := LoadELF(mem[:lowRAMEnd(memSize)], kernel)
		if err != nil {
			return nil, err
		}
		if k.PVHEntry == 0 {
			return nil, errors.New("guest: the ELF kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y or boot its bzImage")
		}
		if k.Start < HighMemStart {
			return nil, fmt.Errorf("guest: the ELF kernel loads at %#x, below 1 MiB where the boot data lives", k.Start)
		}
		l.KernelEnd, pvhEntry = k.End, k.PVHEntry
	} else {
		if bz, err = loadBzImage(mem[:lowRAMEnd(memSize)], kernel); err != nil {
			return nil, err
		}
		l.KernelEnd = bz.end
	}
	initrd, err := readInitrd(cfg)
	if err != nil {
		return nil, err
	}
	if len(initrd) > 0 {
		maxAddr := lowRAMEnd(memSize) // PVH: anywhere; keep it below 4 GiB like the bzImage path
		if bz != nil {
			maxAddr = min(maxAddr, uint64(bz.initrdAddrMax)+1)
		}
		if l.InitrdAddr, err = placeInitrd(uint64(len(initrd)), l.KernelEnd, maxAddr); err != nil {
			return nil, err
		}
		l.InitrdSize = uint64(len(initrd))
		copy(mem[l.InitrdAddr:], initrd)
	}
	if bz == nil {
		if len(l.MemoryMap) > MemmapMax {
			return nil, fmt.Errorf("guest: %d memory map entries, room for %d", len(l.MemoryMap), MemmapMax)
		}
		writeStartInfo(mem, l)
		// PVH entry (Xen docs/misc/pvh.pandoc, Linux
		// Documentation/arch/x86/boot.rst "PVH"): 32-bit protected mode,
		// paging off, EBX = start_info, CS 32-bit flat execute/read,
		// DS/ES/SS flat read/write, TR a busy 32-bit TSS at 0 with limit
		// 0x67, CR0.PE only, CR4 = 0, EFLAGS.IF/TF/VM clear.
		l.Entry = EntryState{
			Mode: "pvh", RIP: pvhEntry, RBX: StartInfoAddr, RSP: BootStackTop, RFLAGS: rflags1,
			CR0: cr0PE | cr0ET,
			CS:  code32Seg, DS: dataSeg, TR: tssSeg,
			GDTBase: GDTAddr, GDTLimit: uint16(8*len(bootGDT) - 1),
		}
		return l, nil
	}
	if err := writeBootParams(mem, bz, l); err != nil {
		return nil, err
	}
	writeIdentityPageTables(mem)
	// 64-bit boot protocol (boot.rst "64-bit BOOT PROTOCOL"): long mode
	// with paging, the kernel, zero page and command line identity
	// mapped, CS = __BOOT_CS, DS/ES/SS = __BOOT_DS, interrupts off, RSI =
	// boot_params, entry at the 64-bit entry point 0x200 past the load
	// address.
	l.Entry = EntryState{
		Mode: "bzimage-64", RIP: BzImageLoadAddr + 0x200, RSI: ZeroPageAddr, RSP: BootStackTop, RFLAGS: rflags1,
		CR0: cr0PG | cr0PE | cr0ET, CR3: PML4Addr, CR4: cr4PAE, EFER: eferLME | eferLMA,
		CS: code64Seg, DS: dataSeg, TR: tssSeg,
		GDTBase: GDTAddr, GDTLimit: uint16(8*len(bootGDT) - 1),
	}
	return l, nil
}

// image is a kernel or initrd, from a file or from memory.
type image interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

type memImage struct{ *bytes.Reader }

func (memImage) Close() error { return nil }

type fileImage struct {
	*os.File
	size int64
}

func (f fileImage) Size() int64 { return f.size }

func openImage(what, path string, data []byte) (image, error) {
	if data != nil {
		return memImage{bytes.NewReader(data)}, nil
	}
	if path == "" {
		return nil, fmt.Errorf("guest: no %s given", what)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("guest: %s: %w", what, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("guest: %s: %w", what, err)
	}
	return fileImage{f, st.Size()}, nil
}

func readInitrd(cfg Config) ([]byte, error) {
	if cfg.InitrdImage != nil {
		if len(cfg.InitrdImage) == 0 {
			return nil, errors.New("guest: the initrd is empty")
		}
		return cfg.InitrdImage, nil
	}
	if cfg.Initrd == "" {
		return nil, nil
	}
	data, err := os.ReadFile(cfg.Initrd)
	if err != nil {
		return nil, fmt.Errorf("guest: initrd: %w", err)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("guest: initrd %s is empty", cfg.Initrd)
	}
	return data, nil
}

// placeInitrd returns the highest page-aligned address below maxAddr where
// size bytes fit above the kernel (boot.rst "initrd_addr_max": the initrd
// must end at or below it; loaders put it as high as possible).
func placeInitrd(size, kernelEnd, maxAddr uint64) (uint64, error) {
	floor := (kernelEnd + 0xfff) &^ 0xfff
	if size > maxAddr || (maxAddr-size)&^0xfff < floor {
		return 0, fmt.Errorf("guest: initrd of %d KiB does not fit between the kernel (ends at %#x) and %#x; give the VM more memory", size>>10, kernelEnd, maxAddr)
	}
	return (maxAddr - size) &^ 0xfff, nil
}

// writeStartInfo writes hvm_start_info, its module list and memory map.
func writeStartInfo(mem []byte, l *Loaded) {
	si := mem[StartInfoAddr : StartInfoAddr+startInfoSize]
	le.PutUint32(si[0:], startInfoMagic)
	le.PutUint32(si[4:], startInfoVersion)
	le.PutUint32(si[8:], 0) // flags: not a Xen domain
	if l.InitrdSize > 0 {
		le.PutUint32(si[12:], 1) // nr_modules
		le.PutUint64(si[16:], ModlistAddr)
		m := mem[ModlistAddr : ModlistAddr+modlistEntrySize]
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

// Page table entry bits (Intel SDM Vol. 3A 4.5 "4-Level Paging", Table
// 4-15/4-17).
const (
	ptePresent = 1 << 0
	pteRW      = 1 << 1
	ptePS      = 1 << 7 // in a PD entry: maps a 2 MiB page
)

// writeIdentityPageTables maps the first 4 GiB 1:1 with 2 MiB pages: PML4[0]
// -> PDPT, PDPT[0..3] -> four PDs of 512 2 MiB pages each.
func writeIdentityPageTables(mem []byte) {
	clear(mem[PML4Addr : PDAddr+4*0x1000])
	le.PutUint64(mem[PML4Addr:], PDPTAddr|ptePresent|pteRW)
	for i := uint64(0); i < 4; i++ {
		le.PutUint64(mem[PDPTAddr+8*i:], (PDAddr+0x1000*i)|ptePresent|pteRW)
		for j := uint64(0); j < 512; j++ {
			le.PutUint64(mem[PDAddr+0x1000*i+8*j:], (i<<30|j<<21)|ptePresent|pteRW|ptePS)
		}
	}
}
