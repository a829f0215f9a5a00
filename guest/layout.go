package guest

import "fmt"

// Fixed guest physical addresses (the table in doc.go explains them).
// Everything the loader writes besides the kernel and the initrd lives in
// the legacy BIOS area 0xe0000-0xfffff, which the e820 map marks reserved,
// so the kernel (and the bzImage decompressor's KASLR placement) never
// allocates over boot data it has not consumed yet.
const (
	EBDAStart     = 0x9fc00 // Extended BIOS Data Area: the PC's last KiB of conventional memory
	LegacyHole    = 0xa0000 // VGA window and option ROMs up to the BIOS area
	ACPIStart     = 0xe0000 // RSDP (first, 16-byte aligned: legacy scan, ACPI 6.5 5.2.5.1), then DSDT, FADT, MADT, XSDT
	ACPIEnd       = 0xf0000 // end of the ACPI tables area (64 KiB)
	BootData      = 0xf0000 // start of the boot data below
	GDTAddr       = 0xf0000 // GDT for the entry state (null, code32, code64, data, TSS)
	StartInfoAddr = 0xf1000 // hvm_start_info (PVH)
	ModlistAddr   = 0xf1040 // hvm_modlist_entry[] (PVH): the initrd
	MemmapAddr    = 0xf1100 // hvm_memmap_table_entry[] (PVH)
	MemmapMax     = (0xf2000 - MemmapAddr) / memmapEntrySize
	ZeroPageAddr  = 0xf2000  // boot_params, "the zero page" (64-bit boot protocol)
	CmdlineAddr   = 0xf3000  // NUL-terminated kernel command line
	CmdlineMax    = 0x1000   // bytes, NUL included (Linux x86 COMMAND_LINE_SIZE is 2048)
	PML4Addr      = 0xf4000  // identity page tables for the 64-bit boot protocol:
	PDPTAddr      = 0xf5000  //   one PML4, one PDPT,
	PDAddr        = 0xf6000  //   four PDs (0xf6000-0xf9fff) of 2 MiB pages map 0-4 GiB
	BootStackTop  = 0xfe000  // initial RSP; 0xfa000-0xfdfff is the boot stack
	BIOSEnd       = 0x100000 // end of the reserved BIOS area
	HighMemStart  = 0x100000 // RAM from 1 MiB up

	BzImageLoadAddr = 0x100000 // protected-mode kernel of a bzImage (boot.rst: "loaded at 0x100000")

	// The 32-bit MMIO hole (I/O APIC, local APIC, device windows, the
	// KVM TSS/identity pages): guest RAM beyond 3 GiB continues at 4 GiB.
	MMIOHoleStart = 0xc0000000
	MMIOHoleEnd   = 0x100000000
)

// e820 address range types (ACPI 6.5, chapter 15 "System Address Map
// Interfaces", Address Range Types; the PVH memory map uses the same
// values, start_info.h
// "hvm_memmap_table_entry").
const (
	E820RAM      = 1 // AddressRangeMemory
	E820Reserved = 2 // AddressRangeReserved
	E820ACPI     = 3 // AddressRangeACPI (reclaimable)
	E820NVS      = 4 // AddressRangeNVS
)

// MemoryRegion is one e820 / PVH memory map entry.
type MemoryRegion struct {
	Addr, Size uint64
	Type       uint32
}

// End is one past the region's last byte.
func (r MemoryRegion) End() uint64 { return r.Addr + r.Size }

// MemoryMap returns the e820 map of a guest with memSize bytes of RAM:
// conventional memory below the EBDA; the EBDA, the legacy VGA/ROM hole and
// the BIOS area (our ACPI tables and boot data) reserved; RAM from 1 MiB up
// to memSize, or, when memSize reaches the MMIO hole at 3 GiB, up to the
// hole and the rest from 4 GiB on. The RAM that the map gives the guest is
// memSize bytes minus the 384 KiB below 1 MiB that PCs never had.
func MemoryMap(memSize uint64) []MemoryRegion {
	m := []MemoryRegion{
		{0, EBDAStart, E820RAM},
		{EBDAStart, LegacyHole - EBDAStart, E820Reserved},
		{LegacyHole, ACPIStart - LegacyHole, E820Reserved},
		{ACPIStart, BIOSEnd - ACPIStart, E820Reserved},
	}
	if memSize <= MMIOHoleStart {
		return append(m, MemoryRegion{HighMemStart, memSize - HighMemStart, E820RAM})
	}
	return append(m,
		MemoryRegion{HighMemStart, MMIOHoleStart - HighMemStart, E820RAM},
		MemoryRegion{MMIOHoleEnd, memSize - MMIOHoleStart, E820RAM})
}

// AddressSpaceEnd is one past the highest guest physical address of RAM
// for memSize bytes of it: memSize itself, or beyond 4 GiB when the RAM is
// split around the MMIO hole. The mem slice given to Load is indexed by
// guest physical address, so it must be this long; the VMM registers
// mem[:MMIOHoleStart] and mem[MMIOHoleEnd:] as two memory slots and never
// touches (so never backs) the part in between.
func AddressSpaceEnd(memSize uint64) uint64 {
	if memSize <= MMIOHoleStart {
		return memSize
	}
	return MMIOHoleEnd + memSize - MMIOHoleStart
}

// lowRAMEnd is the end of RAM below 4 GiB.
func lowRAMEnd(memSize uint64) uint64 { return min(memSize, MMIOHoleStart) }

// MinMemory is the least RAM Load accepts.
const MinMemory = 16 << 20

func checkMemory(mem []byte, memSize uint64) error {
	if memSize < MinMemory {
		return fmt.Errorf("guest: %d MiB of memory is too little for Linux (at least %d MiB)", memSize>>20, MinMemory>>20)
	}
	if need := AddressSpaceEnd(memSize); uint64(len(mem)) < need {
		return fmt.Errorf("guest: %d MiB of RAM spans guest physical addresses up to %#x, the memory slice has only %#x bytes", memSize>>20, need, len(mem))
	}
	return nil
}
