package vmm

// FuzzEmulate: the instruction assist (decode.go, emulate.go, guestmem.go)
// on hostile input. The guest chooses the instruction bytes, its registers,
// control registers, descriptor tables and every byte of its memory
// (page tables included); the VMM must not panic, must touch no host byte
// outside the guest memory slice, must do bounded work, and must change no
// vCPU state when it fails.
//
//	go test -fuzz=FuzzEmulate -fuzztime=30s ./vmm

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/hyperhq/hyperd-go/kvm"
)

// maxWalksPerInsn bounds the page walks one emulated instruction may make:
// a fetch (1 + at most 14 retries of at most 2 pages), the instruction's
// operand (2), and two event deliveries (IDT, GDT, TSS and the frame: 2
// each), with room to spare.
const maxWalksPerInsn = 64

// fuzzGuard is the size of the canary regions around the guest memory.
const fuzzGuard = 4096

// fuzzField sets register or control-register field i%len of the vCPU.
var fuzzFields = []func(c *fakeCPU, v uint64){
	func(c *fakeCPU, v uint64) { c.regs.RIP = v },
	func(c *fakeCPU, v uint64) { c.regs.RSP = v },
	func(c *fakeCPU, v uint64) { c.regs.RAX = v },
	func(c *fakeCPU, v uint64) { c.regs.RBX = v },
	func(c *fakeCPU, v uint64) { c.regs.RSI = v },
	func(c *fakeCPU, v uint64) { c.regs.R13 = v },
	func(c *fakeCPU, v uint64) { c.regs.RFLAGS = v },
	func(c *fakeCPU, v uint64) { c.sregs.CR0 = v },
	func(c *fakeCPU, v uint64) { c.sregs.CR3 = v },
	func(c *fakeCPU, v uint64) { c.sregs.CR4 = v },
	func(c *fakeCPU, v uint64) { c.sregs.EFER = v },
	func(c *fakeCPU, v uint64) { c.sregs.IDT = kvm.DTable{Base: v >> 16, Limit: uint16(v)} },
	func(c *fakeCPU, v uint64) { c.sregs.GDT = kvm.DTable{Base: v >> 16, Limit: uint16(v)} },
	func(c *fakeCPU, v uint64) { c.sregs.TR.Base = v },
	func(c *fakeCPU, v uint64) {
		c.sregs.CS.Selector, c.sregs.CS.DPL, c.sregs.CS.L = uint16(v), uint8(v>>16)&3, uint8(v>>24)&1
	},
	func(c *fakeCPU, v uint64) { c.sregs.FS.Base = v },
	func(c *fakeCPU, v uint64) { c.sregs.GS.Base = v },
	func(c *fakeCPU, v uint64) { c.fpu.FSW = uint16(v) },
}

// fuzzPatch is a memory patch: offset (4 bytes LE, taken modulo the
// memory size), length (1 byte), data.
func fuzzPatch(off uint32, data []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, off)
	return append(append(b, byte(len(data))), data...)
}

// fuzzState is a state record: field index, value (8 bytes LE).
func fuzzState(field byte, v uint64) []byte {
	return binary.LittleEndian.AppendUint64([]byte{field}, v)
}

func FuzzEmulate(f *testing.F) {
	le := binary.LittleEndian
	user := fuzzState(0xff, 0) // any record: the first byte of state picks the CPL below
	rbx := func(v uint64) []byte { return fuzzState(3, v) }
	seeds := []struct {
		insn, state, mem []byte
	}{
		{popcntAt, append(user, rbx(tgUStack+0x100)...), nil},
		{popcntAt, append(user, rbx(tgSuper+0x100)...), nil},
		{popcntAt, append(user, rbx(1<<47)...), nil},
		{[]byte{0xf3, 0x48, 0x0f, 0xbd, 0x04, 0x9d, 0x00, 0x10, 0x00, 0x00}, append(user, rbx(0x41)...), nil}, // lzcnt rax,[rbx*4+0x1000]
		{[]byte{0x66, 0xf3, 0x0f, 0xbc, 0x05, 0xf0, 0x0f, 0x00, 0x00}, nil, nil},                              // tzcnt ax,[rip+0xff0]
		{[]byte{0x65, 0xf3, 0x41, 0x0f, 0xb8, 0x45, 0x08}, fuzzState(16, tgSuper), nil},                       // popcnt eax,gs:[r13+8]
		{[]byte{0xcc}, user, nil},
		{[]byte{0xcc}, nil, nil},
		{[]byte{0xcd, 0x80}, user, nil},
		{[]byte{0xcd, 0x0e}, user, nil},
		{[]byte{0x0f, 0x0b}, user, nil},
		{[]byte{0x0f, 0x01, 0xf8}, nil, nil},
		{[]byte{0x0f, 0x01, 0xcb}, user, nil},
		{[]byte{0xdb, 0xe3}, nil, nil},
		{[]byte{0x9b}, append(fuzzState(17, 0x80), fuzzState(7, 1|1<<5|cr0PG)...), nil},
		{nil, append(user, fuzzState(0, tgSuper)...), fuzzPatch(tgSuper, []byte{0xcc})},
		{nil, user, fuzzPatch(tgUCode+0x10, []byte{0xcd, 0x03})},
		{[]byte{0xcc}, fuzzState(1, tgKRO+0x800), nil},
		{[]byte{0xcc}, fuzzState(9, 1<<5|cr4LA57), nil},
		{popcntAt, rbx(0x100000), fuzzPatch(tgPD, le.AppendUint64(nil, pteP|pteRW|ptePS|1<<13))},
		{[]byte{0xcc}, fuzzState(11, tgIDT<<16|0xff), fuzzPatch(tgIDT+16*vecBP+5, []byte{0x0e})},
	}
	for _, s := range seeds {
		f.Add(s.insn, s.state, s.mem)
	}
	// The pristine guests: memory is copied from them for every input.
	pristine := [2]*testGuest{newTestGuest(false), newTestGuest(true)}
	size := len(pristine[0].mem)
	buf := make([]byte, fuzzGuard+size+fuzzGuard)

	f.Fuzz(func(t *testing.T, insn, state, patches []byte) {
		if len(insn) > 15 {
			insn = insn[:15] // KVM reports at most 15 bytes
		}
		isUser := 0
		if len(state) > 0 && state[0] == 0xff {
			isUser = 1
		}
		tg := pristine[isUser]
		for i := range fuzzGuard {
			buf[i], buf[len(buf)-1-i] = 0xa5, 0x5a
		}
		mem := buf[fuzzGuard : fuzzGuard+size : fuzzGuard+size]
		copy(mem, tg.mem)
		cpu := *tg.cpu
		for p := state; len(p) >= 9; p = p[9:] {
			fuzzFields[int(p[0])%len(fuzzFields)](&cpu, le.Uint64(p[1:]))
		}
		for p := patches; len(p) >= 5; {
			off, n := int(le.Uint32(p)%uint32(size)), int(p[4])
			p = p[5:]
			n = min(n, len(p), size-off)
			copy(mem[off:], p[:n])
			p = p[n:]
		}
		before := cpu
		var st EmulationStats
		err := emulateFailure(&cpu, mem, &kvm.InternalErrorExit{Insn: insn}, &st)
		for i := range fuzzGuard {
			if buf[i] != 0xa5 || buf[len(buf)-1-i] != 0x5a {
				t.Fatalf("the emulator wrote outside the guest memory slice (guard byte %d)", i)
			}
		}
		if st.PageWalks > maxWalksPerInsn {
			t.Fatalf("%d page walks for one instruction (bound %d)", st.PageWalks, maxWalksPerInsn)
		}
		if err != nil && (cpu.regs != before.regs || cpu.sregs != before.sregs || cpu.kgs != before.kgs ||
			!bytes.Equal(cpu.fpu.FPR[0][:], before.fpu.FPR[0][:]) || cpu.fpu.FCW != before.fpu.FCW) {
			t.Fatalf("the emulation failed (%v) but changed the vCPU state", err)
		}
	})
}
