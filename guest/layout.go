package guest

// Fixed guest physical addresses (see doc.go).
const (
	GDTAddr         = 0x500
	StartInfoAddr   = 0x6000
	MemmapAddr      = 0x6100
	ModlistAddr     = 0x6800
	ZeroPageAddr    = 0x7000
	PML4Addr        = 0x9000
	PDPTAddr        = 0xa000
	PDAddr          = 0xb000 // 4 PDs: 0xb000-0xefff map 4 GiB with 2 MiB pages
	CmdlineAddr     = 0x20000
	CmdlineMax      = 0x10000
	EBDAStart       = 0x9fc00
	HighMemStart    = 0x100000
	ACPIStart       = 0xe0000
	ACPIEnd         = 0x100000
	BzImageLoadAddr = 0x100000
)

// e820 memory types (ACPI 6.5, 15.3 "E820 Address Range Types", and the
// PVH memory map which uses the same values).
const (
	E820RAM      = 1
	E820Reserved = 2
	E820ACPI     = 3
	E820NVS      = 4
)

// MemoryRegion is one e820 / PVH memory map entry.
type MemoryRegion struct {
	Addr, Size uint64
	Type       uint32
}

// MemoryMap returns the e820 map for memSize bytes of RAM at address 0:
// conventional memory below the EBDA, the legacy holes and ACPI area
// reserved, RAM from 1 MiB to the top.
func MemoryMap(memSize uint64) []MemoryRegion {
	return []MemoryRegion{
		{0, EBDAStart, E820RAM},
		{EBDAStart, ACPIStart - EBDAStart, E820Reserved},
		{ACPIStart, ACPIEnd - ACPIStart, E820Reserved},
		{HighMemStart, memSize - HighMemStart, E820RAM},
	}
}
