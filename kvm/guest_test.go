package kvm

import (
	"encoding/binary"
	"fmt"
	"github.com/hyperhq/hyperd-go/internal/kvmtest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The TestGuest* tests run hand-assembled guest code on /dev/kvm. On the
// software-nested KVM of our CI machines real-mode and ring-0 code is
// emulated (slowly, by the host kernel), ring-3 code runs natively, so the
// ring-0 sequences below are a handful of instructions each.

// needKVM opens /dev/kvm or fails the test with the reason. HYPERD_NO_KVM=1
// turns the failure into a skip, for machines that cannot have KVM.
func needKVM(t *testing.T) *System {
	t.Helper()
	kvmtest.Need(t)
	s, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type testVM struct {
	sys *System
	vm  *VM
	mem []byte
}

// newTestVM creates a VM with memSize bytes of RAM at GPA 0.
func newTestVM(t *testing.T, memSize int, irqchip bool) *testVM {
	t.Helper()
	s := needKVM(t)
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	if irqchip {
		if err := vm.CreateIRQChip(); err != nil {
			t.Fatal(err)
		}
	}
	mem, err := AllocateMemory(memSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { FreeMemory(mem) })
	if err := vm.SetUserMemoryRegion(0, 0, 0, mem); err != nil {
		t.Fatal(err)
	}
	return &testVM{sys: s, vm: vm, mem: mem}
}

// vcpu creates vCPU id with the host's supported CPUID.
func (tv *testVM) vcpu(t *testing.T, id int) *VCPU {
	t.Helper()
	c, err := tv.vm.CreateVCPU(id)
	if err != nil {
		t.Fatal(err)
	}
	cpuid, err := tv.sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCPUID2(cpuid); err != nil {
		t.Fatal(err)
	}
	return c
}

// runUntil runs c on a locked OS thread, passing each exit to handle until
// it returns true or an error occurs. A watchdog kicks the vCPU after
// timeout and the test fails.
func runUntil(t *testing.T, c *VCPU, timeout time.Duration, handle func(Exit) (bool, error)) {
	t.Helper()
	if err := runLoop(c, timeout, handle); err != nil {
		t.Fatalf("vCPU %d: %v", c.ID(), err)
	}
}

type timeoutError struct{ d time.Duration }

func (e timeoutError) Error() string { return "guest did not finish within " + e.d.String() }

// runLoop runs c on a locked OS thread until handle returns true or an
// error, or until timeout, when a watchdog kicks the vCPU.
func runLoop(c *VCPU, timeout time.Duration, handle func(Exit) (bool, error)) error {
	var timedOut atomic.Bool
	timer := time.AfterFunc(timeout, func() {
		timedOut.Store(true)
		c.Kick()
	})
	defer timer.Stop()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for {
			e, err := c.Run()
			if err != nil {
				errc <- err
				return
			}
			if timedOut.Load() {
				errc <- timeoutError{timeout}
				return
			}
			done, err := handle(e)
			if err != nil || done {
				errc <- err
				return
			}
		}
	}()
	return <-errc
}

func describeExit(c *VCPU, e Exit) string {
	r, _ := c.GetRegs()
	s := e.Reason().String()
	if ie, ok := e.(*InternalErrorExit); ok {
		s += fmt.Sprintf(" suberror %d insn % x", ie.Suberror, ie.Insn)
	}
	return s + fmt.Sprintf(" at rip %#x", r.RIP)
}

func hex(v uint64) string { return fmt.Sprintf("%#x", v) }

// realModeAt puts c in real mode at cs=0, rip=entry.
func realModeAt(t *testing.T, c *VCPU, entry uint64) {
	t.Helper()
	s, err := c.GetSregs()
	if err != nil {
		t.Fatal(err)
	}
	s.CS.Base, s.CS.Selector = 0, 0
	if err := c.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRegs(Regs{RIP: entry, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
}

// TestGuestRealModeSerial: real-mode code writes "Hi!\n" to port 0x3f8
// (COM1's data register) and halts.
func TestGuestRealModeSerial(t *testing.T) {
	tv := newTestVM(t, 1<<20, false)
	code := []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'H', 0xee, // mov al, 'H'; out dx, al
		0xb0, 'i', 0xee,
		0xb0, '!', 0xee,
		0xb0, '\n', 0xee,
		0xf4, // hlt
	}
	copy(tv.mem[0x1000:], code)
	c := tv.vcpu(t, 0)
	realModeAt(t, c, 0x1000)
	var out []byte
	runUntil(t, c, 60*time.Second, func(e Exit) (bool, error) {
		switch e := e.(type) {
		case *IOExit:
			if e.In || e.Port != 0x3f8 || e.Size != 1 {
				t.Errorf("unexpected IO exit %+v", e)
			}
			out = append(out, e.Data...)
			return false, nil
		case *HLTExit:
			return true, nil
		default:
			t.Fatalf("unexpected exit %s", describeExit(c, e))
		}
		return true, nil
	})
	if string(out) != "Hi!\n" {
		t.Fatalf("serial output %q, want %q", out, "Hi!\n")
	}
}

// TestGuestMMIO: real-mode code reads a 16-bit word from an address no
// memory slot covers, adds one and writes it back to another: the Go side
// answers the read and sees the write.
func TestGuestMMIO(t *testing.T) {
	tv := newTestVM(t, 1<<16, false) // RAM 0..64K; MMIO window at 0x20000
	code := []byte{
		0xa1, 0x00, 0x00, // mov ax, [0x0000]      (ds.base = 0x20000)
		0x05, 0x01, 0x00, // add ax, 1
		0xa3, 0x02, 0x00, // mov [0x0002], ax
		0xf4, // hlt
	}
	copy(tv.mem[0x1000:], code)
	c := tv.vcpu(t, 0)
	realModeAt(t, c, 0x1000)
	s, _ := c.GetSregs()
	s.DS.Base, s.DS.Selector = 0x20000, 0x2000
	if err := c.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	var reads, writes []string
	var written uint16
	runUntil(t, c, 60*time.Second, func(e Exit) (bool, error) {
		switch e := e.(type) {
		case *MMIOExit:
			if e.IsWrite {
				writes = append(writes, hex(e.Addr))
				if len(e.Data) == 2 {
					written = binary.LittleEndian.Uint16(e.Data)
				}
			} else {
				reads = append(reads, hex(e.Addr))
				binary.LittleEndian.PutUint16(e.Data, 0x1234)
			}
			return false, nil
		case *HLTExit:
			return true, nil
		default:
			t.Fatalf("unexpected exit %s", describeExit(c, e))
		}
		return true, nil
	})
	if len(reads) != 1 || reads[0] != "0x20000" {
		t.Errorf("MMIO reads %v, want [0x20000]", reads)
	}
	if len(writes) != 1 || writes[0] != "0x20002" {
		t.Errorf("MMIO writes %v, want [0x20002]", writes)
	}
	if written != 0x1235 {
		t.Errorf("guest wrote %#x, want 0x1235", written)
	}
}

// Long-mode test layout (guest physical addresses).
const (
	lmGDT      = 0x500
	lmPML4     = 0x10000
	lmPDPT     = 0x11000
	lmPD       = 0x12000
	lmTramp    = 0x1000 // ring-0 trampoline: iretq to ring 3
	lmUserCode = 0x3000
	lmFlags    = 0x5000
	selKCode   = 0x08
	selKData   = 0x10
	selUCode   = 0x18 | 3
	selUData   = 0x20 | 3
)

// setupLongMode writes a GDT and identity page tables (2 MiB pages, user
// accessible) for the first 1 GiB, and the ring-0 trampoline
//
//	push 0x23 ; push rsi ; push 0x3002 ; push 0x1b ; push rdi ; iretq
//
// which enters ring 3 at rdi with stack rsi and IOPL 3 (so ring 3 may use
// port I/O to talk to the test).
func (tv *testVM) setupLongMode() {
	le := binary.LittleEndian
	gdt := []uint64{
		0,
		0x00209a0000000000, // 0x08 kernel code: P, DPL0, S, exec/read, L
		0x0000920000000000, // 0x10 kernel data: P, DPL0, S, read/write
		0x0020fa0000000000, // 0x18 user code: P, DPL3, L
		0x0000f20000000000, // 0x20 user data: P, DPL3
	}
	for i, d := range gdt {
		le.PutUint64(tv.mem[lmGDT+8*i:], d)
	}
	const pteP, pteRW, pteUS, ptePS = 1, 2, 4, 0x80
	le.PutUint64(tv.mem[lmPML4:], lmPDPT|pteP|pteRW|pteUS)
	le.PutUint64(tv.mem[lmPDPT:], lmPD|pteP|pteRW|pteUS)
	for i := 0; i < 512; i++ {
		le.PutUint64(tv.mem[lmPD+8*i:], uint64(i)<<21|pteP|pteRW|pteUS|ptePS)
	}
	copy(tv.mem[lmTramp:], []byte{
		0x6a, 0x23, // push 0x23 (user ss)
		0x56,                         // push rsi (user rsp)
		0x68, 0x02, 0x30, 0x00, 0x00, // push 0x3002 (rflags: IOPL=3)
		0x6a, 0x1b, // push 0x1b (user cs)
		0x57,       // push rdi (user rip)
		0x48, 0xcf, // iretq
	})
}

// longMode puts c directly into 64-bit mode at the trampoline, with the
// given ring-3 entry point and stacks.
func longMode(t *testing.T, c *VCPU, userRIP, userRSP, kernelRSP uint64) {
	t.Helper()
	s, err := c.GetSregs()
	if err != nil {
		t.Fatal(err)
	}
	code := Segment{Base: 0, Limit: 0xffffffff, Selector: selKCode, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
	data := Segment{Base: 0, Limit: 0xffffffff, Selector: selKData, Type: 0x3, Present: 1, S: 1, DB: 1, G: 1}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = DTable{Base: lmGDT, Limit: 5*8 - 1}
	s.CR3 = lmPML4
	s.CR4 = 1 << 5                   // PAE
	s.CR0 = 1<<0 | 1<<31 | 1<<16 | 1 // PE | PG | WP
	s.EFER = 1<<8 | 1<<10            // LME | LMA
	if err := c.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRegs(Regs{RIP: lmTramp, RSP: kernelRSP, RDI: userRIP, RSI: userRSP, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
}

// TestGuestLongModeRing3: the test builds page tables and a GDT, starts the
// vCPU in 64-bit mode, the guest drops to ring 3 with iretq and runs a
// loop of a million iterations there, then reports the sum through port
// 0x10. The test checks the sum in RAX and that the CPL was 3.
func TestGuestLongModeRing3(t *testing.T) {
	tv := newTestVM(t, 4<<20, false)
	tv.setupLongMode()
	copy(tv.mem[lmUserCode:], []byte{
		0x31, 0xc0, // xor eax, eax
		0xb9, 0x40, 0x42, 0x0f, 0x00, // mov ecx, 1000000
		0x48, 0x01, 0xc8, // loop: add rax, rcx
		0x48, 0xff, 0xc9, // dec rcx
		0x75, 0xf8, // jnz loop
		0x66, 0xba, 0x10, 0x00, // mov dx, 0x10
		0xef,       // out dx, eax
		0xeb, 0xfe, // jmp $
	})
	c := tv.vcpu(t, 0)
	longMode(t, c, lmUserCode, 0x7000, 0x8000)
	var sum uint64
	var cpl uint16
	runUntil(t, c, 60*time.Second, func(e Exit) (bool, error) {
		io, ok := e.(*IOExit)
		if !ok || io.Port != 0x10 {
			t.Fatalf("unexpected exit %s", describeExit(c, e))
		}
		r, err := c.GetRegs()
		if err != nil {
			return true, err
		}
		s, err := c.GetSregs()
		if err != nil {
			return true, err
		}
		sum, cpl = r.RAX, s.CS.Selector&3
		if got := binary.LittleEndian.Uint32(io.Data); got != uint32(sum) {
			t.Errorf("port 0x10 got %#x, want low half of RAX %#x", got, uint32(sum))
		}
		return true, nil
	})
	if want := uint64(1000000) * 1000001 / 2; sum != want {
		t.Errorf("ring-3 loop sum %d, want %d", sum, want)
	}
	if cpl != 3 {
		t.Errorf("CPL at exit %d, want 3", cpl)
	}
}

// TestGuestTwoVCPUs: two vCPUs run at once and rendezvous through guest
// memory: vCPU 0 raises flag A and waits for flag B; vCPU 1 waits for A and
// raises B. Neither can finish unless both run concurrently. Each then
// reports its id through port 0x11.
func TestGuestTwoVCPUs(t *testing.T) {
	tv := newTestVM(t, 4<<20, true)
	tv.setupLongMode()
	// cmp byte [disp32], 1 is 80 3c 25 <disp32> 01; mov byte [disp32], 1 is c6 04 25 <disp32> 01.
	flagA := []byte{0x00, 0x50, 0x00, 0x00} // 0x5000
	flagB := []byte{0x08, 0x50, 0x00, 0x00} // 0x5008
	prog := func(raise, wait []byte, id byte) []byte {
		p := append([]byte{0xc6, 0x04, 0x25}, raise...)
		p = append(p, 0x01)
		p = append(p, 0x80, 0x3c, 0x25)
		p = append(p, wait...)
		p = append(p, 0x01, 0x75, 0xf6) // cmp ...; jne back to the cmp (-10)
		return append(p, 0x66, 0xba, 0x11, 0x00, 0xb0, id, 0xee, 0xeb, 0xfe)
	}
	copy(tv.mem[lmUserCode:], prog(flagA, flagB, 0))
	copy(tv.mem[lmUserCode+0x100:], prog(flagB, flagA, 1))
	var wg sync.WaitGroup
	ids := make([]int, 2)
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		c := tv.vcpu(t, i)
		if err := c.SetMPState(MPStateRunnable); err != nil {
			t.Fatal(err)
		}
		longMode(t, c, uint64(lmUserCode+0x100*i), uint64(0x7000-0x800*i), uint64(0x9000+0x800*i))
		ids[i] = -1
		wg.Add(1)
		go func(i int, c *VCPU) {
			defer wg.Done()
			errs[i] = runLoop(c, 120*time.Second, func(e Exit) (bool, error) {
				if io, ok := e.(*IOExit); ok && io.Port == 0x11 {
					ids[i] = int(io.Data[0])
					return true, nil
				}
				if _, ok := e.(*IntrExit); ok {
					return false, nil // a stray runtime signal; go on
				}
				return true, nil
			})
		}(i, c)
	}
	wg.Wait()
	for i := 0; i < 2; i++ {
		if errs[i] != nil {
			t.Errorf("vCPU %d: %v", i, errs[i])
		}
		if ids[i] != i {
			t.Errorf("vCPU %d reported id %d", i, ids[i])
		}
	}
	if tv.mem[lmFlags] != 1 || tv.mem[lmFlags+8] != 1 {
		t.Errorf("rendezvous flags %d %d, want 1 1", tv.mem[lmFlags], tv.mem[lmFlags+8])
	}
}

// TestGuestImmediateExit: a vCPU spinning in a ring-3 busy loop is taken out
// of KVM_RUN by Kick from another goroutine, twice, and its registers show
// it was in the loop.
func TestGuestImmediateExit(t *testing.T) {
	tv := newTestVM(t, 4<<20, false)
	tv.setupLongMode()
	copy(tv.mem[lmUserCode:], []byte{
		0x48, 0xff, 0xc0, // loop: inc rax
		0xeb, 0xfb, // jmp loop
	})
	c := tv.vcpu(t, 0)
	longMode(t, c, lmUserCode, 0x7000, 0x8000)
	kicks := 0
	var lastRAX uint64
	stop := make(chan struct{})
	go func() {
		for i := 0; i < 2; i++ {
			select {
			case <-time.After(200 * time.Millisecond):
				c.Kick()
			case <-stop:
				return
			}
		}
	}()
	defer close(stop)
	runUntil(t, c, 60*time.Second, func(e Exit) (bool, error) {
		ie, ok := e.(*IntrExit)
		if !ok {
			t.Fatalf("unexpected exit %s", describeExit(c, e))
		}
		if !ie.Kicked {
			return false, nil // runtime signal without a kick
		}
		kicks++
		r, err := c.GetRegs()
		if err != nil {
			return true, err
		}
		if r.RIP < lmUserCode || r.RIP >= lmUserCode+5 {
			t.Errorf("kicked at rip %#x, outside the busy loop", r.RIP)
		}
		if kicks == 2 && r.RAX <= lastRAX {
			t.Errorf("loop counter did not advance between kicks: %d then %d", lastRAX, r.RAX)
		}
		lastRAX = r.RAX
		c.ClearKick()
		return kicks == 2, nil
	})
	if kicks != 2 {
		t.Fatalf("saw %d kicks, want 2", kicks)
	}
}
