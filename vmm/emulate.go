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

// Exception vectors (SDM Vol. 3A, Table 6-1); the ones memory accesses
// raise are in guestmem.go.
const (
	vecUD = 6 // invalid opcode
	vecBP = 3 // breakpoint
)

// errNotEmulated means the instruction is not one we finish ourselves.
var errNotEmulated = errors.New("instruction not handled by the VMM")

// emuCPU is the vCPU state the emulator reads and sets: *kvm.VCPU, or a
// fake in the tests and the fuzz target.
type emuCPU interface {
	GetRegs() (kvm.Regs, error)
	SetRegs(kvm.Regs) error
	GetSregs() (kvm.Sregs, error)
	SetSregs(kvm.Sregs) error
	GetFPU() (kvm.FPU, error)
	SetFPU(kvm.FPU) error
	GetMSRs(indices ...uint32) ([]kvm.MSREntry, error)
	SetMSRs(entries ...kvm.MSREntry) error
}

// EmulationStats counts the instructions the VMM finished for KVM.
type EmulationStats struct {
	Breakpoints  uint64 // INT3 delivered as #BP
	InvalidOps   uint64 // UD2 delivered as #UD
	SoftwareInts uint64 // INT n
	BitCounts    uint64 // POPCNT/LZCNT/TZCNT computed by the VMM
	Group7       uint64 // CLAC/STAC/SWAPGS
	X87          uint64 // FWAIT/FNCLEX/FNINIT
	Faults       uint64 // #PF/#GP/#SS an emulated instruction raised, delivered to the guest
	PageWalks    uint64 // guest page-table walks the emulator made (a few per instruction)
}

// vecMF is the x87 floating-point error exception.
const vecMF = 16

// emulateX87 executes the x87 control instructions the kernel's FPU code
// uses (SDM Vol. 2A "WAIT/FWAIT", "FCLEX/FNCLEX", "FINIT/FNINIT"):
// FWAIT (9B) raises #MF if an unmasked exception is pending (FSW.ES) and
// is otherwise a no-op; FNCLEX (DB E2) clears the exception flags, ES and
// B; FNINIT (DB E3) resets the control, status and tag words.
func emulateX87(c emuCPU, g *guestVirt, b []byte, regs *kvm.Regs, sregs *kvm.Sregs) (bool, error) {
	var n uint64
	switch {
	case len(b) >= 1 && b[0] == 0x9b:
		n = 1
	case len(b) >= 2 && b[0] == 0xdb && (b[1] == 0xe2 || b[1] == 0xe3):
		n = 2
	default:
		return false, nil
	}
	f, err := c.GetFPU()
	if err != nil {
		return true, err
	}
	const fswES = 1 << 7
	switch {
	case n == 1:
		if f.FSW&fswES != 0 && sregs.CR0&(1<<5) != 0 { // CR0.NE: native #MF reporting
			return true, deliverException(c, g, regs, sregs, event{vec: vecMF, ret: regs.RIP})
		}
	case b[1] == 0xe2:
		f.FSW &^= 0x80ff | 0x8000
		if err := c.SetFPU(f); err != nil {
			return true, err
		}
	default:
		f.FCW, f.FSW, f.FTWX, f.LastOpcode, f.LastIP, f.LastDP = 0x37f, 0, 0, 0, 0, 0
		if err := c.SetFPU(f); err != nil {
			return true, err
		}
	}
	regs.RIP += n
	return true, c.SetRegs(*regs)
}

// msrKernelGSBase is IA32_KERNEL_GS_BASE, the value SWAPGS exchanges with
// GS.base (SDM Vol. 4, Table 2-2).
const msrKernelGSBase = 0xc0000102

// emulateGroup7 executes the 0F 01 /reg-free forms the kernel uses on
// every entry: CLAC (0F 01 CA) and STAC (0F 01 CB) clear/set RFLAGS.AC
// (SDM Vol. 2A "CLAC"/Vol. 2B "STAC"); SWAPGS (0F 01 F8) exchanges GS.base
// with IA32_KERNEL_GS_BASE (Vol. 2B "SWAPGS"). All three are privileged:
// at CPL 3 they raise #UD (CLAC/STAC) or #GP(0) (SWAPGS), as the CPU does.
func emulateGroup7(c emuCPU, g *guestVirt, modrm byte, regs *kvm.Regs, sregs *kvm.Sregs) (bool, error) {
	switch modrm {
	case 0xca, 0xcb:
		if cpl(sregs) != 0 {
			return true, deliverException(c, g, regs, sregs, event{vec: vecUD, ret: regs.RIP})
		}
	case 0xf8:
		if cpl(sregs) != 0 {
			return true, &guestFault{vec: vecGP, why: "SWAPGS at CPL 3"}
		}
	default:
		return false, nil
	}
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
		if len(kgs) != 1 {
			return true, fmt.Errorf("KVM returned %d values for IA32_KERNEL_GS_BASE", len(kgs))
		}
		gs := sregs.GS.Base
		sregs.GS.Base = kgs[0].Data
		if err := c.SetMSRs(kvm.MSREntry{Index: msrKernelGSBase, Data: gs}); err != nil {
			return true, err
		}
		if err := c.SetSregs(*sregs); err != nil {
			return true, err
		}
	}
	regs.RIP += 3
	return true, c.SetRegs(*regs)
}

// emulateFailure handles an emulation-failure exit: it finishes the
// instruction at RIP if it is one we know, and returns errNotEmulated
// (wrapped with the instruction bytes) otherwise. An exception the
// instruction raises on a guest access (#PF, #GP, #SS) is delivered to the
// guest, as the CPU would; one raised while delivering that one (a double
// fault) fails the VM.
func emulateFailure(c emuCPU, mem []byte, ie *kvm.InternalErrorExit, st *EmulationStats) error {
	regs, err := c.GetRegs()
	if err != nil {
		return err
	}
	sregs, err := c.GetSregs()
	if err != nil {
		return err
	}
	g := newGuestVirt(mem, &regs, &sregs)
	defer func() { st.PageWalks += uint64(g.walks) }()
	long := sregs.EFER&eferLMA != 0 && sregs.CS.L != 0
	insn := ie.Insn
	if len(insn) == 0 || !long {
		if !long {
			if len(insn) == 0 { // best effort, for the message only
				if b := make([]byte, 15); g.read(sregs.CS.Base+regs.RIP, b, access{fetch: true}) == nil {
					insn = b
				}
			}
			return fmt.Errorf("%w: % x at %#x (not in 64-bit mode)", errNotEmulated, insn, regs.RIP)
		}
		fetch := access{fetch: true, user: cpl(&sregs) == 3}
		buf := make([]byte, 15)
		if err := g.read(regs.RIP, buf[:1], fetch); err != nil {
			if f, ok := asFault(err); ok {
				return deliverFault(c, g, regs, sregs, f, st)
			}
			return fmt.Errorf("%w: cannot fetch the instruction at %#x: %v", errNotEmulated, regs.RIP, err)
		}
		// The rest, best effort (it may cross into an unmapped page).
		for n := 15; n > 1; n = min(n-1, int(4096-regs.RIP%4096)) {
			if g.read(regs.RIP, buf[:n], fetch) == nil {
				break
			}
		}
		insn = buf
	}
	orig, origS := regs, sregs
	err = emulateInsn(c, g, insn, &regs, &sregs, st)
	if f, ok := asFault(err); ok {
		return deliverFault(c, g, orig, origS, f, st)
	}
	return err
}

// emulateInsn finishes insn, or returns errNotEmulated.
func emulateInsn(c emuCPU, g *guestVirt, insn []byte, regs *kvm.Regs, sregs *kvm.Sregs, st *EmulationStats) error {
	switch {
	case len(insn) >= 1 && insn[0] == 0xcc: // INT3: trap, saved RIP is the next instruction
		st.Breakpoints++
		return deliverException(c, g, regs, sregs, event{vec: vecBP, ret: regs.RIP + 1, soft: true})
	case len(insn) >= 2 && insn[0] == 0x0f && insn[1] == 0x0b: // UD2: fault, saved RIP is the UD2
		st.InvalidOps++
		return deliverException(c, g, regs, sregs, event{vec: vecUD, ret: regs.RIP})
	case len(insn) >= 2 && insn[0] == 0xcd: // INT imm8
		st.SoftwareInts++
		return deliverException(c, g, regs, sregs, event{vec: insn[1], ret: regs.RIP + 2, soft: true})
	}
	if len(insn) >= 3 && insn[0] == 0x0f && insn[1] == 0x01 {
		if ok, err := emulateGroup7(c, g, insn[2], regs, sregs); ok {
			st.Group7++
			return err
		}
	}
	if ok, err := emulateX87(c, g, insn, regs, sregs); ok {
		st.X87++
		return err
	}
	if ok, err := emulateBitCount(c, g, insn, regs, sregs); ok {
		st.BitCounts++
		return err
	}
	return fmt.Errorf("%w: % x at %#x", errNotEmulated, insn, regs.RIP)
}

// deliverFault delivers f, raised by the instruction at regs.RIP (a
// fault: the saved RIP is the instruction's, SDM Vol. 3A 6.5). The first
// event (INT3, INT n, UD2, #MF) is benign, so a fault in its delivery is
// handled serially (Table 6-5); a fault while delivering f would be a
// double fault, which the VMM does not emulate: the VM fails.
func deliverFault(c emuCPU, g *guestVirt, regs kvm.Regs, sregs kvm.Sregs, f *guestFault, st *EmulationStats) error {
	st.Faults++
	if f.vec == vecPF {
		sregs.CR2 = f.addr
	}
	code := f.code
	err := deliverException(c, g, &regs, &sregs, event{vec: f.vec, ret: regs.RIP, code: &code})
	if f2, ok := asFault(err); ok {
		return fmt.Errorf("%v while delivering %v at %#x: a double fault, which the VMM does not emulate", f2, f, regs.RIP)
	}
	return err
}

// asFault finds the exception a guest access raised in err's chain.
func asFault(err error) (*guestFault, bool) {
	var f *guestFault
	return f, errors.As(err, &f)
}

// event is one exception or interrupt to deliver.
type event struct {
	vec  uint8
	ret  uint64  // the saved RIP
	code *uint64 // the error code, for the exceptions that push one
	// soft: raised by INT n or INT3, whose gate's DPL the CPU checks
	// against the CPL (SDM Vol. 3A 6.12.1.1); for exceptions it does not.
	soft bool
}

// deliverException performs 64-bit mode event delivery of ev (SDM Vol. 3A
// 6.14). It changes *regs and *sregs (and the vCPU) only if it succeeds; a
// *guestFault it returns is an exception the delivery itself raised.
func deliverException(c emuCPU, g *guestVirt, regs *kvm.Regs, sregs *kvm.Sregs, ev event) error {
	r, s := *regs, *sregs
	vec := ev.vec
	// An IDT problem is #GP/#NP with the IDT flag and the vector in the
	// error code, EXT set unless INT n/INT3 raised the event (SDM 6.13).
	idtCode := uint64(vec)<<3 | 2
	if !ev.soft {
		idtCode |= 1
	}
	// IDT gate descriptor, 16 bytes (SDM Vol. 3A 6.14.1, Figure 6-8).
	if uint64(vec)*16+15 > uint64(s.IDT.Limit) {
		return &guestFault{vec: vecGP, code: idtCode, why: fmt.Sprintf("vector %d is beyond the IDT limit %#x", vec, s.IDT.Limit)}
	}
	var gate [16]byte
	if err := g.read(s.IDT.Base+uint64(vec)*16, gate[:], supervisorAccess); err != nil {
		return fmt.Errorf("reading IDT gate %d: %w", vec, err)
	}
	le := binary.LittleEndian
	offset := uint64(le.Uint16(gate[0:])) | uint64(le.Uint16(gate[6:]))<<16 | uint64(le.Uint32(gate[8:]))<<32
	selector := le.Uint16(gate[2:])
	ist := gate[4] & 7
	typ := gate[5] & 0xf
	gateDPL := uint16(gate[5] >> 5 & 3)
	if typ != 0xe && typ != 0xf {
		return &guestFault{vec: vecGP, code: idtCode, why: fmt.Sprintf("IDT gate %d is not a 64-bit interrupt/trap gate (attr %#x)", vec, gate[5])}
	}
	curCPL := cpl(&s)
	// Protection of exception- and interrupt-handler procedures (SDM Vol.
	// 3A 6.12.1.1): for INT n and INT3 the gate's DPL must be >= CPL, or
	// the CPU raises #GP with the gate in the error code. This is what
	// keeps ring 3 from raising, say, a page-fault or IPI vector itself.
	if ev.soft && gateDPL < curCPL {
		return &guestFault{vec: vecGP, code: idtCode, why: fmt.Sprintf("INT %d at CPL %d through a gate of DPL %d", vec, curCPL, gateDPL)}
	}
	if gate[5]&0x80 == 0 {
		return &guestFault{vec: vecNP, code: idtCode, why: fmt.Sprintf("IDT gate %d is not present", vec)}
	}
	newCS, err := loadCodeSegment(g, &s, selector)
	if err != nil {
		return err
	}
	newCPL := uint16(newCS.DPL)
	if newCPL > curCPL {
		return fmt.Errorf("IDT gate %d targets a less privileged code segment", vec)
	}
	oldSS, oldRSP := s.SS, r.RSP
	rsp := r.RSP
	switch {
	case ist != 0: // Interrupt Stack Table (SDM 6.14.5): TSS offset 0x24 + 8*(ist-1)
		var b [8]byte
		if err := g.read(s.TR.Base+0x24+8*uint64(ist-1), b[:], supervisorAccess); err != nil {
			return fmt.Errorf("reading IST%d from the TSS: %w", ist, err)
		}
		rsp = le.Uint64(b[:])
	case newCPL < curCPL: // privilege change: RSPn from the TSS, offset 4 + 8*n
		var b [8]byte
		if err := g.read(s.TR.Base+4+8*uint64(newCPL), b[:], supervisorAccess); err != nil {
			return fmt.Errorf("reading RSP%d from the TSS: %w", newCPL, err)
		}
		rsp = le.Uint64(b[:])
	}
	if newCPL < curCPL {
		// SS becomes a null selector with RPL = new CPL (SDM 6.14.4).
		s.SS = kvm.Segment{Selector: newCPL, Unusable: 1, DPL: uint8(newCPL), Type: 3, S: 1, Present: 1}
	}
	rsp &^= 0xf // the stack is 16-byte aligned before the pushes (SDM 6.14.2)
	frame := []uint64{ev.ret, uint64(s.CS.Selector), r.RFLAGS, oldRSP, uint64(oldSS.Selector)}
	if ev.code != nil {
		frame = append([]uint64{*ev.code}, frame...)
	}
	buf := make([]byte, 8*len(frame))
	for i, v := range frame {
		le.PutUint64(buf[8*i:], v)
	}
	rsp -= uint64(len(buf))
	// The pushes are made at the new CPL: user-mode only if the handler
	// runs at CPL 3 (SDM Vol. 3A 4.6).
	if err := g.write(rsp, buf, access{user: newCPL == 3, stack: true}); err != nil {
		return fmt.Errorf("pushing the exception frame at %#x: %w", rsp, err)
	}
	const (
		flagTF = 1 << 8
		flagIF = 1 << 9
		flagNT = 1 << 14
		flagRF = 1 << 16
		flagVM = 1 << 17
	)
	r.RFLAGS &^= flagTF | flagNT | flagRF | flagVM
	if typ == 0xe { // interrupt gate: interrupts off
		r.RFLAGS &^= flagIF
	}
	r.RSP = rsp
	r.RIP = offset
	s.CS = newCS
	if err := c.SetSregs(s); err != nil {
		return err
	}
	if err := c.SetRegs(r); err != nil {
		return err
	}
	*regs, *sregs = r, s
	return nil
}

// loadCodeSegment reads the 64-bit code segment descriptor for selector
// from the GDT (SDM Vol. 3A 3.4.5) into KVM's segment form.
func loadCodeSegment(g *guestVirt, sregs *kvm.Sregs, selector uint16) (kvm.Segment, error) {
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
	if err := g.read(sregs.GDT.Base+idx, b[:], supervisorAccess); err != nil {
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
