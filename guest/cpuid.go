package guest

// CPUIDEntry is one CPUID leaf/subleaf (the same fields as KVM's
// kvm_cpuid_entry2, without its padding).
type CPUIDEntry struct {
	Function, Index, Flags uint32
	EAX, EBX, ECX, EDX     uint32
}

// CPUIDFlagSignificantIndex marks leaves whose subleaf index matters.
const CPUIDFlagSignificantIndex = 1

// CPUIDProfile selects what the guest may see.
type CPUIDProfile struct {
	CPUs int // vCPUs in the VM
	// Emulated is true on software-nested KVM (no VMX/SVM on the host),
	// where ring-0 guest code runs in KVM's instruction emulator; features
	// whose instructions that emulator cannot execute are hidden so the
	// kernel never selects them.
	Emulated bool
}

type bit struct {
	fn, index uint32
	reg       byte // 'a', 'b', 'c', 'd'
	n         uint
	why       string
}

// Always hidden: the VM does not provide them.
var maskedAlways = []bit{
	{1, 0, 'c', 3, "MONITOR/MWAIT: idle with HLT so the vCPU thread sleeps in the host"},
	{1, 0, 'c', 5, "VMX: no nested virtualization"},
	{1, 0, 'c', 6, "SMX"},
	{1, 0, 'c', 7, "EIST: no frequency control"},
	{1, 0, 'c', 8, "TM2"},
	{1, 0, 'c', 15, "PDCM: no perf capabilities MSR"},
	{1, 0, 'c', 18, "DCA"},
	{1, 0, 'd', 22, "ACPI thermal monitor MSRs"},
	{1, 0, 'd', 29, "TM"},
	{0x80000001, 0, 'c', 2, "SVM: no nested virtualization"},
	{7, 0, 'c', 16, "LA57: four-level paging only"},
}

// Hidden on software-nested KVM: instructions (or state) KVM's x86
// emulator cannot handle in ring 0. Measured on these machines: the
// kernel stops at cmpxchg16b with CX16 and at xrstor with XSAVE.
var maskedEmulated = []bit{
	{1, 0, 'c', 13, "CX16: cmpxchg16b is not emulated"},
	{1, 0, 'c', 26, "XSAVE: xsave/xrstor are not emulated"},
	{1, 0, 'c', 27, "OSXSAVE follows XSAVE"},
	{1, 0, 'c', 28, "AVX needs XSAVE"},
	{1, 0, 'c', 12, "FMA needs AVX"},
	{1, 0, 'c', 29, "F16C needs AVX"},
	{1, 0, 'c', 21, "x2APIC: keep the xAPIC MMIO interface, which the emulator handles"},
	{1, 0, 'c', 17, "PCID: invpcid/PCID TLB tagging in ring 0"},
	{1, 0, 'c', 22, "MOVBE is not emulated"},
	{1, 0, 'c', 23, "POPCNT: the kernel patches hweight to popcnt"},
	{1, 0, 'c', 25, "AES-NI"},
	{1, 0, 'c', 30, "RDRAND"},
	{1, 0, 'c', 1, "PCLMULQDQ"},
	{1, 0, 'c', 9, "SSSE3"},
	{1, 0, 'c', 19, "SSE4.1"},
	{1, 0, 'c', 20, "SSE4.2"},
	{7, 0, 'b', 0, "FSGSBASE: rdgsbase/wrgsbase"},
	{7, 0, 'b', 3, "BMI1"},
	{7, 0, 'b', 5, "AVX2"},
	{7, 0, 'b', 8, "BMI2"},
	{7, 0, 'b', 9, "ERMS: fast rep movsb is the emulator's slowest path"},
	{7, 0, 'b', 10, "INVPCID"},
	{7, 0, 'b', 11, "RTM"},
	{7, 0, 'b', 16, "AVX-512F"},
	{7, 0, 'b', 17, "AVX-512DQ"},
	{7, 0, 'b', 18, "RDSEED"},
	{7, 0, 'b', 19, "ADX"},
	{7, 0, 'b', 21, "AVX-512IFMA"},
	{7, 0, 'b', 23, "CLFLUSHOPT"},
	{7, 0, 'b', 24, "CLWB"},
	{7, 0, 'b', 26, "AVX-512PF"},
	{7, 0, 'b', 27, "AVX-512ER"},
	{7, 0, 'b', 28, "AVX-512CD"},
	{7, 0, 'b', 29, "SHA"},
	{7, 0, 'b', 30, "AVX-512BW"},
	{7, 0, 'b', 31, "AVX-512VL"},
	{7, 0, 'c', 1, "AVX-512VBMI"},
	{7, 0, 'c', 3, "PKU: rdpkru/wrpkru"},
	{7, 0, 'c', 4, "OSPKE"},
	{7, 0, 'c', 5, "WAITPKG"},
	{7, 0, 'c', 8, "GFNI"},
	{7, 0, 'c', 9, "VAES"},
	{7, 0, 'c', 10, "VPCLMULQDQ"},
	{7, 0, 'c', 22, "RDPID"},
	{7, 0, 'd', 4, "FSRM: fast short rep mov"},
	{0x80000001, 0, 'c', 5, "ABM/LZCNT"},
	{0x80000001, 0, 'c', 6, "SSE4A"},
	{0x80000001, 0, 'c', 8, "PREFETCHW (3DNowPrefetch)"},
	{0x80000001, 0, 'c', 11, "XOP"},
	{0x80000001, 0, 'c', 16, "FMA4"},
	{0x80000001, 0, 'c', 21, "TBM"},
	{0x80000001, 0, 'd', 27, "RDTSCP"},
	{0x80000008, 0, 'b', 0, "CLZERO"},
	{0x80000008, 0, 'b', 4, "RDPRU"},
}

// Leaves removed entirely.
func leafRemoved(fn uint32, emulated bool) bool {
	switch fn {
	case 0xa: // architectural performance monitoring: no PMU
		return true
	case 0xd: // XSAVE state enumeration
		return emulated
	}
	return false
}

func (e *CPUIDEntry) reg(r byte) *uint32 {
	switch r {
	case 'a':
		return &e.EAX
	case 'b':
		return &e.EBX
	case 'c':
		return &e.ECX
	}
	return &e.EDX
}

// KVM's paravirtual CPUID signature leaf (Documentation/virt/kvm/x86/cpuid.rst).
const kvmSignatureLeaf = 0x40000000

// GuestCPUID derives vCPU cpu's CPUID from the host's supported entries.
func GuestCPUID(host []CPUIDEntry, cpu int, p CPUIDProfile) []CPUIDEntry {
	masks := maskedAlways
	if p.Emulated {
		masks = append(append([]bit(nil), maskedAlways...), maskedEmulated...)
	}
	var out []CPUIDEntry
	for _, e := range host {
		if leafRemoved(e.Function, p.Emulated) {
			continue
		}
		for _, m := range masks {
			if m.fn == e.Function && m.index == e.Index {
				*e.reg(m.reg) &^= 1 << m.n
			}
		}
		switch e.Function {
		case 1:
			// EBX[31:24] initial APIC ID, [23:16] logical processors;
			// ECX[31] hypervisor present; EDX[28] HTT when >1 logical.
			e.EBX = e.EBX&0x0000ffff | uint32(cpu)<<24 | uint32(p.CPUs)<<16
			e.ECX |= 1 << 31
			if p.CPUs > 1 {
				e.EDX |= 1 << 28
			}
		case 0xb, 0x1f:
			// Extended topology: EDX is the x2APIC id of this vCPU. One
			// thread per core, all cores in one package.
			e.EDX = uint32(cpu)
			switch e.Index {
			case 0:
				e.EAX, e.EBX, e.ECX = 0, 1, 1<<8
			case 1:
				e.EAX, e.EBX, e.ECX = bitsFor(p.CPUs), uint32(p.CPUs), 2<<8|1
			default:
				e.EAX, e.EBX, e.ECX = 0, 0, e.Index
			}
		case 4:
			// Deterministic cache parameters: EAX[31:26] cores per package - 1.
			e.EAX = e.EAX&0x03ffffff | uint32(p.CPUs-1)<<26
			e.EAX &^= 0xfff << 14 // one logical processor shares each cache level
		case 6:
			e.EAX, e.EBX, e.ECX, e.EDX = 0, 0, 0, 0 // no thermal/power management
		case 0x80000008:
			// ECX[7:0]: cores per package - 1 (AMD).
			e.ECX = e.ECX&^0xff | uint32(p.CPUs-1)
		}
		out = append(out, e)
	}
	hasKVM := false
	for _, e := range out {
		if e.Function == kvmSignatureLeaf {
			hasKVM = true
		}
	}
	if !hasKVM {
		// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX; EAX = highest KVM leaf.
		out = append(out, CPUIDEntry{Function: kvmSignatureLeaf, EAX: 0x40000001, EBX: 0x4b4d564b, ECX: 0x564b4d56, EDX: 0x4d})
	}
	return out
}

func bitsFor(n int) uint32 {
	b := uint32(0)
	for (1 << b) < n {
		b++
	}
	return b
}
