package vmm

// The instruction assist's privilege checks, without KVM: a fake vCPU and
// a hand-built 64-bit guest (page tables, GDT, IDT, TSS) in a Go slice.
// Each case runs emulateFailure on one instruction and checks where the
// guest ends up: the instruction's result, or the handler of the
// exception the CPU would raise, with the error code it would push.

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/hyperhq/hyperd-go/kvm"
)

// fakeCPU holds the vCPU state emulateFailure reads and sets.
type fakeCPU struct {
	regs  kvm.Regs
	sregs kvm.Sregs
	fpu   kvm.FPU
	kgs   uint64 // IA32_KERNEL_GS_BASE
}

func (c *fakeCPU) GetRegs() (kvm.Regs, error)   { return c.regs, nil }
func (c *fakeCPU) SetRegs(r kvm.Regs) error     { c.regs = r; return nil }
func (c *fakeCPU) GetSregs() (kvm.Sregs, error) { return c.sregs, nil }
func (c *fakeCPU) SetSregs(s kvm.Sregs) error   { c.sregs = s; return nil }
func (c *fakeCPU) GetFPU() (kvm.FPU, error)     { return c.fpu, nil }
func (c *fakeCPU) SetFPU(f kvm.FPU) error       { c.fpu = f; return nil }
func (c *fakeCPU) GetMSRs(idx ...uint32) ([]kvm.MSREntry, error) {
	out := make([]kvm.MSREntry, len(idx))
	for i, n := range idx {
		out[i] = kvm.MSREntry{Index: n}
		if n == msrKernelGSBase {
			out[i].Data = c.kgs
		}
	}
	return out, nil
}
func (c *fakeCPU) SetMSRs(es ...kvm.MSREntry) error {
	for _, e := range es {
		if e.Index == msrKernelGSBase {
			c.kgs = e.Data
		}
	}
	return nil
}

// The test guest's layout: 512 KiB of RAM, the first 2 MiB identity mapped
// with 4 KiB pages (the pages past RAM map outside it).
const (
	tgMemSize  = 512 << 10
	tgGDT      = 0x1000
	tgIDT      = 0x2000
	tgTSS      = 0x3000
	tgPML4     = 0x10000
	tgPDPT     = 0x11000
	tgPD       = 0x12000
	tgPT       = 0x13000
	tgKStack   = 0x8000  // RSP0 stack page (supervisor, writable): top 0x9000
	tgISTStack = 0xa000  // IST1 stack page: top 0xb000
	tgKText    = 0x30000 // handlers (supervisor)
	tgUCode    = 0x40000 // user code page
	tgUStack   = 0x41000 // user stack page (user, writable)
	tgURO      = 0x42000 // user read-only page
	tgSuper    = 0x43000 // supervisor data page
	tgAbsent   = 0x44000 // not-present page
	tgKRO      = 0x45000 // supervisor read-only page

	selKCode = 0x08
	selKData = 0x10
	selUCode = 0x1b
	selUData = 0x23
)

// handler is where vector v's handler lives.
func handler(v uint8) uint64 { return tgKText + 0x10*uint64(v) }

// testGuest is guest memory plus a vCPU state at CPL 3 or 0.
type testGuest struct {
	mem []byte
	cpu *fakeCPU
}

// pte is the leaf flags of the page at pa (identity mapped).
func (tg *testGuest) setPage(pa, flags uint64) {
	binary.LittleEndian.PutUint64(tg.mem[tgPT+8*(pa>>12):], pa|flags)
}

// setGate installs vector v's 64-bit interrupt gate with dpl and ist.
func (tg *testGuest) setGate(v uint8, dpl, ist byte) {
	g := tg.mem[tgIDT+16*uint64(v):]
	h := handler(v)
	le := binary.LittleEndian
	le.PutUint16(g[0:], uint16(h))
	le.PutUint16(g[2:], selKCode)
	g[4], g[5] = ist, 0x8e|dpl<<5
	le.PutUint16(g[6:], uint16(h>>16))
	le.PutUint32(g[8:], uint32(h>>32))
}

func newTestGuest(user bool) *testGuest {
	tg := &testGuest{mem: make([]byte, tgMemSize), cpu: &fakeCPU{}}
	le := binary.LittleEndian
	le.PutUint64(tg.mem[tgPML4:], tgPDPT|7)
	le.PutUint64(tg.mem[tgPDPT:], tgPD|7)
	le.PutUint64(tg.mem[tgPD:], tgPT|7)
	for pa := uint64(0); pa < 2<<20; pa += 4096 {
		tg.setPage(pa, pteP|pteRW) // supervisor, writable
	}
	tg.setPage(tgUCode, pteP|pteUS)
	tg.setPage(tgUStack, pteP|pteRW|pteUS)
	tg.setPage(tgURO, pteP|pteUS)
	tg.setPage(tgAbsent, 0)
	tg.setPage(tgKRO, pteP)
	le.PutUint64(tg.mem[tgGDT+0x08:], 0x00209a0000000000) // kernel code64
	le.PutUint64(tg.mem[tgGDT+0x10:], 0x0000920000000000) // kernel data
	le.PutUint64(tg.mem[tgGDT+0x18:], 0x0020fa0000000000) // user code64, DPL 3
	le.PutUint64(tg.mem[tgGDT+0x20:], 0x0000f20000000000) // user data, DPL 3
	le.PutUint64(tg.mem[tgTSS+4:], tgKStack+0x1000)       // RSP0
	le.PutUint64(tg.mem[tgTSS+0x24:], tgISTStack+0x1000)  // IST1
	for _, v := range []uint8{vecUD, vecNP, vecGP, vecPF, vecSS} {
		tg.setGate(v, 0, 0)
	}
	tg.setGate(vecBP, 3, 0)
	tg.setGate(0x80, 0, 0)
	le.PutUint32(tg.mem[tgUStack+0x100:], 0x0f0f)
	le.PutUint32(tg.mem[tgSuper+0x100:], 0xffff)

	s := &tg.cpu.sregs
	s.CR0, s.CR3, s.CR4, s.EFER = 1|cr0WP|cr0PG, tgPML4, 1<<5, 1<<8|eferLMA|eferNXE
	s.GDT = kvm.DTable{Base: tgGDT, Limit: 0x27}
	s.IDT = kvm.DTable{Base: tgIDT, Limit: 0xfff}
	s.TR = kvm.Segment{Base: tgTSS, Limit: 0x67, Type: 0xb, Present: 1}
	if user {
		s.CS = kvm.Segment{Limit: 0xffffffff, Selector: selUCode, Type: 0xb, Present: 1, S: 1, L: 1, G: 1, DPL: 3}
		s.SS = kvm.Segment{Limit: 0xffffffff, Selector: selUData, Type: 0x3, Present: 1, S: 1, DB: 1, G: 1, DPL: 3}
		tg.cpu.regs = kvm.Regs{RIP: tgUCode + 0x10, RSP: tgUStack + 0x800, RFLAGS: 0x202}
	} else {
		s.CS = kvm.Segment{Limit: 0xffffffff, Selector: selKCode, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
		s.SS = kvm.Segment{Limit: 0xffffffff, Selector: selKData, Type: 0x3, Present: 1, S: 1, DB: 1, G: 1}
		tg.cpu.regs = kvm.Regs{RIP: tgKText + 0x800, RSP: tgKStack + 0x800, RFLAGS: 0x2}
	}
	return tg
}

// popcntAt is POPCNT EAX, [RBX] (F3 0F B8 03).
var popcntAt = []byte{0xf3, 0x0f, 0xb8, 0x03}

// TestEmulatePrivilege: the instruction assist raises the exception the
// CPU would (SDM Vol. 3A 4.6 "Access Rights", 4.7 "Page-Fault Exceptions",
// 6.12.1.1 "Protection of Exception- and Interrupt-Handler Procedures")
// instead of doing for ring 3 what ring 3 may not do.
func TestEmulatePrivilege(t *testing.T) {
	type want struct {
		vec     int    // the exception delivered, or -1: the instruction completed
		code    uint64 // its error code (for #PF, #GP, #NP)
		cr2     uint64
		rax     uint64 // when the instruction completed
		errText string // the VM fails with this
	}
	none := -1
	cases := []struct {
		name  string
		user  bool
		setup func(tg *testGuest)
		insn  []byte // nil: fetched from guest memory at RIP
		want  want
	}{
		{"user popcnt of a user page", true, func(tg *testGuest) { tg.cpu.regs.RBX = tgUStack + 0x100 }, popcntAt,
			want{vec: none, rax: 8}},
		{"user popcnt of a supervisor page: #PF P|U", true, func(tg *testGuest) { tg.cpu.regs.RBX = tgSuper + 0x100 }, popcntAt,
			want{vec: vecPF, code: pfPresent | pfUser, cr2: tgSuper + 0x100}},
		{"user popcnt under a supervisor page-directory entry: #PF P|U", true, func(tg *testGuest) {
			binary.LittleEndian.PutUint64(tg.mem[tgPD:], tgPT|pteP|pteRW) // U/S=0 above the user leaf
			tg.cpu.regs.RBX = tgUStack + 0x100
		}, popcntAt, want{vec: vecPF, code: pfPresent | pfUser, cr2: tgUStack + 0x100}},
		{"user popcnt of a not-present page: #PF U", true, func(tg *testGuest) { tg.cpu.regs.RBX = tgAbsent + 8 }, popcntAt,
			want{vec: vecPF, code: pfUser, cr2: tgAbsent + 8}},
		{"popcnt of a non-canonical address: #GP(0)", true, func(tg *testGuest) { tg.cpu.regs.RBX = 1 << 47 }, popcntAt,
			want{vec: vecGP, code: 0}},
		{"user fetch from a supervisor page: #PF P|U|I", true, func(tg *testGuest) {
			tg.cpu.regs.RIP = tgSuper
			tg.mem[tgSuper] = 0xcc
		}, nil, want{vec: vecPF, code: pfPresent | pfUser | pfFetch, cr2: tgSuper}},
		{"user INT3 through a DPL 3 gate", true, nil, []byte{0xcc}, want{vec: vecBP}},
		{"user INT3 through a DPL 0 gate: #GP(IDT|3)", true, func(tg *testGuest) { tg.setGate(vecBP, 0, 0) }, []byte{0xcc},
			want{vec: vecGP, code: vecBP<<3 | 2}},
		{"user INT 0x80 through a DPL 0 gate: #GP(IDT|0x80)", true, nil, []byte{0xcd, 0x80},
			want{vec: vecGP, code: 0x80<<3 | 2}},
		{"user INT 14 (the page-fault gate, DPL 0): #GP", true, nil, []byte{0xcd, 0x0e},
			want{vec: vecGP, code: 14<<3 | 2}},
		{"user UD2: #UD, the gate's DPL is not checked for exceptions", true, nil, []byte{0x0f, 0x0b}, want{vec: vecUD}},
		{"user SWAPGS: #GP(0)", true, nil, []byte{0x0f, 0x01, 0xf8}, want{vec: vecGP}},
		{"user STAC: #UD", true, nil, []byte{0x0f, 0x01, 0xcb}, want{vec: vecUD}},
		{"kernel INT3 pushing to a read-only stack, CR0.WP=1: #PF P|W", false, func(tg *testGuest) {
			tg.cpu.regs.RSP = tgKRO + 0x800
			tg.setGate(vecPF, 0, 1) // the #PF handler runs on IST1
		}, []byte{0xcc}, want{vec: vecPF, code: pfPresent | pfWrite, cr2: tgKRO + 0x800 - 40}},
		{"kernel INT3 pushing to a read-only stack, CR0.WP=0", false, func(tg *testGuest) {
			tg.cpu.regs.RSP = tgKRO + 0x800
			tg.cpu.sregs.CR0 &^= cr0WP
		}, []byte{0xcc}, want{vec: vecBP}},
		{"kernel popcnt of a user page with SMAP, AC=0: #PF P", false, func(tg *testGuest) {
			tg.cpu.sregs.CR4 |= cr4SMAP
			tg.cpu.regs.RBX = tgUStack + 0x100
		}, popcntAt, want{vec: vecPF, code: pfPresent, cr2: tgUStack + 0x100}},
		{"kernel popcnt of a user page with SMAP, AC=1", false, func(tg *testGuest) {
			tg.cpu.sregs.CR4 |= cr4SMAP
			tg.cpu.regs.RFLAGS |= flagAC
			tg.cpu.regs.RBX = tgUStack + 0x100
		}, popcntAt, want{vec: none, rax: 8}},
		{"a fault while delivering the fault fails the VM", true, func(tg *testGuest) {
			tg.mem[tgIDT+16*vecPF+5] &^= 0x80 // #PF gate not present
			tg.cpu.regs.RBX = tgSuper
		}, popcntAt, want{errText: "double fault"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTestGuest(tc.user)
			if tc.setup != nil {
				tc.setup(tg)
			}
			if tc.insn != nil {
				copy(tg.mem[tg.cpu.regs.RIP:], tc.insn)
			}
			before := tg.cpu.regs
			var st EmulationStats
			err := emulateFailure(tg.cpu, tg.mem, &kvm.InternalErrorExit{Insn: tc.insn}, &st)
			w := tc.want
			if w.errText != "" {
				if err == nil || !strings.Contains(err.Error(), w.errText) {
					t.Fatalf("err = %v, want one saying %q", err, w.errText)
				}
				if tg.cpu.regs != before {
					t.Errorf("a failed emulation changed the registers: %+v", tg.cpu.regs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r, s := tg.cpu.regs, tg.cpu.sregs
			if w.vec == none {
				if r.RAX != w.rax || r.RIP != before.RIP+uint64(len(tc.insn)) {
					t.Errorf("rax %#x rip %#x, want %#x and the next instruction", r.RAX, r.RIP, w.rax)
				}
				return
			}
			if r.RIP != handler(uint8(w.vec)) {
				t.Fatalf("rip = %#x, want the handler of vector %d (%#x); stats %+v", r.RIP, w.vec, handler(uint8(w.vec)), st)
			}
			if s.CS.Selector != selKCode {
				t.Errorf("cs = %#x, want the kernel's", s.CS.Selector)
			}
			if w.vec == vecGP || w.vec == vecPF || w.vec == vecNP {
				if got := binary.LittleEndian.Uint64(tg.mem[r.RSP:]); got != w.code {
					t.Errorf("error code pushed = %#x, want %#x", got, w.code)
				}
				if saved := binary.LittleEndian.Uint64(tg.mem[r.RSP+8:]); saved != before.RIP {
					t.Errorf("saved rip = %#x, want the faulting instruction %#x", saved, before.RIP)
				}
			}
			if w.vec == vecPF && s.CR2 != w.cr2 {
				t.Errorf("cr2 = %#x, want %#x", s.CR2, w.cr2)
			}
			if tc.user && (r.RSP < tgKStack || r.RSP >= tgKStack+0x1000) && (r.RSP < tgISTStack || r.RSP >= tgISTStack+0x1000) {
				t.Errorf("rsp = %#x, want the kernel stack from the TSS", r.RSP)
			}
		})
	}
}

// TestPageWalkAccessedDirty: the walk sets the accessed flag of every entry
// it uses and the dirty flag of a page it writes, as the CPU does (SDM Vol.
// 3A 4.8), and leaves the dirty flag of a page it only reads.
func TestPageWalkAccessedDirty(t *testing.T) {
	for _, write := range []bool{false, true} {
		tg := newTestGuest(false)
		g := newGuestVirt(tg.mem, &tg.cpu.regs, &tg.cpu.sregs)
		var b [8]byte
		var err error
		if write {
			err = g.write(tgUStack+8, b[:], access{})
		} else {
			err = g.read(tgUStack+8, b[:], access{})
		}
		if err != nil {
			t.Fatal(err)
		}
		le := binary.LittleEndian
		for _, e := range []uint64{tgPML4, tgPDPT, tgPD, tgPT + 8*(tgUStack>>12)} {
			if le.Uint64(tg.mem[e:])&pteA == 0 {
				t.Errorf("write=%v: entry at %#x has no accessed flag", write, e)
			}
		}
		if d := le.Uint64(tg.mem[tgPT+8*(tgUStack>>12):])&pteD != 0; d != write {
			t.Errorf("write=%v: dirty flag %v", write, d)
		}
	}
}
