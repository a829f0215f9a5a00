package vmm

import (
	"encoding/binary"
	"errors"
	"github.com/hyperhq/hyperd-go/internal/kvmtest"
	"runtime"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/kvm"
)

func needKVM(t *testing.T) *kvm.System {
	t.Helper()
	kvmtest.Need(t)
	s, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestGuestExceptionDelivery runs ring-0 64-bit code that executes INT3
// and UD2 with handlers installed in its IDT, then POPCNT with a register
// and a RIP-relative memory operand. Where KVM's emulator cannot
// execute them (software-nested KVM), the VMM delivers #BP/#UD itself; on
// hardware KVM the CPU does. Either way the handlers must see the frame
// the architecture defines and return to the right place.
func TestGuestExceptionDelivery(t *testing.T) {
	sys := needKVM(t)
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	mem, err := kvm.AllocateMemory(4 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer kvm.FreeMemory(mem)
	if err := vm.SetUserMemoryRegion(0, 0, 0, mem); err != nil {
		t.Fatal(err)
	}
	if sys.CheckExtension(kvm.CapExitOnEmulationFailure) > 0 {
		if err := vm.EnableCap(kvm.CapExitOnEmulationFailure, 1); err != nil {
			t.Fatal(err)
		}
	}
	le := binary.LittleEndian
	const gdt, idt, pml4, pdpt, pd = 0x500, 0x2000, 0x10000, 0x11000, 0x12000
	le.PutUint64(mem[gdt+8:], 0x00209a0000000000)  // 0x08 code64
	le.PutUint64(mem[gdt+16:], 0x0000920000000000) // 0x10 data
	le.PutUint64(mem[pml4:], pdpt|3)
	le.PutUint64(mem[pdpt:], pd|3)
	for i := 0; i < 512; i++ {
		le.PutUint64(mem[pd+8*i:], uint64(i)<<21|0x83)
	}
	gate := func(vec int, handler uint64) {
		g := mem[idt+16*vec:]
		le.PutUint16(g[0:], uint16(handler))
		le.PutUint16(g[2:], 0x08)
		g[4], g[5] = 0, 0x8e // present, DPL0, 64-bit interrupt gate
		le.PutUint16(g[6:], uint16(handler>>16))
		le.PutUint32(g[8:], uint32(handler>>32))
	}
	gate(3, 0x1100)
	gate(6, 0x1200)
	copy(mem[0x1000:], []byte{
		0xcc,                   // 0x1000 int3
		0xb0, 0x13, 0xe6, 0x13, // mov al,0x13; out 0x13,al
		0x0f, 0x0b, // 0x1005 ud2
		0xb0, 0x15, 0xe6, 0x15, // mov al,0x15; out 0x15,al
		0x48, 0xbf, 0x00, 0xff, 0x00, 0xff, 0x00, 0xff, 0x00, 0xff, // 0x100b mov rdi, 0xff00ff00ff00ff00
		0xf3, 0x48, 0x0f, 0xb8, 0xc7, // 0x1015 popcnt rax, rdi
		0xe7, 0x16, // out 0x16, eax
		0xf3, 0x0f, 0xb8, 0x05, 0xdc, 0x07, 0x00, 0x00, // 0x101c popcnt eax, [rip+0x7dc] (= [0x1800])
		0xe7, 0x17, // out 0x17, eax
		0x0f, 0x01, 0xcb, // 0x1026 stac
		0x9c, 0x58, // pushfq; pop rax
		0xe7, 0x18, // out 0x18, eax   (AC set)
		0x0f, 0x01, 0xca, // clac
		0x9c, 0x58, // pushfq; pop rax
		0xe7, 0x19, // out 0x19, eax   (AC clear)
		0x0f, 0x01, 0xf8, // swapgs
		0x65, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, // mov eax, gs:[0]
		0xe7, 0x1a, // out 0x1a, eax  (reads through the swapped-in GS base)
		0xdb, 0xe3, // fninit
		0x9b,             // fwait
		0xd9, 0x3c, 0x24, // fnstcw [rsp]
		0x0f, 0xb7, 0x04, 0x24, // movzx eax, word [rsp]
		0xe7, 0x1b, // out 0x1b, eax  (0x37f after fninit)
		0xf4, // hlt
	})
	le.PutUint32(mem[0x1900:], 0xc0ffee)
	le.PutUint32(mem[0x1800:], 0x7)
	copy(mem[0x1100:], []byte{0x48, 0x8b, 0x04, 0x24, 0xe7, 0x12, 0x48, 0xcf})                               // mov rax,[rsp]; out 0x12,eax; iretq
	copy(mem[0x1200:], []byte{0x48, 0x8b, 0x04, 0x24, 0xe7, 0x14, 0x48, 0x83, 0x04, 0x24, 0x02, 0x48, 0xcf}) // ...; add qword [rsp],2; iretq

	c, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	cpuid, _ := sys.SupportedCPUID()
	if err := c.SetCPUID2(cpuid); err != nil {
		t.Fatal(err)
	}
	s, _ := c.GetSregs()
	code := kvm.Segment{Limit: 0xffffffff, Selector: 0x08, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
	data := kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 0x3, Present: 1, S: 1, DB: 1, G: 1}
	s.CS, s.DS, s.ES, s.FS, s.GS, s.SS = code, data, data, data, data, data
	s.GDT = kvm.DTable{Base: gdt, Limit: 23}
	s.IDT = kvm.DTable{Base: idt, Limit: 4095}
	s.CR3, s.CR4, s.CR0, s.EFER = pml4, 1<<5, 1|1<<31, 1<<8|1<<10
	if err := c.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRegs(kvm.Regs{RIP: 0x1000, RSP: 0x7ff0, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetMSRs(kvm.MSREntry{Index: msrKernelGSBase, Data: 0x1900}); err != nil {
		t.Fatal(err)
	}

	type out struct {
		port uint16
		val  uint32
	}
	var outs []out
	var st EmulationStats
	done := make(chan error, 1)
	timer := time.AfterFunc(60*time.Second, func() { c.Kick() })
	defer timer.Stop()
	go func() {
		runtime.LockOSThread()
		for {
			e, err := c.Run()
			if err != nil {
				done <- err
				return
			}
			switch e := e.(type) {
			case *kvm.IOExit:
				v := uint32(e.Data[0])
				if len(e.Data) == 4 {
					v = le.Uint32(e.Data)
				}
				outs = append(outs, out{e.Port, v})
			case *kvm.InternalErrorExit:
				if err := emulateFailure(c, mem, e, &st); err != nil {
					done <- err
					return
				}
			case *kvm.HLTExit:
				done <- nil
				return
			default:
				done <- errors.New("unexpected exit " + e.Reason().String())
				return
			}
		}
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []out{{0x12, 0x1001}, {0x13, 0x13}, {0x14, 0x1005}, {0x15, 0x15}, {0x16, 32}, {0x17, 3},
		{0x18, 0x40002}, {0x19, 0x2}, {0x1a, 0xc0ffee}, {0x1b, 0x37f}}
	if len(outs) != len(want) {
		t.Fatalf("port writes %x, want %x", outs, want)
	}
	for i := range want {
		if outs[i] != want[i] {
			t.Errorf("port write %d = %x, want %x", i, outs[i], want[i])
		}
	}
	regs, _ := c.GetRegs()
	if regs.RSP != 0x7ff0 {
		t.Errorf("RSP after the handlers returned = %#x, want 0x7ff0", regs.RSP)
	}
	t.Logf("hardware virtualization: %v; exceptions the VMM delivered itself: %+v", kvm.HostHasHardwareVirt(), st)
}
