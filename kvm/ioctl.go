package kvm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl request encoding, <asm-generic/ioctl.h>: dir<<30 | size<<16 | type<<8 | nr.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	kvmio = 0xAE // KVMIO, <linux/kvm.h>
)

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | kvmio<<8 | nr }
func io_(nr uintptr) uintptr            { return ioc(iocNone, nr, 0) }
func iow(nr, size uintptr) uintptr      { return ioc(iocWrite, nr, size) }
func ior(nr, size uintptr) uintptr      { return ioc(iocRead, nr, size) }
func iowr(nr, size uintptr) uintptr     { return ioc(iocRead|iocWrite, nr, size) }

// ioctl numbers, <linux/kvm.h>. Sizes are those of the argument structs.
var (
	// System ioctls (api.rst 4.1-4.4, 4.46, 4.88).
	kvmGetAPIVersion       = io_(0x00)
	kvmCreateVM            = io_(0x01)
	kvmGetMSRIndexList     = iowr(0x02, 4) // struct kvm_msr_list
	kvmCheckExtension      = io_(0x03)
	kvmGetVCPUMmapSize     = io_(0x04)
	kvmGetSupportedCPUID   = iowr(0x05, 8) // struct kvm_cpuid2
	kvmGetEmulatedCPUID    = iowr(0x09, 8)
	kvmGetMSRFeatureIndexL = iowr(0x0a, 4)

	// VM ioctls.
	kvmCreateVCPU          = io_(0x41)
	kvmSetUserMemoryRegion = iow(0x46, unsafe.Sizeof(UserMemoryRegion{}))
	kvmSetTSSAddr          = io_(0x47)
	kvmSetIdentityMapAddr  = iow(0x48, 8)
	kvmCreateIRQChip       = io_(0x60)
	kvmIRQLine             = iow(0x61, unsafe.Sizeof(irqLevel{}))
	kvmIRQLineStatus       = iowr(0x67, unsafe.Sizeof(irqLevel{}))
	kvmGetIRQChip          = iowr(0x62, unsafe.Sizeof(IRQChip{}))
	kvmSetIRQChip          = ior(0x63, unsafe.Sizeof(IRQChip{}))
	kvmIRQFD               = iow(0x76, unsafe.Sizeof(irqfd{}))
	kvmCreatePIT2          = iow(0x77, unsafe.Sizeof(pitConfig{}))
	kvmIOEventFD           = iow(0x79, unsafe.Sizeof(ioeventfd{}))
	kvmSetClock            = iow(0x7b, unsafe.Sizeof(ClockData{}))
	kvmGetClock            = ior(0x7c, unsafe.Sizeof(ClockData{}))
	kvmEnableCap           = iow(0xa3, unsafe.Sizeof(enableCap{}))
	kvmSignalMSI           = iow(0xa5, unsafe.Sizeof(MSI{}))

	// vCPU ioctls.
	kvmRun           = io_(0x80)
	kvmGetRegs       = ior(0x81, unsafe.Sizeof(Regs{}))
	kvmSetRegs       = iow(0x82, unsafe.Sizeof(Regs{}))
	kvmGetSregs      = ior(0x83, unsafe.Sizeof(Sregs{}))
	kvmSetSregs      = iow(0x84, unsafe.Sizeof(Sregs{}))
	kvmTranslate     = iowr(0x85, unsafe.Sizeof(Translation{}))
	kvmInterrupt     = iow(0x86, 4)
	kvmGetMSRs       = iowr(0x88, 8) // struct kvm_msrs
	kvmSetMSRs       = iow(0x89, 8)
	kvmGetFPU        = ior(0x8c, unsafe.Sizeof(FPU{}))
	kvmSetFPU        = iow(0x8d, unsafe.Sizeof(FPU{}))
	kvmGetLAPIC      = ior(0x8e, unsafe.Sizeof(LAPICState{}))
	kvmSetLAPIC      = iow(0x8f, unsafe.Sizeof(LAPICState{}))
	kvmSetCPUID2     = iow(0x90, 8)
	kvmGetCPUID2     = iowr(0x91, 8)
	kvmGetMPState    = ior(0x98, 4)
	kvmSetMPState    = iow(0x99, 4)
	kvmSetGuestDebug = iow(0x9b, unsafe.Sizeof(GuestDebug{}))
	kvmGetVCPUEvents = ior(0x9f, unsafe.Sizeof(VCPUEvents{}))
	kvmSetVCPUEvents = iow(0xa0, unsafe.Sizeof(VCPUEvents{}))
	// KVM_GET_TSC_KHZ shares nr 0xa3 with KVM_ENABLE_CAP; the direction
	// and size bits tell them apart.
	kvmGetTSCKHz = io_(0xa3)
)

// ioctlPtr issues an ioctl whose argument is a pointer to a struct. The
// pointer is converted in the Syscall expression itself, as unsafe.Pointer's
// rule (4) requires. EINTR is retried except for KVM_RUN, where it means the
// vCPU was kicked.
func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if errno == unix.EINTR && req != kvmRun {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return r, nil
	}
}

// ioctlVal issues an ioctl whose argument is an integer.
func ioctlVal(fd int, req, arg uintptr) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if errno == unix.EINTR && req != kvmRun {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return r, nil
	}
}
