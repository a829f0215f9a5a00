package guesttest

import "encoding/binary"

// LoadAddr is where the kernel's single segment is loaded and entered.
const LoadAddr = 0x1000000

// Action is what the tiny kernel does after writing its message.
type Action int

const (
	Halt        Action = iota // hlt forever (interrupts off): the VM never stops by itself
	Poweroff                  // ACPI HW-reduced sleep control: SLP_TYP 5 (S5) | SLP_EN
	Reset                     // i8042 pulse reset line (out 0x64, 0xfe)
	TripleFault               // lidt with limit 0, then divide by zero: #DE, #GP, #DF, shutdown
)

// Kernel returns the ELF image of a kernel that writes msg to the serial
// port at 0x3f8 and then performs act.
func Kernel(msg string, act Action) []byte {
	// 32-bit code (Intel SDM vol. 2 encodings), entered by PVH in flat
	// protected mode with paging off.
	code := []byte{
		0xBE, 0, 0, 0, 0, // mov esi, msg
		0x66, 0xBA, 0xF8, 0x03, // mov dx, 0x3f8
		0xAC,       // lodsb
		0x84, 0xC0, // test al, al
		0x74, 0x03, // jz +3 (past out and jmp)
		0xEE,       // out dx, al
		0xEB, 0xF8, // jmp -8 (lodsb)
	}
	idtOperand := -1
	switch act {
	case Poweroff:
		code = append(code, 0x66, 0xBA, 0xC0, 0x03, 0xB0, 0x34, 0xEE) // mov dx, 0x3c0; mov al, 5<<2|1<<5; out dx, al
	case Reset:
		code = append(code, 0xB0, 0xFE, 0xE6, 0x64) // mov al, 0xfe; out 0x64, al
	case TripleFault:
		idtOperand = len(code) + 3
		code = append(code, 0x0F, 0x01, 0x1D, 0, 0, 0, 0, 0x31, 0xC9, 0xF7, 0xF1) // lidt [idt]; xor ecx, ecx; div ecx
	}
	code = append(code, 0xF4, 0xEB, 0xFD) // hlt; jmp -3
	msgAddr := uint32(LoadAddr + len(code))
	binary.LittleEndian.PutUint32(code[1:], msgAddr)
	idtAddr := msgAddr + uint32(len(msg)) + 1
	if idtOperand >= 0 {
		binary.LittleEndian.PutUint32(code[idtOperand:], idtAddr)
	}
	seg := append(append(code, msg...), 0)
	seg = append(seg, make([]byte, 6)...) // IDT descriptor: limit 0, base 0
	return ELF(LoadAddr, seg)
}

// ELF returns an ELF64 x86-64 executable (ELF gABI: 64-byte header, 56-byte
// program headers) with seg loaded at paddr and a PT_NOTE carrying the PVH
// entry point paddr (XEN_ELFNOTE_PHYS32_ENTRY, Xen's public/elfnote.h).
func ELF(paddr uint64, seg []byte) []byte {
	const ehsize, phentsize, nph = 64, 56, 2
	le := binary.LittleEndian
	note := le.AppendUint32(nil, 4) // namesz "Xen\0"
	note = le.AppendUint32(note, 4) // descsz
	note = le.AppendUint32(note, 18)
	note = append(note, "Xen\x00"...)
	note = le.AppendUint32(note, uint32(paddr))

	h := make([]byte, ehsize)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1 // ELFCLASS64, ELFDATA2LSB, EV_CURRENT
	le.PutUint16(h[16:], 2)    // ET_EXEC
	le.PutUint16(h[18:], 62)   // EM_X86_64
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[24:], paddr)
	le.PutUint64(h[32:], ehsize) // e_phoff
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[54:], phentsize)
	le.PutUint16(h[56:], nph)
	le.PutUint16(h[58:], 64) // e_shentsize; no sections
	off := uint64(ehsize + phentsize*nph)
	for len(seg)%8 != 0 { // notes are 4-byte aligned
		seg = append(seg, 0)
	}
	ph := func(typ uint32, off, addr, size uint64) {
		p := make([]byte, phentsize)
		le.PutUint32(p[0:], typ)
		le.PutUint32(p[4:], 5) // PF_R|PF_X
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], addr)
		le.PutUint64(p[24:], addr)
		le.PutUint64(p[32:], size)
		le.PutUint64(p[40:], size)
		le.PutUint64(p[48:], 4)
		h = append(h, p...)
	}
	ph(1, off, paddr, uint64(len(seg)))               // PT_LOAD
	ph(4, off+uint64(len(seg)), 0, uint64(len(note))) // PT_NOTE
	return append(append(h, seg...), note...)
}
