package vmm

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/hyperhq/hyperd-go/kvm"
)

// Guest virtual memory as the instruction assist (emulate.go) sees it: a
// software walk of the guest's page tables with the access-rights checks
// the CPU makes (Intel SDM Vol. 3A 4.5 "4-Level Paging and 5-Level
// Paging", 4.6 "Access Rights", 4.7 "Page-Fault Exceptions").
//
// KVM_TRANSLATE cannot do this: on x86 it walks as a supervisor read and
// always answers writeable=1, usermode=0, so a guest at CPL 3 could have
// the VMM read or write a supervisor or read-only page for it. Every
// access here names who makes it (user or supervisor, implicit or not)
// and what it is (read, write, fetch); a violation is a *guestFault the
// emulator delivers to the guest as the CPU would (#PF with its error
// code, #GP/#SS for a non-canonical address). Every byte touched is inside
// the guest memory slice: table entries and data are bounds-checked
// against it, and an address outside it fails the VM.

// Exception vectors raised by memory accesses (SDM Vol. 3A, Table 6-1).
const (
	vecNP = 11 // segment not present
	vecSS = 12 // stack fault
	vecGP = 13 // general protection
	vecPF = 14 // page fault
)

// Page-fault error code bits (SDM Vol. 3A 4.7, Figure 4-12).
const (
	pfPresent = 1 << 0 // 0: not-present page; 1: protection violation
	pfWrite   = 1 << 1
	pfUser    = 1 << 2 // a user-mode access
	pfRsvd    = 1 << 3 // a reserved bit set in a paging-structure entry
	pfFetch   = 1 << 4 // an instruction fetch (reported with NXE or SMEP)
)

// Control-register, EFER and paging-entry bits (SDM Vol. 3A 2.5, 4.5).
const (
	cr0WP   = 1 << 16
	cr0PG   = 1 << 31
	cr4LA57 = 1 << 12
	cr4SMEP = 1 << 20
	cr4SMAP = 1 << 21
	eferLMA = 1 << 10
	eferNXE = 1 << 11
	flagAC  = 1 << 18

	pteP    = 1 << 0
	pteRW   = 1 << 1
	pteUS   = 1 << 2
	pteA    = 1 << 5
	pteD    = 1 << 6
	ptePS   = 1 << 7
	pteXD   = 1 << 63
	pteAddr = 0x000ffffffffff000 // bits 51:12
)

// guestFault is an exception a guest access raised. The emulator delivers
// it to the guest; it is not a VMM failure.
type guestFault struct {
	vec  uint8
	code uint64 // the error code the exception pushes
	addr uint64 // the faulting linear address: CR2 for #PF
	why  string
}

func (f *guestFault) Error() string {
	if f.vec == vecPF {
		return fmt.Sprintf("#PF (error code %#x) at %#x: %s", f.code, f.addr, f.why)
	}
	return fmt.Sprintf("exception %d (error code %#x): %s", f.vec, f.code, f.why)
}

// access says who makes a memory access and what it is (SDM Vol. 3A 4.6).
type access struct {
	write bool
	fetch bool
	// user: a user-mode access, one made at CPL 3 that is not an implicit
	// supervisor-mode access.
	user bool
	// implicit: an implicit supervisor-mode access (GDT, IDT, TSS reads
	// during event delivery), made with supervisor rights at any CPL
	// and checked by SMAP whatever RFLAGS.AC says.
	implicit bool
	// stack: through SS; a non-canonical address raises #SS, not #GP.
	stack bool
}

// dataAccess is an explicit data access at the guest's CPL.
func dataAccess(sregs *kvm.Sregs, write bool) access {
	return access{write: write, user: cpl(sregs) == 3}
}

// supervisorAccess is an implicit supervisor-mode read (descriptor tables, TSS).
var supervisorAccess = access{implicit: true}

// cpl is the current privilege level: CS.RPL in 64-bit mode.
func cpl(sregs *kvm.Sregs) uint16 { return sregs.CS.Selector & 3 }

// guestVirt reads and writes guest memory at linear addresses with the
// paging mode and rights of one vCPU state.
type guestVirt struct {
	mem           []byte
	cr0, cr3, cr4 uint64
	efer          uint64
	ac            bool // RFLAGS.AC: SMAP lets explicit supervisor accesses reach user pages
	walks         int  // page walks made (the fuzz test bounds the work per instruction)
	aligned       bool // mem starts 8-byte aligned: entries can be updated atomically
}

func newGuestVirt(mem []byte, regs *kvm.Regs, sregs *kvm.Sregs) *guestVirt {
	return &guestVirt{
		mem: mem, cr0: sregs.CR0, cr3: sregs.CR3, cr4: sregs.CR4, efer: sregs.EFER,
		ac:      regs.RFLAGS&flagAC != 0,
		aligned: len(mem) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(mem)))%8 == 0,
	}
}

// entry returns the paging-structure entry at guest physical address pa
// (8-byte aligned) as a pointer into mem, or an error if it is outside RAM.
func (g *guestVirt) entry(pa uint64) (*uint64, error) {
	if !g.aligned || pa%8 != 0 || pa >= uint64(len(g.mem)) || uint64(len(g.mem))-pa < 8 {
		return nil, fmt.Errorf("paging-structure entry at %#x is outside RAM", pa)
	}
	return (*uint64)(unsafe.Pointer(&g.mem[pa])), nil
}

// translate walks the guest's page tables for linear address va and
// checks the access against the rights the walk accumulates (SDM Vol. 3A
// 4.6.1: a page is user-accessible only if U/S=1 at every level, writable
// only if R/W=1 at every level, executable only if XD=0 at every level).
// It sets the accessed flags it passes and the dirty flag of a page it
// writes, as the CPU does (4.8), with compare-and-swap so that an entry
// the guest changes meanwhile is never overwritten with a stale value.
func (g *guestVirt) translate(va uint64, acc access) (uint64, error) {
	if g.cr0&cr0PG == 0 {
		return va, nil // paging off: linear is physical
	}
	if g.efer&eferLMA == 0 {
		return 0, fmt.Errorf("the guest uses 32-bit or PAE paging, which the VMM's page walker does not implement")
	}
	levels := 4
	if g.cr4&cr4LA57 != 0 {
		levels = 5
	}
	// Canonical addresses (SDM Vol. 1 3.3.7.1): bits 63..47 (or 56) equal.
	shift := 64 - (12 + 9*levels)
	if uint64(int64(va<<shift)>>shift) != va {
		vec := uint8(vecGP)
		if acc.stack {
			vec = vecSS
		}
		return 0, &guestFault{vec: vec, addr: va, why: fmt.Sprintf("non-canonical address %#x", va)}
	}
	for range 4 {
		pa, done, err := g.walk(va, levels, acc)
		if done || err != nil {
			return pa, err
		}
	}
	return 0, fmt.Errorf("the page tables for %#x kept changing during the walk", va)
}

// walk makes one walk; done is false if an entry changed before its
// accessed/dirty flags could be set (the caller walks again).
func (g *guestVirt) walk(va uint64, levels int, acc access) (pa uint64, done bool, err error) {
	g.walks++
	var code uint64
	if acc.write {
		code |= pfWrite
	}
	if acc.user {
		code |= pfUser
	}
	if acc.fetch && (g.efer&eferNXE != 0 || g.cr4&cr4SMEP != 0) {
		code |= pfFetch
	}
	fault := func(extra uint64, why string) (uint64, bool, error) {
		return 0, true, &guestFault{vec: vecPF, code: code | extra, addr: va, why: why}
	}
	var (
		ptrs     [5]*uint64
		vals     [5]uint64
		user, rw = true, true
		xd       bool
		table    = g.cr3 & pteAddr
		n        int
	)
levels:
	for level := levels; level >= 1; level-- {
		p, err := g.entry(table + 8*(va>>(12+9*(level-1))&511))
		if err != nil {
			return 0, true, err
		}
		e := atomic.LoadUint64(p)
		ptrs[n], vals[n] = p, e
		n++
		if e&pteP == 0 {
			return fault(0, fmt.Sprintf("not present (level %d entry %#x)", level, e))
		}
		if e&pteXD != 0 && g.efer&eferNXE == 0 {
			return fault(pfPresent|pfRsvd, fmt.Sprintf("XD set without EFER.NXE (level %d entry %#x)", level, e))
		}
		user = user && e&pteUS != 0
		rw = rw && e&pteRW != 0
		xd = xd || e&pteXD != 0
		large := e&ptePS != 0 && level <= 3
		switch {
		case e&ptePS != 0 && level >= 4:
			return fault(pfPresent|pfRsvd, fmt.Sprintf("PS set in a level %d entry %#x", level, e))
		case large:
			size := uint64(1) << (12 + 9*(level-1)) // 1 GiB or 2 MiB
			// Bits 12 (PAT) .. log2(size)-1 above it: the low ones are reserved.
			if rsvd := e & (size - 1) & pteAddr &^ (1 << 12); rsvd != 0 {
				return fault(pfPresent|pfRsvd, fmt.Sprintf("reserved bits %#x in a large-page entry", rsvd))
			}
			pa = e&pteAddr&^(size-1) | va&(size-1)
			break levels
		case level == 1:
			pa = e&pteAddr | va&0xfff
		default:
			table = e & pteAddr
		}
	}

	// Access rights (SDM Vol. 3A 4.6.1).
	switch {
	case acc.user && !user:
		return fault(pfPresent, "a user-mode access to a supervisor-mode page")
	case acc.user && acc.write && !rw:
		return fault(pfPresent, "a user-mode write to a read-only page")
	case !acc.user && acc.write && !rw && g.cr0&cr0WP != 0:
		return fault(pfPresent, "a supervisor-mode write to a read-only page with CR0.WP=1")
	case !acc.user && !acc.fetch && user && g.cr4&cr4SMAP != 0 && (acc.implicit || !g.ac):
		return fault(pfPresent, "a supervisor-mode data access to a user-mode page with CR4.SMAP=1")
	case !acc.user && acc.fetch && user && g.cr4&cr4SMEP != 0:
		return fault(pfPresent, "a supervisor-mode fetch from a user-mode page with CR4.SMEP=1")
	case acc.fetch && xd && g.efer&eferNXE != 0:
		return fault(pfPresent, "an instruction fetch from an execute-disable page")
	}

	// Accessed and dirty flags (SDM Vol. 3A 4.8).
	for i := range n {
		want := vals[i] | pteA
		if i == n-1 && acc.write {
			want |= pteD
		}
		if want != vals[i] && !atomic.CompareAndSwapUint64(ptrs[i], vals[i], want) {
			return 0, false, nil
		}
	}
	return pa, true, nil
}

// phys returns the n bytes of guest memory at va (n does not cross a 4 KiB
// boundary), checked for acc.
func (g *guestVirt) phys(va uint64, n int, acc access) ([]byte, error) {
	pa, err := g.translate(va, acc)
	if err != nil {
		return nil, err
	}
	if pa >= uint64(len(g.mem)) || uint64(n) > uint64(len(g.mem))-pa {
		return nil, fmt.Errorf("guest virtual address %#x maps to %#x, outside RAM", va, pa)
	}
	return g.mem[pa : pa+uint64(n)], nil
}

// chunks translates the pages [va, va+n) spans, all of them before any
// byte is copied, so a fault on the second page leaves the first unwritten.
func (g *guestVirt) chunks(va uint64, n int, acc access) ([][]byte, error) {
	var out [][]byte
	for n > 0 {
		k := min(n, int(4096-va%4096))
		p, err := g.phys(va, k, acc)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
		n, va = n-k, va+uint64(k)
	}
	return out, nil
}

// read copies len(buf) bytes from linear address va.
func (g *guestVirt) read(va uint64, buf []byte, acc access) error {
	ps, err := g.chunks(va, len(buf), acc)
	if err != nil {
		return err
	}
	for _, p := range ps {
		buf = buf[copy(buf, p):]
	}
	return nil
}

// write copies buf to linear address va.
func (g *guestVirt) write(va uint64, buf []byte, acc access) error {
	acc.write = true
	ps, err := g.chunks(va, len(buf), acc)
	if err != nil {
		return err
	}
	for _, p := range ps {
		buf = buf[copy(p, buf):]
	}
	return nil
}
