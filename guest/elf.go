package guest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/elfnote.h):
// the 32-bit physical entry point for PVH boot, in an ELF note named "Xen".
const xenElfnotePhys32Entry = 18

const elfMagic = "\x7fELF" // ELF gABI, e_ident[EI_MAG0..EI_MAG3]

// Kernel is a loaded ELF kernel.
type Kernel struct {
	PVHEntry uint64 // 32-bit PVH entry point (0 if the kernel has none)
	Entry    uint64 // ELF entry (64-bit startup_64 for vmlinux)
	Start    uint64 // lowest physical address loaded
	End      uint64 // one past the highest physical address loaded
}

// LoadELF loads the PT_LOAD segments of an ELF64 x86-64 kernel at their
// physical addresses in mem and finds the PVH entry note.
func LoadELF(mem []byte, r io.ReaderAt) (*Kernel, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("guest: kernel is not an ELF file: %w", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("guest: kernel is %v %v, want ELFCLASS64 x86-64", f.Class, f.Machine)
	}
	k := &Kernel{Entry: f.Entry, Start: ^uint64(0)}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			if p.Filesz > p.Memsz {
				return nil, fmt.Errorf("guest: ELF segment at %#x has filesz %d > memsz %d", p.Paddr, p.Filesz, p.Memsz)
			}
			if p.Paddr >= uint64(len(mem)) || p.Memsz > uint64(len(mem))-p.Paddr {
				return nil, fmt.Errorf("guest: ELF segment [%#x,+%#x) does not fit in %d MiB of guest memory", p.Paddr, p.Memsz, len(mem)>>20)
			}
			dst := mem[p.Paddr : p.Paddr+p.Memsz]
			if _, err := p.ReadAt(dst[:p.Filesz], 0); err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("guest: reading ELF segment at %#x: %w", p.Paddr, err)
			}
			clear(dst[p.Filesz:])
			k.Start = min(k.Start, p.Paddr)
			k.End = max(k.End, p.Paddr+p.Memsz)
		case elf.PT_NOTE:
			data := make([]byte, p.Filesz)
			if _, err := p.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("guest: reading ELF notes: %w", err)
			}
			if e, ok := findPVHNote(data, f.ByteOrder); ok {
				k.PVHEntry = e
			}
		}
	}
	if k.End == 0 {
		return nil, errors.New("guest: ELF kernel has no loadable segments")
	}
	return k, nil
}

// findPVHNote walks ELF notes (namesz, descsz, type, name, desc; each
// padded to 4 bytes — ELF gABI "Note Section") for the Xen PHYS32 entry.
func findPVHNote(b []byte, bo binary.ByteOrder) (uint64, bool) {
	align := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz, descsz, typ := uint64(bo.Uint32(b)), uint64(bo.Uint32(b[4:])), bo.Uint32(b[8:])
		b = b[12:]
		if align(namesz) > uint64(len(b)) {
			return 0, false
		}
		name := b[:namesz]
		b = b[align(namesz):]
		if align(descsz) > uint64(len(b)) {
			return 0, false
		}
		desc := b[:descsz]
		b = b[align(descsz):]
		if typ == xenElfnotePhys32Entry && bytes.Equal(bytes.TrimRight(name, "\x00"), []byte("Xen")) {
			switch len(desc) {
			case 4:
				return uint64(bo.Uint32(desc)), true
			case 8:
				return bo.Uint64(desc), true
			}
		}
	}
	return 0, false
}
