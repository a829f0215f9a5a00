package kvm

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// ExitReason is kvm_run.exit_reason (<linux/kvm.h> KVM_EXIT_*).
type ExitReason uint32

// Exit reasons.
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
	ExitX86RDMSR      ExitReason = 29
	ExitX86WRMSR      ExitReason = 30
	ExitX86BusLock    ExitReason = 33
	ExitNotify        ExitReason = 37
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "UNKNOWN", ExitException: "EXCEPTION", ExitIO: "IO", ExitHypercall: "HYPERCALL",
	ExitDebug: "DEBUG", ExitHLT: "HLT", ExitMMIO: "MMIO", ExitIRQWindowOpen: "IRQ_WINDOW_OPEN",
	ExitShutdown: "SHUTDOWN", ExitFailEntry: "FAIL_ENTRY", ExitIntr: "INTR", ExitSetTPR: "SET_TPR",
	ExitTPRAccess: "TPR_ACCESS", ExitNMI: "NMI", ExitInternalError: "INTERNAL_ERROR",
	ExitSystemEvent: "SYSTEM_EVENT", ExitIOAPICEOI: "IOAPIC_EOI", ExitX86RDMSR: "X86_RDMSR",
	ExitX86WRMSR: "X86_WRMSR", ExitX86BusLock: "X86_BUS_LOCK", ExitNotify: "NOTIFY",
}

func (r ExitReason) String() string {
	if n, ok := exitNames[r]; ok {
		return "KVM_EXIT_" + n
	}
	return fmt.Sprintf("KVM_EXIT_%d", uint32(r))
}

// Exit is a decoded KVM_RUN exit. The concrete types are *IOExit, *MMIOExit,
// *HLTExit, *ShutdownExit, *FailEntryExit, *InternalErrorExit,
// *SystemEventExit, *DebugExit, *ExceptionExit, *IntrExit, *IRQWindowExit,
// *IOAPICEOIExit and *OtherExit.
type Exit interface {
	Reason() ExitReason
}

// IOExit is a port I/O access (KVM_EXIT_IO). For an IN, write the result
// into Data before the next Run; for an OUT, Data holds what the guest
// wrote. A string instruction (rep ins/outs) has Count > 1 elements of Size
// bytes each, back to back in Data.
type IOExit struct {
	Port  uint16
	Size  uint8 // bytes per element: 1, 2 or 4
	In    bool  // KVM_EXIT_IO_IN
	Count uint32
	Data  []byte // aliases the kvm_run page
}

// MMIOExit is a memory access outside every memory slot (KVM_EXIT_MMIO).
// For a read, fill Data before the next Run.
type MMIOExit struct {
	Addr    uint64
	IsWrite bool
	Data    []byte // len 1..8, aliases the kvm_run page
}

// HLTExit is a HLT without an in-kernel irqchip (KVM_EXIT_HLT).
type HLTExit struct{}

// ShutdownExit is a triple fault (KVM_EXIT_SHUTDOWN).
type ShutdownExit struct{}

// FailEntryExit means the hardware refused to enter the guest
// (KVM_EXIT_FAIL_ENTRY); Reason is hardware specific.
type FailEntryExit struct {
	HardwareReason uint64
	CPU            uint32
}

// Internal error sub-reasons (KVM_INTERNAL_ERROR_*).
const (
	InternalErrorEmulation            = 1
	InternalErrorSimulEx              = 2
	InternalErrorDeliveryEv           = 3
	InternalErrorUnexpectedExitReason = 4
)

// InternalErrorExit is KVM_EXIT_INTERNAL_ERROR. For Suberror ==
// InternalErrorEmulation with CapExitOnEmulationFailure data, Insn holds
// the bytes of the instruction KVM's emulator could not execute.
type InternalErrorExit struct {
	Suberror uint32
	Data     []uint64
	Insn     []byte
}

// IsEmulationFailure reports whether KVM's instruction emulator gave up.
func (e *InternalErrorExit) IsEmulationFailure() bool {
	return e.Suberror == InternalErrorEmulation
}

// System event types (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
	SystemEventWakeup   = 4
	SystemEventSuspend  = 5
)

// SystemEventExit is KVM_EXIT_SYSTEM_EVENT (e.g. a PSCI/ACPI shutdown).
type SystemEventExit struct {
	Type uint32
	Data []uint64
}

// DebugExit is KVM_EXIT_DEBUG.
type DebugExit struct {
	Exception uint32
	PC        uint64
	DR6, DR7  uint64
}

// ExceptionExit is KVM_EXIT_EXCEPTION.
type ExceptionExit struct {
	Exception uint32
	ErrorCode uint32
}

// IntrExit: KVM_RUN was interrupted by a signal, e.g. by Kick.
type IntrExit struct {
	Kicked bool // immediate_exit was set
}

// IRQWindowExit is KVM_EXIT_IRQ_WINDOW_OPEN.
type IRQWindowExit struct{}

// IOAPICEOIExit is KVM_EXIT_IOAPIC_EOI (split irqchip).
type IOAPICEOIExit struct{ Vector uint8 }

// OtherExit is any exit this package does not decode further.
type OtherExit struct{ Code ExitReason }

func (*IOExit) Reason() ExitReason            { return ExitIO }
func (*MMIOExit) Reason() ExitReason          { return ExitMMIO }
func (*HLTExit) Reason() ExitReason           { return ExitHLT }
func (*ShutdownExit) Reason() ExitReason      { return ExitShutdown }
func (*FailEntryExit) Reason() ExitReason     { return ExitFailEntry }
func (*InternalErrorExit) Reason() ExitReason { return ExitInternalError }
func (*SystemEventExit) Reason() ExitReason   { return ExitSystemEvent }
func (*DebugExit) Reason() ExitReason         { return ExitDebug }
func (*ExceptionExit) Reason() ExitReason     { return ExitException }
func (*IntrExit) Reason() ExitReason          { return ExitIntr }
func (*IRQWindowExit) Reason() ExitReason     { return ExitIRQWindowOpen }
func (*IOAPICEOIExit) Reason() ExitReason     { return ExitIOAPICEOI }
func (e *OtherExit) Reason() ExitReason       { return e.Code }

// exitUnionOffset is offsetof(struct kvm_run, exit union) — after the
// 32-byte header (checked by TestHeaderLayouts).
var exitUnionOffset = int(unsafe.Offsetof(runHeader{}.Exit))

var le = binary.LittleEndian

// decodeExit reads the exit union of the run page. Offsets inside the
// union follow struct kvm_run in <linux/kvm.h>.
func (c *VCPU) decodeExit() (Exit, error) {
	u := c.run.Exit[:]
	switch r := ExitReason(c.run.ExitReason); r {
	case ExitIO:
		// struct { __u8 direction, size; __u16 port; __u32 count; __u64 data_offset; } io;
		e := &IOExit{In: u[0] == 0, Size: u[1], Port: le.Uint16(u[2:]), Count: le.Uint32(u[4:])}
		off := le.Uint64(u[8:])
		n := uint64(e.Size) * uint64(e.Count)
		if off > uint64(len(c.runMem)) || n > uint64(len(c.runMem))-off {
			return nil, fmt.Errorf("kvm: vCPU %d: IO exit data [%#x,+%d) outside the %d-byte run page", c.id, off, n, len(c.runMem))
		}
		e.Data = c.runMem[off : off+n : off+n]
		return e, nil
	case ExitMMIO:
		// struct { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; } mmio;
		n := le.Uint32(u[16:])
		if n > 8 {
			return nil, fmt.Errorf("kvm: vCPU %d: MMIO exit of %d bytes", c.id, n)
		}
		return &MMIOExit{Addr: le.Uint64(u[0:]), Data: u[8 : 8+n : 8+n], IsWrite: u[20] != 0}, nil
	case ExitHLT:
		return &HLTExit{}, nil
	case ExitShutdown:
		return &ShutdownExit{}, nil
	case ExitFailEntry:
		return &FailEntryExit{HardwareReason: le.Uint64(u[0:]), CPU: le.Uint32(u[8:])}, nil
	case ExitInternalError:
		// struct { __u32 suberror; __u32 ndata; __u64 data[16]; } internal;
		// overlaid by emulation_failure { suberror, ndata, __u64 flags,
		// __u8 insn_size, insn_bytes[15] } when flags bit 0 is set.
		e := &InternalErrorExit{Suberror: le.Uint32(u[0:])}
		nd := min(le.Uint32(u[4:]), 16)
		for i := range nd {
			e.Data = append(e.Data, le.Uint64(u[8+8*i:]))
		}
		if e.Suberror == InternalErrorEmulation && nd >= 3 && le.Uint64(u[8:])&1 != 0 {
			sz := min(int(u[16]), 15)
			e.Insn = append([]byte(nil), u[17:17+sz]...)
		}
		return e, nil
	case ExitSystemEvent:
		// struct { __u32 type; __u32 ndata; union { __u64 flags; __u64 data[16]; }; } system_event;
		e := &SystemEventExit{Type: le.Uint32(u[0:])}
		nd := min(le.Uint32(u[4:]), 16)
		for i := range nd {
			e.Data = append(e.Data, le.Uint64(u[8+8*i:]))
		}
		return e, nil
	case ExitDebug:
		return &DebugExit{Exception: le.Uint32(u[0:]), PC: le.Uint64(u[8:]), DR6: le.Uint64(u[16:]), DR7: le.Uint64(u[24:])}, nil
	case ExitException:
		return &ExceptionExit{Exception: le.Uint32(u[0:]), ErrorCode: le.Uint32(u[4:])}, nil
	case ExitIntr:
		return &IntrExit{Kicked: c.run.ImmediateExit != 0}, nil
	case ExitIRQWindowOpen:
		return &IRQWindowExit{}, nil
	case ExitIOAPICEOI:
		return &IOAPICEOIExit{Vector: u[0]}, nil
	default:
		return &OtherExit{Code: r}, nil
	}
}
