package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hyperhq/hyperd-go/kvm"
)

// Finishing instructions that KVM's emulator gives up on.
//
// On software-nested KVM (no VMX/SVM; ring-0 guest code is interpreted by
// the host kernel's x86 emulator) some instructions a Linux kernel executes
// in ring 0 cannot be emulated: KVM_RUN returns KVM_EXIT_INTERNAL_ERROR
// with suberror KVM_INTERNAL_ERROR_EMULATION. The notable one is a ring-0
// INT3, which the kernel executes on purpose (the alternatives self-test,
// static-call and text-poking use #BP), and UD2, which BUG()/WARN() use.
// For these the VMM delivers the exception itself, exactly as the CPU
// would in 64-bit mode (Intel SDM Vol. 3A, 6.14 "Exception and Interrupt
// Handling in 64-bit Mode"): read the IDT gate, switch stack if the gate
// asks for an IST or a privilege change, push SS, RSP, RFLAGS, CS, RIP (and
// an error code), and continue at the handler. Everything else is reported
// as a fatal emulation failure with the instruction bytes.

// Exception vectors (SDM Vol. 3A, Table 6-1).
const (
	vecUD = 6  // invalid opcode
	vecBP = 3  // breakpoint
	vecGP = 13 // general protection
)

// errNotEmulated means the instruction is not one we finish ourselves.
var errNotEmulated = errors.New("instruction not handled by the VMM")

// guestVirt reads and writes guest memory at virtual addresses through the
// vCPU's page tables (KVM_TRANSLATE), one page at a time.
type guestVirt struct {
	c   *kvm.VCPU
	mem []byte
}

func (g guestVirt) phys(va uint64, n int, write bool) ([]byte, error) {
	t, err := g.c.Translate(va)
	if err != nil {
		return nil, err
	}
	if t.Valid == 0 {
		return nil, fmt.Errorf("guest virtual address %#x is not mapped", va)
	}
	if write && t.Writeable == 0 {
		return nil, fmt.Errorf("guest virtual address %#x is not writable", va)
	}
	pa := t.PhysicalAddress
	if pa >= uint64(len(g.mem)) || uint64(n) > uint64(len(g.mem))-pa {
		return nil, fmt.Errorf("guest virtual address %#x maps to %#x, outside RAM", va, pa)
	}
	return g.mem[pa : pa+uint64(n)], nil
}

// read copies len(buf) bytes from virtual address va.
func (g guestVirt) read(va uint64, buf []byte) error {
	for len(buf) > 0 {
		n := min(len(buf), int(4096-va%4096))
		p, err := g.phys(va, n, false)
		if err != nil {
			return err
		}
		copy(buf, p)
		buf, va = buf[n:], va+uint64(n)
	}
	return nil
}

// write copies buf to virtual address va.
func (g guestVirt) write(va uint64, buf []byte) error {
	for len(buf) > 0 {
		n := min(len(buf), int(4096-va%4096))
		p, err := g.phys(va, n, true)
		if err != nil {
			return err
		}
		copy(p, buf)
		buf, va = buf[n:], va+uint64(n)
	}
	return nil
}

// EmulationStats counts the instructions the VMM finished for KVM.
type EmulationStats struct {
	Breakpoints  uint64 // INT3 delivered as #BP
	InvalidOps   uint64 // UD2 delivered as #UD
	SoftwareInts uint64 // INT n
	BitCounts    uint64 // POPCNT/LZCNT/TZCNT computed by the VMM
	Group7       uint64 // CLAC/STAC/SWAPGS
	X87          uint64 // FWAIT/FNCLEX/FNINIT
}

// vecMF is the x87 floating-point error exception.
const vecMF = 16

// emulateX87 executes the x87 control instructions the kernel's FPU code
// uses (SDM Vol. 2A "WAIT/FWAIT", "FCLEX/FNCLEX", "FINIT/FNINIT"):
// FWAIT (9B) raises #MF if an unmasked exception is pending (FSW.ES) and
// is otherwise a no-op; FNCLEX (DB E2) clears the exception flags, ES and
// B; FNINIT (DB E3) resets the control, status and tag words.
func emulateX87(g guestVirt, b []byte, regs *kvm.Regs, sregs *kvm.Sregs) (bool, error) {
	var n uint64
	switch {
	case len(b) >= 1 && b[0] == 0x9b:
		n = 1
	case len(b) >= 2 && b[0] == 0xdb && (b[1] == 0xe2 || b[1] == 0xe3):
		n = 2
	default:
		return false, nil
	}
	f, err := g.c.GetFPU()
	if err != nil {
		return true, err
	}
	const fswES = 1 << 7
	switch {
	case n == 1:
		if f.FSW&fswES != 0 && sregs.CR0&(1<<5) != 0 { // CR0.NE: native #MF reporting
			return true, deliverException(g, regs, sregs, vecMF, regs.RIP, nil)
		}
	case b[1] == 0xe2:
		f.FSW &^= 0x80ff | 0x8000
		if err := g.c.SetFPU(f); err != nil {
			return true, err
		}
	default:
		f.FCW, f.FSW, f.FTWX, f.LastOpcode, f.LastIP, f.LastDP = 0x37f, 0, 0, 0, 0, 0
		if err := g.c.SetFPU(f); err != nil {
			return true, err
		}
	}
	regs.RIP += n
	return true, g.c.SetRegs(*regs)
}

// msrKernelGSBase is IA32_KERNEL_GS_BASE, the value SWAPGS exchanges with
// GS.base (SDM Vol. 4, Table 2-2).
const msrKernelGSBase = 0xc0000102

// emulateGroup7 executes the 0F 01 /reg-free forms the kernel uses on
// every entry: CLAC (0F 01 CA) and STAC (0F 01 CB) clear/set RFLAGS.AC
// (SDM Vol. 2A "CLAC"/Vol. 2B "STAC"); SWAPGS (0F 01 F8) exchanges GS.base
// with IA32_KERNEL_GS_BASE (Vol. 2B "SWAPGS").
func emulateGroup7(c *kvm.VCPU, modrm byte, regs *kvm.Regs, sregs *kvm.Sregs) (bool, error) {
	const flagAC = 1 << 18
	switch modrm {
	case 0xca:
		regs.RFLAGS &^= flagAC
	case 0xcb:
		regs.RFLAGS |= flagAC
	case 0xf8:
		kgs, err := c.GetMSRs(msrKernelGSBase)
		if err != nil {
			return true, err
		}
		gs := sregs.GS.Base
		sregs.GS.Base = kgs[0].Data
		if err := c.SetMSRs(kvm.MSREntry{Index: msrKernelGSBase, Data: gs}); err != nil {
			return true, err
		}
		if err := c.SetSregs(*sregs); err != nil {
			return true, err
		}
	default:
		return false, nil
	}
	regs.RIP += 3
	return true, c.SetRegs(*regs)
}

// emulateFailure handles an emulation-failure exit: it finishes the
// instruction at RIP if it is one we know, and returns errNotEmulated
// (wrapped with the instruction bytes) otherwise.
func emulateFailure(c *kvm.VCPU, mem []byte, ie *kvm.InternalErrorExit, st *EmulationStats) error {
	regs, err := c.GetRegs()
	if err != nil {
		return err
	}
	sregs, err := c.GetSregs()
	if err != nil {
		return err
	}
	g := guestVirt{c: c, mem: mem}
	insn := ie.Insn
	if len(insn) == 0 {
		buf := make([]byte, 15)
		if err := g.read(regs.RIP, buf[:1]); err != nil {
			return fmt.Errorf("%w: cannot fetch the instruction at %#x: %v", errNotEmulated, regs.RIP, err)
		}
		g.read(regs.RIP, buf) // best effort for the rest (may cross into an unmapped page)
		insn = buf
	}
	if sregs.EFER&(1<<10) == 0 || sregs.CS.L == 0 {
		return fmt.Errorf("%w: % x at %#x (not in 64-bit mode)", errNotEmulated, insn, regs.RIP)
	}
	switch {
	case len(insn) >= 1 && insn[0] == 0xcc: // INT3: trap, saved RIP is the next instruction
		st.Breakpoints++
		return deliverException(g, &regs, &sregs, vecBP, regs.RIP+1, nil)
	case len(insn) >= 2 && insn[0] == 0x0f && insn[1] == 0x0b: // UD2: fault, saved RIP is the UD2
		st.InvalidOps++
		return deliverException(g, &regs, &sregs, vecUD, regs.RIP, nil)
	case len(insn) >= 2 && insn[0] == 0xcd: // INT imm8
		st.SoftwareInts++
		return deliverException(g, &regs, &sregs, insn[1], regs.RIP+2, nil)
	}
	if len(insn) >= 3 && insn[0] == 0x0f && insn[1] == 0x01 {
		if ok, err := emulateGroup7(g.c, insn[2], &regs, &sregs); ok {
			st.Group7++
			return err
		}
	}
	if ok, err := emulateX87(g, insn, &regs, &sregs); ok {
		st.X87++
		return err
	}
	if ok, err := emulateBitCount(g, insn, &regs, &sregs); ok {
		st.BitCounts++
		return err
	}
	return fmt.Errorf("%w: % x at %#x", errNotEmulated, insn, regs.RIP)
}

// deliverException performs 64-bit mode event delivery of vector vec with
// saved instruction pointer ret (SDM Vol. 3A 6.14).
func deliverException(g guestVirt, regs *kvm.Regs, sregs *kvm.Sregs, vec uint8, ret uint64, errCode *uint64) error {
	// IDT gate descriptor, 16 bytes (SDM Vol. 3A 6.14.1, Figure 6-8).
	if uint64(vec)*16+15 > uint64(sregs.IDT.Limit) {
		return fmt.Errorf("vector %d is beyond the IDT limit %#x", vec, sregs.IDT.Limit)
	}
	var gate [16]byte
	if err := g.read(sregs.IDT.Base+uint64(vec)*16, gate[:]); err != nil {
		return fmt.Errorf("reading IDT gate %d: %w", vec, err)
	}
	le := binary.LittleEndian
	offset := uint64(le.Uint16(gate[0:])) | uint64(le.Uint16(gate[6:]))<<16 | uint64(le.Uint32(gate[8:]))<<32
	selector := le.Uint16(gate[2:])
	ist := gate[4] & 7
	typ := gate[5] & 0xf
	present := gate[5]&0x80 != 0
	if !present || (typ != 0xe && typ != 0xf) {
		return fmt.Errorf("IDT gate %d is not a present 64-bit interrupt/trap gate (attr %#x)", vec, gate[5])
	}
	cpl := sregs.CS.Selector & 3
	newCS, err := loadCodeSegment(g, sregs, selector)
	if err != nil {
		return err
	}
	newCPL := uint16(newCS.DPL)
	if newCPL > cpl {
		return fmt.Errorf("IDT gate %d targets a less privileged code segment", vec)
	}
	oldSS, oldRSP := sregs.SS, regs.RSP
	rsp := regs.RSP
	switch {
	case ist != 0: // Interrupt Stack Table (SDM 6.14.5): TSS offset 0x24 + 8*(ist-1)
		var b [8]byte
		if err := g.read(sregs.TR.Base+0x24+8*uint64(ist-1), b[:]); err != nil {
			return fmt.Errorf("reading IST%d from the TSS: %w", ist, err)
		}
		rsp = le.Uint64(b[:])
	case newCPL < cpl: // privilege change: RSPn from the TSS, offset 4 + 8*n
		var b [8]byte
		if err := g.read(sregs.TR.Base+4+8*uint64(newCPL), b[:]); err != nil {
			return fmt.Errorf("reading RSP%d from the TSS: %w", newCPL, err)
		}
		rsp = le.Uint64(b[:])
	}
	if newCPL < cpl {
		// SS becomes a null selector with RPL = new CPL (SDM 6.14.4).
		sregs.SS = kvm.Segment{Selector: newCPL, Unusable: 1, DPL: uint8(newCPL), Type: 3, S: 1, Present: 1}
	}
	rsp &^= 0xf // the stack is 16-byte aligned before the pushes (SDM 6.14.2)
	frame := []uint64{ret, uint64(sregs.CS.Selector), regs.RFLAGS, oldRSP, uint64(oldSS.Selector)}
	if errCode != nil {
		frame = append([]uint64{*errCode}, frame...)
	}
	buf := make([]byte, 8*len(frame))
	for i, v := range frame {
		le.PutUint64(buf[8*i:], v)
	}
	rsp -= uint64(len(buf))
	if err := g.write(rsp, buf); err != nil {
		return fmt.Errorf("pushing the exception frame at %#x: %w", rsp, err)
	}
	const (
		flagTF = 1 << 8
		flagIF = 1 << 9
		flagNT = 1 << 14
		flagRF = 1 << 16
		flagVM = 1 << 17
	)
	regs.RFLAGS &^= flagTF | flagNT | flagRF | flagVM
	if typ == 0xe { // interrupt gate: interrupts off
		regs.RFLAGS &^= flagIF
	}
	regs.RSP = rsp
	regs.RIP = offset
	sregs.CS = newCS
	if err := g.c.SetSregs(*sregs); err != nil {
		return err
	}
	return g.c.SetRegs(*regs)
}

// loadCodeSegment reads the 64-bit code segment descriptor for selector
// from the GDT (SDM Vol. 3A 3.4.5) into KVM's segment form.
func loadCodeSegment(g guestVirt, sregs *kvm.Sregs, selector uint16) (kvm.Segment, error) {
	if selector&^3 == sregs.CS.Selector&^3 {
		s := sregs.CS
		s.Selector = selector&^3 | uint16(s.DPL)
		return s, nil
	}
	if selector&4 != 0 {
		return kvm.Segment{}, fmt.Errorf("gate selector %#x refers to the LDT", selector)
	}
	idx := uint64(selector &^ 7)
	if idx+7 > uint64(sregs.GDT.Limit) {
		return kvm.Segment{}, fmt.Errorf("gate selector %#x is beyond the GDT limit", selector)
	}
	var b [8]byte
	if err := g.read(sregs.GDT.Base+idx, b[:]); err != nil {
		return kvm.Segment{}, fmt.Errorf("reading GDT entry %#x: %w", selector, err)
	}
	d := binary.LittleEndian.Uint64(b[:])
	s := kvm.Segment{
		Base:     (d>>16)&0xffffff | (d>>56)<<24,
		Limit:    uint32(d&0xffff | (d>>48&0xf)<<16),
		Type:     uint8(d >> 40 & 0xf),
		S:        uint8(d >> 44 & 1),
		DPL:      uint8(d >> 45 & 3),
		Present:  uint8(d >> 47 & 1),
		AVL:      uint8(d >> 52 & 1),
		L:        uint8(d >> 53 & 1),
		DB:       uint8(d >> 54 & 1),
		G:        uint8(d >> 55 & 1),
		Selector: selector&^3 | uint16(d>>45&3),
	}
	if s.G != 0 {
		s.Limit = s.Limit<<12 | 0xfff
	}
	if s.Present == 0 || s.S == 0 || s.Type&8 == 0 || s.L == 0 {
		return kvm.Segment{}, fmt.Errorf("gate selector %#x is not a present 64-bit code segment", selector)
	}
	return s, nil
}
