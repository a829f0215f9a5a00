package kvm

// Struct layouts of <linux/kvm.h> and <asm/kvm.h> for x86_64. Field order,
// sizes and padding match the kernel's; TestHeaderLayouts compiles the
// headers with the C compiler and compares.

// UserMemoryRegion is struct kvm_userspace_memory_region (api.rst 4.35).
type UserMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// Memory region flags (api.rst 4.35).
const (
	MemLogDirtyPages = 1 << 0 // KVM_MEM_LOG_DIRTY_PAGES
	MemReadOnly      = 1 << 1 // KVM_MEM_READONLY: guest writes exit as MMIO
)

// Regs is struct kvm_regs (api.rst 4.11).
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable (GDTR/IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs (api.rst 4.13).
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [4]uint64 // (KVM_NR_INTERRUPTS + 63) / 64
}

// FPU is struct kvm_fpu (api.rst 4.22).
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// MSREntry is struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// CPUIDEntry is struct kvm_cpuid_entry2 (api.rst 4.46).
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// CPUID entry flags.
const (
	CPUIDFlagSignificantIndex = 1 << 0 // KVM_CPUID_FLAG_SIGNIFCANT_INDEX
)

// LAPICState is struct kvm_lapic_state: the 1 KiB local APIC register page.
type LAPICState struct {
	Regs [1024]byte
}

// MP states (api.rst 4.38).
const (
	MPStateRunnable      = 0 // KVM_MP_STATE_RUNNABLE
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSIPIReceived  = 4
)

// VCPUEvents is struct kvm_vcpu_events (api.rst 4.31): pending and injected
// exceptions, interrupts, NMIs and SMIs.
type VCPUEvents struct {
	Exception struct {
		Injected     uint8
		Nr           uint8
		HasErrorCode uint8
		Pending      uint8
		ErrorCode    uint32
	}
	Interrupt struct {
		Injected uint8
		Nr       uint8
		Soft     uint8
		Shadow   uint8
	}
	NMI struct {
		Injected uint8
		Pending  uint8
		Masked   uint8
		_        uint8
	}
	SIPIVector uint32
	Flags      uint32
	SMI        struct {
		SMM          uint8
		Pending      uint8
		SMMInsideNMI uint8
		LatchedInit  uint8
	}
	TripleFaultPending  uint8
	_                   [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// VCPUEvents.Flags bits.
const (
	VCPUEventValidNMIPending = 1 << 0
	VCPUEventValidSIPIVector = 1 << 1
	VCPUEventValidShadow     = 1 << 2
	VCPUEventValidSMM        = 1 << 3
	VCPUEventValidPayload    = 1 << 4
)

// Translation is struct kvm_translation (api.rst 4.15).
type Translation struct {
	LinearAddress   uint64
	PhysicalAddress uint64
	Valid           uint8
	Writeable       uint8
	Usermode        uint8
	_               [5]uint8
}

// GuestDebug is struct kvm_guest_debug for x86 (api.rst 4.59).
type GuestDebug struct {
	Control  uint32
	_        uint32
	DebugReg [8]uint64
}

// irqLevel is struct kvm_irq_level.
type irqLevel struct {
	IRQOrStatus uint32
	Level       uint32
}

// IRQChip is struct kvm_irqchip: one of PIC master, PIC slave or IOAPIC
// (api.rst 4.26).
type IRQChip struct {
	ChipID uint32
	_      uint32
	Chip   [512]byte
}

// IRQ chip ids for IRQChip.ChipID.
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// pitConfig is struct kvm_pit_config.
type pitConfig struct {
	Flags uint32
	_     [15]uint32
}

// PITSpeakerDummy is KVM_PIT_SPEAKER_DUMMY: emulate port 0x61 in the kernel.
const PITSpeakerDummy = 1

// irqfd is struct kvm_irqfd (api.rst 4.75).
type irqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8
}

const (
	irqfdFlagDeassign = 1 << 0
	irqfdFlagResample = 1 << 1
)

// ioeventfd is struct kvm_ioeventfd (api.rst 4.59).
type ioeventfd struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]uint8
}

const (
	ioeventfdFlagDatamatch = 1 << 0
	ioeventfdFlagPIO       = 1 << 1
	ioeventfdFlagDeassign  = 1 << 2
)

// MSI is struct kvm_msi (api.rst 4.71).
type MSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]uint8
}

// ClockData is struct kvm_clock_data (api.rst 4.67).
type ClockData struct {
	Clock    uint64
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}

// enableCap is struct kvm_enable_cap (api.rst 4.37).
type enableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	_     [64]uint8
}

// Capability numbers for CheckExtension, <linux/kvm.h>.
const (
	CapIRQChip                = 0
	CapHLT                    = 1
	CapUserMemory             = 3
	CapSetTSSAddr             = 4
	CapExtCPUID               = 7
	CapNrVCPUs                = 9
	CapNrMemSlots             = 10
	CapPIT                    = 11
	CapMPState                = 14
	CapSyncMMU                = 16
	CapSetGuestDebug          = 23
	CapIRQRouting             = 25
	CapIRQInjectStatus        = 26
	CapIRQFD                  = 32
	CapPIT2                   = 33
	CapPITState2              = 35
	CapIOEventFD              = 36
	CapSetIdentityMapAddr     = 37
	CapAdjustClock            = 39
	CapVCPUEvents             = 41
	CapXSave                  = 55
	CapXCRS                   = 56
	CapTSCControl             = 60
	CapGetTSCKHz              = 61
	CapMaxVCPUs               = 66
	CapSignalMSI              = 77
	CapReadonlyMem            = 81
	CapIRQFDResample          = 82
	CapIOEventFDAnyLength     = 122
	CapMaxVCPUID              = 128
	CapImmediateExit          = 136
	CapX86DisableExits        = 143
	CapExitOnEmulationFailure = 204
)
