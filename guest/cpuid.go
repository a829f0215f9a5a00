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

// bit names one CPUID feature bit: leaf fn, subleaf index, register and
// bit number as in the Intel SDM Vol. 2A, CPUID, Tables 3-8 ("Feature
// Information" ECX/EDX, leaf 1) and 3-8 cont. (leaf 7), and the AMD APM
// Vol. 3, E.4 (extended leaves 0x8000_00xx).
type bit struct {
	fn, index uint32
	reg       byte // 'a', 'b', 'c', 'd'
	n         uint
	why       string
}

// Always hidden: the VM does not provide what they describe.
var maskedAlways = []bit{
	{1, 0, 'c', 2, "DTES64: no debug store (BTS/PEBS need a PMU)"},
	{1, 0, 'c', 3, "MONITOR/MWAIT: idle with HLT so the vCPU thread sleeps in the host"},
	{1, 0, 'c', 4, "DS-CPL: no debug store"},
	{1, 0, 'c', 5, "VMX: no nested virtualization"},
	{1, 0, 'c', 6, "SMX: no TXT"},
	{1, 0, 'c', 7, "EIST: no frequency control MSRs"},
	{1, 0, 'c', 8, "TM2: no thermal monitor"},
	{1, 0, 'c', 15, "PDCM: no IA32_PERF_CAPABILITIES (no PMU)"},
	{1, 0, 'c', 18, "DCA: no direct cache access"},
	{1, 0, 'd', 21, "DS: no debug store"},
	{1, 0, 'd', 22, "ACPI: no thermal monitor/clock control MSRs"},
	{1, 0, 'd', 29, "TM: no thermal monitor"},
	{1, 0, 'd', 31, "PBE: no pending break enable"},
	{7, 0, 'b', 2, "SGX: no enclave page cache"},
	{7, 0, 'b', 25, "Intel PT: no processor trace"},
	{7, 0, 'c', 16, "LA57: the identity maps and our memory map are 4-level"},
	{7, 0, 'c', 30, "SGX_LC: no SGX"},
	{0x80000001, 0, 'c', 2, "SVM: no nested virtualization"},
}

// Hidden on software-nested KVM, where the guest's ring 0 runs in the host
// KVM's x86 instruction emulator (arch/x86/kvm/emulate.c): instructions it
// cannot execute, and state (XSAVE areas, x2APIC MSRs) its paths do not
// cover. Measured on these machines (DESIGN.md): with CX16 visible the
// kernel stops at cmpxchg16b, with XSAVE at xrstor. Everything that needs
// XSAVE-managed state (AVX and later) goes with XSAVE; the rest are
// instructions the emulator's opcode tables lack, which the kernel would
// otherwise pick for its own ring-0 code (alternatives, crypto, string ops).
// Ring-3 code runs natively and is unaffected.
var maskedEmulated = []bit{
	{1, 0, 'c', 1, "PCLMULQDQ: not emulated (crc/crypto code in ring 0)"},
	{1, 0, 'c', 9, "SSSE3: not emulated (ring-0 crypto/raid code)"},
	{1, 0, 'c', 12, "FMA: needs AVX"},
	{1, 0, 'c', 13, "CX16: cmpxchg16b is not emulated (measured: first stop)"},
	{1, 0, 'c', 17, "PCID: keep CR3 writes and TLB flushes on the plain path (no INVPCID, no CR3 no-flush bit)"},
	{1, 0, 'c', 19, "SSE4.1: not emulated"},
	{1, 0, 'c', 20, "SSE4.2: crc32/popcnt-style ops in ring 0 are not emulated"},
	{1, 0, 'c', 21, "x2APIC: keep the xAPIC MMIO interface; x2APIC MSR access from the emulator is not covered"},
	{1, 0, 'c', 22, "MOVBE: not emulated"},
	{1, 0, 'c', 23, "POPCNT: the kernel patches hweight*() to popcnt"},
	{1, 0, 'c', 25, "AES-NI: not emulated"},
	{1, 0, 'c', 26, "XSAVE: xsave/xrstor are not emulated (measured: second stop)"},
	{1, 0, 'c', 27, "OSXSAVE: follows XSAVE"},
	{1, 0, 'c', 28, "AVX: needs XSAVE"},
	{1, 0, 'c', 29, "F16C: needs AVX"},
	{1, 0, 'c', 30, "RDRAND: not emulated; the kernel seeds its RNG from it in ring 0"},
	{7, 0, 'b', 0, "FSGSBASE: rdgsbase/wrgsbase on every context switch"},
	{7, 0, 'b', 3, "BMI1: not emulated"},
	{7, 0, 'b', 5, "AVX2: needs XSAVE"},
	{7, 0, 'b', 8, "BMI2: not emulated"},
	{7, 0, 'b', 9, "ERMS: rep movsb is the emulator's slowest path; keep the kernel on rep movsq"},
	{7, 0, 'b', 10, "INVPCID: not emulated"},
	{7, 0, 'b', 11, "RTM: no transactional memory in an emulator"},
	{7, 0, 'b', 14, "MPX: needs XSAVE state"},
	{7, 0, 'b', 16, "AVX-512F: needs XSAVE"},
	{7, 0, 'b', 17, "AVX-512DQ: needs XSAVE"},
	{7, 0, 'b', 18, "RDSEED: not emulated"},
	{7, 0, 'b', 19, "ADX: not emulated"},
	{7, 0, 'b', 21, "AVX-512IFMA: needs XSAVE"},
	{7, 0, 'b', 23, "CLFLUSHOPT: not emulated"},
	{7, 0, 'b', 24, "CLWB: not emulated"},
	{7, 0, 'b', 26, "AVX-512PF: needs XSAVE"},
	{7, 0, 'b', 27, "AVX-512ER: needs XSAVE"},
	{7, 0, 'b', 28, "AVX-512CD: needs XSAVE"},
	{7, 0, 'b', 29, "SHA: not emulated"},
	{7, 0, 'b', 30, "AVX-512BW: needs XSAVE"},
	{7, 0, 'b', 31, "AVX-512VL: needs XSAVE"},
	{7, 0, 'c', 1, "AVX-512VBMI: needs XSAVE"},
	{7, 0, 'c', 3, "PKU: rdpkru/wrpkru, and PKRU is XSAVE state"},
	{7, 0, 'c', 4, "OSPKE: follows PKU"},
	{7, 0, 'c', 5, "WAITPKG: umwait/tpause are not emulated"},
	{7, 0, 'c', 6, "AVX-512VBMI2: needs XSAVE"},
	{7, 0, 'c', 7, "CET_SS: shadow stacks are XSAVE (supervisor) state"},
	{7, 0, 'c', 8, "GFNI: not emulated"},
	{7, 0, 'c', 9, "VAES: needs AVX"},
	{7, 0, 'c', 10, "VPCLMULQDQ: needs AVX"},
	{7, 0, 'c', 11, "AVX-512VNNI: needs XSAVE"},
	{7, 0, 'c', 12, "AVX-512BITALG: needs XSAVE"},
	{7, 0, 'c', 14, "AVX-512VPOPCNTDQ: needs XSAVE"},
	{7, 0, 'c', 22, "RDPID: not emulated"},
	{7, 0, 'd', 2, "AVX-512_4VNNIW: needs XSAVE"},
	{7, 0, 'd', 3, "AVX-512_4FMAPS: needs XSAVE"},
	{7, 0, 'd', 4, "FSRM: fast short rep movsb, as ERMS"},
	{7, 0, 'd', 8, "AVX-512_VP2INTERSECT: needs XSAVE"},
	{7, 0, 'd', 14, "SERIALIZE: not emulated"},
	{7, 0, 'd', 20, "CET_IBT: endbr64 tracking is XSAVE (supervisor) state"},
	{7, 0, 'd', 22, "AMX-BF16: XSAVE state"},
	{7, 0, 'd', 23, "AVX-512_FP16: needs XSAVE"},
	{7, 0, 'd', 24, "AMX-TILE: XSAVE state"},
	{7, 0, 'd', 25, "AMX-INT8: XSAVE state"},
	{7, 1, 'a', 4, "AVX-VNNI: needs XSAVE"},
	{7, 1, 'a', 5, "AVX-512_BF16: needs XSAVE"},
	{0x80000001, 0, 'c', 5, "ABM/LZCNT: not emulated"},
	{0x80000001, 0, 'c', 6, "SSE4A: not emulated"},
	{0x80000001, 0, 'c', 8, "PREFETCHW: not emulated"},
	{0x80000001, 0, 'c', 11, "XOP: needs XSAVE"},
	{0x80000001, 0, 'c', 16, "FMA4: needs XSAVE"},
	{0x80000001, 0, 'c', 21, "TBM: not emulated"},
	{0x80000001, 0, 'd', 27, "RDTSCP: not emulated in ring 0 (the vDSO in ring 3 falls back to rdtsc)"},
	{0x80000008, 0, 'b', 0, "CLZERO: not emulated"},
	{0x80000008, 0, 'b', 4, "RDPRU: not emulated"},
}

// Not masked, on purpose: TSC-deadline (leaf 1 ECX 24) — KVM's in-kernel
// local APIC implements the deadline MSR and the emulator executes wrmsr;
// the hypervisor bit and KVM's paravirtual leaves, which the kernel uses
// for kvmclock and to skip hardware it would otherwise probe.

// leafRemoved reports the leaves the guest does not get at all (a leaf
// missing below the maximum reads as zeros under KVM).
func leafRemoved(fn uint32, emulated bool) bool {
	switch fn {
	case 0xa: // architectural performance monitoring: no PMU
		return true
	case 0x12, 0x14: // SGX and processor trace enumeration (masked above)
		return true
	case 0xd: // XSAVE state components: no XSAVE under the emulator
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
const (
	kvmSignatureLeaf = 0x40000000
	kvmFeaturesLeaf  = 0x40000001
)

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
			e.EBX = e.EBX&0x0000ffff | uint32(uint8(cpu))<<24 | uint32(min(p.CPUs, 255))<<16
			e.ECX |= 1 << 31
			if p.CPUs > 1 {
				e.EDX |= 1 << 28
			} else {
				e.EDX &^= 1 << 28
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
			// Deterministic cache parameters (SDM Vol. 2A, CPUID leaf 4):
			// EAX[31:26] cores per package - 1, EAX[25:14] logical
			// processors sharing this cache - 1 (one: no SMT). A
			// subleaf with cache type 0 (EAX[4:0]) ends the list.
			if e.EAX&0x1f != 0 {
				e.EAX = e.EAX&0x03ffffff | uint32(min(p.CPUs, 64)-1)<<26
				e.EAX &^= 0xfff << 14
			}
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
		// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX; EAX = highest KVM leaf
		// (Documentation/virt/kvm/x86/cpuid.rst). Leaf 0x40000001 lists
		// no paravirtual features: the host did not offer any.
		out = append(out,
			CPUIDEntry{Function: kvmSignatureLeaf, EAX: kvmFeaturesLeaf, EBX: 0x4b4d564b, ECX: 0x564b4d56, EDX: 0x4d},
			CPUIDEntry{Function: kvmFeaturesLeaf})
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
