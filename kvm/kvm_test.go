package kvm

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestHasVirtFlag(t *testing.T) {
	for _, tc := range []struct {
		name, cpuinfo string
		want          bool
	}{
		{"intel", "processor\t: 0\nflags\t\t: fpu vme vmx sse\n", true},
		{"amd", "flags\t\t: fpu svm lm\n", true},
		{"pvm", "flags\t\t: fpu hypervisor lm\n", false},
		{"substring is not a flag", "flags\t\t: vmxx svm_lock\n", false},
		{"not in flags line", "model name\t: vmx svm\nflags\t: fpu\n", false},
		{"empty", "", false},
	} {
		if got := hasVirtFlag(tc.cpuinfo); got != tc.want {
			t.Errorf("%s: hasVirtFlag = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSystemCapabilities checks the capabilities the VMM depends on and
// logs what this host offers.
func TestSystemCapabilities(t *testing.T) {
	s := needKVM(t)
	if v, err := s.APIVersion(); err != nil || v != APIVersion {
		t.Fatalf("API version %d, %v", v, err)
	}
	required := []struct {
		name string
		cap  int
	}{
		{"IRQCHIP", CapIRQChip}, {"USER_MEMORY", CapUserMemory}, {"SET_TSS_ADDR", CapSetTSSAddr},
		{"PIT2", CapPIT2}, {"IRQFD", CapIRQFD}, {"IOEVENTFD", CapIOEventFD},
		{"VCPU_EVENTS", CapVCPUEvents}, {"IMMEDIATE_EXIT", CapImmediateExit}, {"MP_STATE", CapMPState},
	}
	for _, r := range required {
		v := s.CheckExtension(r.cap)
		t.Logf("KVM_CAP_%s = %d", r.name, v)
		if v <= 0 {
			t.Errorf("required capability KVM_CAP_%s missing", r.name)
		}
	}
	for _, o := range []struct {
		name string
		cap  int
	}{
		{"READONLY_MEM", CapReadonlyMem}, {"SIGNAL_MSI", CapSignalMSI}, {"NR_VCPUS", CapNrVCPUs},
		{"MAX_VCPUS", CapMaxVCPUs}, {"NR_MEMSLOTS", CapNrMemSlots}, {"EXIT_ON_EMULATION_FAILURE", CapExitOnEmulationFailure},
		{"IOEVENTFD_ANY_LENGTH", CapIOEventFDAnyLength}, {"ADJUST_CLOCK", CapAdjustClock}, {"GET_TSC_KHZ", CapGetTSCKHz},
		{"SET_IDENTITY_MAP_ADDR", CapSetIdentityMapAddr}, {"X86_DISABLE_EXITS", CapX86DisableExits},
	} {
		t.Logf("KVM_CAP_%s = %d", o.name, s.CheckExtension(o.cap))
	}
	if n, err := s.VCPUMmapSize(); err != nil || n < 4096 {
		t.Errorf("vCPU mmap size %d, %v", n, err)
	}
	cpuid, err := s.SupportedCPUID()
	if err != nil || len(cpuid) == 0 {
		t.Fatalf("supported CPUID: %d entries, %v", len(cpuid), err)
	}
	var leaf0 *CPUIDEntry
	for i := range cpuid {
		if cpuid[i].Function == 0 {
			leaf0 = &cpuid[i]
		}
	}
	if leaf0 == nil || leaf0.EAX == 0 {
		t.Errorf("supported CPUID has no leaf 0")
	} else {
		vendor := make([]byte, 12)
		binary.LittleEndian.PutUint32(vendor[0:], leaf0.EBX)
		binary.LittleEndian.PutUint32(vendor[4:], leaf0.EDX)
		binary.LittleEndian.PutUint32(vendor[8:], leaf0.ECX)
		t.Logf("supported CPUID: %d entries, vendor %q, max leaf %#x", len(cpuid), vendor, leaf0.EAX)
	}
	if em, err := s.EmulatedCPUID(); err != nil {
		t.Errorf("emulated CPUID: %v", err)
	} else {
		t.Logf("emulated CPUID: %d entries", len(em))
	}
	msrs, err := s.MSRIndexList()
	if err != nil || len(msrs) == 0 {
		t.Errorf("MSR index list: %d entries, %v", len(msrs), err)
	}
	t.Logf("MSR index list: %d MSRs; hardware virtualization flag in /proc/cpuinfo: %v", len(msrs), HostHasHardwareVirt())
}

// TestVCPUStateRoundTrip sets and reads back every kind of vCPU state.
func TestVCPUStateRoundTrip(t *testing.T) {
	tv := newTestVM(t, 1<<20, true)
	if err := tv.vm.CreatePIT2(PITSpeakerDummy); err != nil {
		t.Fatal(err)
	}
	c := tv.vcpu(t, 0)

	regs := Regs{RAX: 1, RBX: 2, RCX: 3, R15: 15, RIP: 0x1234, RSP: 0x8000, RFLAGS: 0x202}
	if err := c.SetRegs(regs); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetRegs(); err != nil || got != regs {
		t.Errorf("regs round trip: %+v, %v", got, err)
	}

	s, err := c.GetSregs()
	if err != nil {
		t.Fatal(err)
	}
	s.CS.Base, s.CS.Selector = 0x10000, 0x1000
	if err := c.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.GetSregs(); got.CS.Base != 0x10000 || got.CS.Selector != 0x1000 {
		t.Errorf("sregs round trip: cs %+v", got.CS)
	}

	f, err := c.GetFPU()
	if err != nil {
		t.Fatal(err)
	}
	f.XMM[3][0] = 0xab
	f.MXCSR = 0x1f80
	if err := c.SetFPU(f); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.GetFPU(); got.XMM[3][0] != 0xab {
		t.Errorf("fpu round trip: xmm3[0] = %#x", got.XMM[3][0])
	}

	const msrSysenterCS = 0x174
	if err := c.SetMSRs(MSREntry{Index: msrSysenterCS, Data: 0x10}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetMSRs(msrSysenterCS); err != nil || got[0].Data != 0x10 {
		t.Errorf("MSR SYSENTER_CS round trip: %+v, %v", got, err)
	}
	if _, err := c.GetMSRs(0xdeadbeef); err == nil {
		t.Errorf("reading a nonexistent MSR succeeded")
	}

	cpuid, err := c.GetCPUID2()
	if err != nil || len(cpuid) == 0 {
		t.Errorf("GetCPUID2: %d entries, %v", len(cpuid), err)
	}

	l, err := c.GetLAPIC()
	if err != nil {
		t.Fatal(err)
	}
	if id := l.Reg32(0x20) >> 24; id != 0 {
		t.Errorf("LAPIC ID of vCPU 0 is %d", id)
	}
	l.SetReg32(0x80, 0x20) // task priority
	if err := c.SetLAPIC(l); err != nil {
		t.Fatal(err)
	}
	if l2, _ := c.GetLAPIC(); l2.Reg32(0x80) != 0x20 {
		t.Errorf("LAPIC TPR round trip: %#x", l2.Reg32(0x80))
	}

	if err := c.SetMPState(MPStateHalted); err != nil {
		t.Fatal(err)
	}
	if st, err := c.GetMPState(); err != nil || st != MPStateHalted {
		t.Errorf("mp_state %d, %v", st, err)
	}
	if err := c.SetMPState(MPStateRunnable); err != nil {
		t.Fatal(err)
	}

	ev, err := c.GetVCPUEvents()
	if err != nil {
		t.Fatal(err)
	}
	ev.NMI.Masked = 1
	ev.Exception.Injected, ev.Exception.Nr = 1, 3 // #BP
	if err := c.SetVCPUEvents(ev); err != nil {
		t.Fatal(err)
	}
	// Without KVM_CAP_EXCEPTION_PAYLOAD, KVM may report a queued exception
	// as pending rather than injected; the vector must survive either way.
	if got, _ := c.GetVCPUEvents(); got.NMI.Masked != 1 || got.Exception.Nr != 3 {
		t.Errorf("vcpu events round trip: nmi %+v exception %+v", got.NMI, got.Exception)
	}

	if clk, err := tv.vm.GetClock(); err != nil {
		t.Errorf("GetClock: %v", err)
	} else if err := tv.vm.SetClock(ClockData{Clock: clk.Clock + 1000}); err != nil {
		t.Errorf("SetClock: %v", err)
	}
	if _, err := tv.vm.GetIRQChip(IRQChipIOAPIC); err != nil {
		t.Errorf("GetIRQChip: %v", err)
	}
	if err := tv.vm.IRQLine(4, true); err != nil {
		t.Errorf("IRQLine raise: %v", err)
	}
	if err := tv.vm.IRQLine(4, false); err != nil {
		t.Errorf("IRQLine lower: %v", err)
	}

	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := tv.vm.IRQFD(efd, 5, -1); err != nil {
		t.Fatal(err)
	}
	if err := tv.vm.RemoveIRQFD(efd, 5); err != nil {
		t.Errorf("RemoveIRQFD: %v", err)
	}
	if tr, err := c.Translate(0x1000); err != nil || tr.Valid != 1 || tr.PhysicalAddress != 0x1000 {
		t.Errorf("translate in real mode: %+v, %v", tr, err)
	}
}

// TestGuestIOEventFD: a guest write to an address registered with
// KVM_IOEVENTFD signals the eventfd without an exit; a write to a
// neighbouring address still exits as MMIO. A read-only memory slot turns
// guest writes into MMIO exits while reads see its contents.
func TestGuestIOEventFD(t *testing.T) {
	tv := newTestVM(t, 1<<16, false)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := tv.vm.AddIOEventFD(IOEventFD{FD: efd, Addr: 0x20010, Len: 2}); err != nil {
		t.Fatal(err)
	}
	rom, err := AllocateMemory(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer FreeMemory(rom)
	rom[0] = 0x5a
	readonly := tv.sys.CheckExtension(CapReadonlyMem) > 0
	if readonly {
		if err := tv.vm.SetUserMemoryRegion(1, MemReadOnly, 0x30000, rom); err != nil {
			t.Fatal(err)
		}
	}
	code := []byte{
		0xb8, 0x34, 0x12, // mov ax, 0x1234
		0xa3, 0x10, 0x00, // mov [0x0010], ax   -> ioeventfd at 0x20010
		0xa3, 0x20, 0x00, // mov [0x0020], ax   -> MMIO exit at 0x20020
		0x8e, 0xc3, // mov es, bx (bx = 0x3000 -> es.base 0x30000)
		0x26, 0xa0, 0x00, 0x00, // mov al, es:[0]  (reads ROM: 0x5a)
		0x26, 0xa2, 0x01, 0x00, // mov es:[1], al  (write to ROM: MMIO exit)
		0xf4,
	}
	copy(tv.mem[0x1000:], code)
	c := tv.vcpu(t, 0)
	realModeAt(t, c, 0x1000)
	r, _ := c.GetRegs()
	r.RBX = 0x3000
	c.SetRegs(r)
	s, _ := c.GetSregs()
	s.DS.Base, s.DS.Selector = 0x20000, 0x2000
	c.SetSregs(s)
	var writes []string
	var romWrite byte
	runUntil(t, c, 60*time.Second, func(e Exit) (bool, error) {
		switch e := e.(type) {
		case *MMIOExit:
			if !e.IsWrite {
				t.Fatalf("unexpected MMIO read at %#x", e.Addr)
			}
			writes = append(writes, hex(e.Addr))
			if e.Addr == 0x30001 {
				romWrite = e.Data[0]
			}
			return false, nil
		case *HLTExit:
			return true, nil
		}
		t.Fatalf("unexpected exit %s", describeExit(c, e))
		return true, nil
	})
	var buf [8]byte
	if _, err := unix.Read(efd, buf[:]); err != nil || binary.LittleEndian.Uint64(buf[:]) != 1 {
		t.Errorf("eventfd after the guest write: %v, count %d", err, binary.LittleEndian.Uint64(buf[:]))
	}
	want := []string{"0x20020"}
	if readonly {
		want = append(want, "0x30001")
	}
	if len(writes) != len(want) || writes[0] != want[0] || (readonly && writes[1] != want[1]) {
		t.Errorf("MMIO write exits %v, want %v", writes, want)
	}
	if readonly && romWrite != 0x5a {
		t.Errorf("write to the read-only slot carried %#x, want the 0x5a read from it", romWrite)
	}
	if rom[1] != 0 {
		t.Errorf("read-only slot was modified")
	}
	if err := tv.vm.RemoveIOEventFD(IOEventFD{FD: efd, Addr: 0x20010, Len: 2}); err != nil {
		t.Errorf("RemoveIOEventFD: %v", err)
	}
}
