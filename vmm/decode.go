package vmm

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/hyperhq/hyperd-go/kvm"
)

// A decoder for the few 64-bit mode instructions the VMM finishes itself
// (Intel SDM Vol. 2, chapter 2 "Instruction Format": legacy prefixes, REX,
// opcode, ModR/M, SIB, displacement).

type insn struct {
	length   int
	opsize16 bool // 0x66
	rep      byte // 0xf3 / 0xf2 / 0
	segBase  uint64
	rex      byte
	opcode   []byte // after prefixes and REX
	modrm    byte
	reg      int    // ModR/M.reg extended by REX.R
	rmReg    int    // register operand when mod == 3, else -1
	addr     uint64 // effective address when mod != 3
}

func (i *insn) rexW() bool { return i.rex&8 != 0 }

// regPtr maps an x86 register number to the field in kvm.Regs.
func regPtr(r *kvm.Regs, n int) *uint64 {
	switch n {
	case 0:
		return &r.RAX
	case 1:
		return &r.RCX
	case 2:
		return &r.RDX
	case 3:
		return &r.RBX
	case 4:
		return &r.RSP
	case 5:
		return &r.RBP
	case 6:
		return &r.RSI
	case 7:
		return &r.RDI
	case 8:
		return &r.R8
	case 9:
		return &r.R9
	case 10:
		return &r.R10
	case 11:
		return &r.R11
	case 12:
		return &r.R12
	case 13:
		return &r.R13
	case 14:
		return &r.R14
	}
	return &r.R15
}

// decodeModRM decodes b (the instruction bytes at RIP) as
// prefixes, REX, an opcode of opLen bytes and a ModR/M operand.
func decodeModRM(b []byte, opLen int, regs *kvm.Regs, sregs *kvm.Sregs) (*insn, error) {
	in := &insn{rmReg: -1}
	p := 0
prefixes:
	for ; p < len(b); p++ {
		switch b[p] {
		case 0x66:
			in.opsize16 = true
		case 0xf2, 0xf3:
			in.rep = b[p]
		case 0x64:
			in.segBase = sregs.FS.Base
		case 0x65:
			in.segBase = sregs.GS.Base
		case 0x2e, 0x3e, 0x26, 0x36, 0xf0:
		case 0x67:
			return nil, fmt.Errorf("32-bit addressing is not supported")
		default:
			break prefixes
		}
	}
	if p < len(b) && b[p]&0xf0 == 0x40 {
		in.rex = b[p]
		p++
	}
	if p+opLen+1 > len(b) {
		return nil, fmt.Errorf("instruction truncated")
	}
	in.opcode = b[p : p+opLen]
	p += opLen
	in.modrm = b[p]
	p++
	mod, reg, rm := in.modrm>>6, int(in.modrm>>3&7), int(in.modrm&7)
	if in.rex&4 != 0 {
		reg += 8
	}
	in.reg = reg
	if mod == 3 {
		if in.rex&1 != 0 {
			rm += 8
		}
		in.rmReg = rm
		in.length = p
		return in, nil
	}
	var ea uint64
	need := func(n int) error {
		if p+n > len(b) {
			return fmt.Errorf("instruction truncated")
		}
		return nil
	}
	ripRelative := false
	if rm == 4 { // SIB
		if err := need(1); err != nil {
			return nil, err
		}
		sib := b[p]
		p++
		scale, index, base := sib>>6, int(sib>>3&7), int(sib&7)
		if in.rex&2 != 0 {
			index += 8
		}
		if index != 4 {
			ea += *regPtr(regs, index) << scale
		}
		if base == 5 && mod == 0 {
			if err := need(4); err != nil {
				return nil, err
			}
			ea += uint64(int64(int32(binary.LittleEndian.Uint32(b[p:]))))
			p += 4
		} else {
			if in.rex&1 != 0 {
				base += 8
			}
			ea += *regPtr(regs, base)
		}
	} else if rm == 5 && mod == 0 {
		ripRelative = true
		if err := need(4); err != nil {
			return nil, err
		}
		ea = uint64(int64(int32(binary.LittleEndian.Uint32(b[p:]))))
		p += 4
	} else {
		if in.rex&1 != 0 {
			rm += 8
		}
		ea = *regPtr(regs, rm)
	}
	switch mod {
	case 1:
		if err := need(1); err != nil {
			return nil, err
		}
		ea += uint64(int64(int8(b[p])))
		p++
	case 2:
		if err := need(4); err != nil {
			return nil, err
		}
		ea += uint64(int64(int32(binary.LittleEndian.Uint32(b[p:]))))
		p += 4
	}
	in.length = p
	if ripRelative {
		ea += regs.RIP + uint64(in.length)
	}
	in.addr = ea + in.segBase
	return in, nil
}

// operandSize in bytes.
func (i *insn) operandSize() int {
	switch {
	case i.rexW():
		return 8
	case i.opsize16:
		return 2
	}
	return 4
}

// readRM reads the r/m operand.
func (i *insn) readRM(g *guestVirt, regs *kvm.Regs, sregs *kvm.Sregs) (uint64, error) {
	size := i.operandSize()
	if i.rmReg >= 0 {
		return truncate(*regPtr(regs, i.rmReg), size), nil
	}
	buf := make([]byte, 8)
	if err := g.read(i.addr, buf[:size], dataAccess(sregs, false)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(buf), nil
}

// writeReg writes the ModR/M.reg operand with x86 semantics: 32-bit writes
// zero the upper half, 16-bit writes keep it.
func (i *insn) writeReg(regs *kvm.Regs, v uint64) {
	p := regPtr(regs, i.reg)
	switch i.operandSize() {
	case 8:
		*p = v
	case 4:
		*p = uint64(uint32(v))
	case 2:
		*p = *p&^0xffff | v&0xffff
	}
}

func truncate(v uint64, size int) uint64 {
	if size == 8 {
		return v
	}
	return v & (1<<(8*size) - 1)
}

// Arithmetic flags (SDM Vol. 1, 3.4.3.1).
const (
	flagCF = 1 << 0
	flagPF = 1 << 2
	flagAF = 1 << 4
	flagZF = 1 << 6
	flagSF = 1 << 7
	flagOF = 1 << 11
	arith  = flagCF | flagPF | flagAF | flagZF | flagSF | flagOF
)

// emulateBitCount executes POPCNT, LZCNT or TZCNT (F3 0F B8/BD/BC /r;
// SDM Vol. 2B). It returns false if b is none of them.
func emulateBitCount(c emuCPU, g *guestVirt, b []byte, regs *kvm.Regs, sregs *kvm.Sregs) (bool, error) {
	in, err := decodeModRM(b, 2, regs, sregs)
	if err != nil || in.rep != 0xf3 || in.opcode[0] != 0x0f {
		return false, nil
	}
	op := in.opcode[1]
	if op != 0xb8 && op != 0xbc && op != 0xbd {
		return false, nil
	}
	src, err := in.readRM(g, regs, sregs)
	if err != nil {
		return true, err
	}
	width := 8 * in.operandSize()
	var res uint64
	flags := regs.RFLAGS &^ arith
	switch op {
	case 0xb8: // POPCNT: ZF = (src == 0), other arithmetic flags cleared
		res = uint64(bits.OnesCount64(src))
		if src == 0 {
			flags |= flagZF
		}
	case 0xbd: // LZCNT: CF = (src == 0), ZF = (result == 0)
		res = uint64(bits.LeadingZeros64(src) - (64 - width))
		if src == 0 {
			res, flags = uint64(width), flags|flagCF
		}
		if res == 0 {
			flags |= flagZF
		}
	case 0xbc: // TZCNT
		res = uint64(bits.TrailingZeros64(src))
		if src == 0 {
			res, flags = uint64(width), flags|flagCF
		}
		if res == 0 {
			flags |= flagZF
		}
	}
	in.writeReg(regs, res)
	regs.RFLAGS = flags
	regs.RIP += uint64(in.length)
	return true, c.SetRegs(*regs)
}
