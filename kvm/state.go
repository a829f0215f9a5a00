// This file owns the KVM ioctls that only saving and restoring a machine
// needs (a snapshot): XSAVE and XCR state, debug registers, the in-kernel
// PIT's state, and a file-backed private mapping for guest memory. The
// struct layouts mirror <linux/kvm.h> (checked by TestHeaderLayouts).

package kvm

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// XSave is struct kvm_xsave (api.rst 4.42): the vCPU's XSAVE area, in the
// format of the XSAVE instruction (legacy region, header, components). A
// kernel whose KVM_CAP_XSAVE2 reports more than 4096 bytes (AMX) needs
// the larger buffer of GetXSave2.
type XSave struct {
	Region [1024]uint32
}

// XCR is struct kvm_xcr.
type XCR struct {
	XCR   uint32
	_     uint32
	Value uint64
}

// XCRs is struct kvm_xcrs (api.rst 4.44): the extended control registers
// (XCR0 is the XSAVE feature mask the guest enabled).
type XCRs struct {
	NrXCRs uint32
	Flags  uint32
	XCRs   [16]XCR
	_      [16]uint64
}

// DebugRegs is struct kvm_debugregs (api.rst 4.45).
type DebugRegs struct {
	DB    [4]uint64
	DR6   uint64
	DR7   uint64
	Flags uint64
	_     [9]uint64
}

// PITChannel is struct kvm_pit_channel_state.
type PITChannel struct {
	Count         uint32
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64
}

// PITState2 is struct kvm_pit_state2 (api.rst 4.72).
type PITState2 struct {
	Channels [3]PITChannel
	Flags    uint32
	_        [9]uint32
}

// CapXSave2 is KVM_CAP_XSAVE2: CheckExtension returns the size in bytes of
// the buffer KVM_GET_XSAVE2 fills (api.rst 4.42).
const CapXSave2 = 208

var (
	kvmGetXSave     = ior(0xa4, unsafe.Sizeof(XSave{}))
	kvmSetXSave     = iow(0xa5, unsafe.Sizeof(XSave{}))
	kvmGetXSave2    = ior(0xcf, unsafe.Sizeof(XSave{}))
	kvmGetXCRs      = ior(0xa6, unsafe.Sizeof(XCRs{}))
	kvmSetXCRs      = iow(0xa7, unsafe.Sizeof(XCRs{}))
	kvmGetDebugRegs = ior(0xa1, unsafe.Sizeof(DebugRegs{}))
	kvmSetDebugRegs = iow(0xa2, unsafe.Sizeof(DebugRegs{}))
	kvmGetPIT2      = ior(0x9f, unsafe.Sizeof(PITState2{}))
	kvmSetPIT2      = iow(0xa0, unsafe.Sizeof(PITState2{}))
)

// xsaveSize is the XSAVE buffer the kernel wants: KVM_CAP_XSAVE2's answer
// when it is larger than struct kvm_xsave, else the struct's 4096 bytes.
func (c *VCPU) xsaveSize() int {
	n := int(unsafe.Sizeof(XSave{}))
	if c.vm != nil {
		if s := c.vm.CheckExtension(CapXSave2); s > n {
			return s
		}
	}
	return n
}

// GetXSave returns the vCPU's XSAVE area (KVM_GET_XSAVE2 where the kernel
// has it, which covers dynamically enabled components; else KVM_GET_XSAVE).
func (c *VCPU) GetXSave() ([]byte, error) {
	n := c.xsaveSize()
	buf := make([]uint64, n/8)
	req := kvmGetXSave
	if n > int(unsafe.Sizeof(XSave{})) {
		req = kvmGetXSave2
	}
	if _, err := ioctlPtr(c.fd, req, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("kvm: KVM_GET_XSAVE vCPU %d: %w", c.id, err)
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), n), nil
}

// SetXSave is KVM_SET_XSAVE (api.rst 4.43). b must be as large as what
// GetXSave returns on this kernel.
func (c *VCPU) SetXSave(b []byte) error {
	n := c.xsaveSize()
	if len(b) != n {
		return fmt.Errorf("kvm: KVM_SET_XSAVE vCPU %d: %d bytes of state, this kernel's XSAVE area is %d", c.id, len(b), n)
	}
	buf := make([]uint64, n/8)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), n), b)
	if _, err := ioctlPtr(c.fd, kvmSetXSave, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("kvm: KVM_SET_XSAVE vCPU %d: %w", c.id, err)
	}
	return nil
}

// GetXCRs is KVM_GET_XCRS (api.rst 4.44).
func (c *VCPU) GetXCRs() (XCRs, error) {
	var x XCRs
	if _, err := ioctlPtr(c.fd, kvmGetXCRs, unsafe.Pointer(&x)); err != nil {
		return x, fmt.Errorf("kvm: KVM_GET_XCRS vCPU %d: %w", c.id, err)
	}
	return x, nil
}

// SetXCRs is KVM_SET_XCRS (api.rst 4.45).
func (c *VCPU) SetXCRs(x XCRs) error {
	if _, err := ioctlPtr(c.fd, kvmSetXCRs, unsafe.Pointer(&x)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_XCRS vCPU %d: %w", c.id, err)
	}
	return nil
}

// GetDebugRegs is KVM_GET_DEBUGREGS (api.rst 4.45).
func (c *VCPU) GetDebugRegs() (DebugRegs, error) {
	var d DebugRegs
	if _, err := ioctlPtr(c.fd, kvmGetDebugRegs, unsafe.Pointer(&d)); err != nil {
		return d, fmt.Errorf("kvm: KVM_GET_DEBUGREGS vCPU %d: %w", c.id, err)
	}
	return d, nil
}

// SetDebugRegs is KVM_SET_DEBUGREGS (api.rst 4.46). Flags must be 0.
func (c *VCPU) SetDebugRegs(d DebugRegs) error {
	d.Flags = 0
	if _, err := ioctlPtr(c.fd, kvmSetDebugRegs, unsafe.Pointer(&d)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_DEBUGREGS vCPU %d: %w", c.id, err)
	}
	return nil
}

// GetPIT2 is KVM_GET_PIT2 (api.rst 4.72): the in-kernel i8254's state.
func (vm *VM) GetPIT2() (PITState2, error) {
	var p PITState2
	if _, err := ioctlPtr(vm.fd, kvmGetPIT2, unsafe.Pointer(&p)); err != nil {
		return p, fmt.Errorf("kvm: KVM_GET_PIT2: %w", err)
	}
	return p, nil
}

// SetPIT2 is KVM_SET_PIT2 (api.rst 4.73).
func (vm *VM) SetPIT2(p PITState2) error {
	if _, err := ioctlPtr(vm.fd, kvmSetPIT2, unsafe.Pointer(&p)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_PIT2: %w", err)
	}
	return nil
}

// MapMemoryFile maps size bytes of f as guest memory, privately: the pages
// are the file's (in the page cache, shared by every mapping of it) until
// the guest writes one, which then becomes this process's own copy
// (MAP_PRIVATE copy-on-write). It is how a VM restored from a snapshot
// shares the snapshot's memory with every other VM restored from it. The
// file must be at least size bytes long; FreeMemory unmaps it.
func MapMemoryFile(f *os.File, size int) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("kvm: guest memory file: %w", err)
	}
	if st.Size() < int64(size) {
		return nil, fmt.Errorf("kvm: guest memory file %s has %d bytes, the VM needs %d", f.Name(), st.Size(), size)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("kvm: mmap guest memory file: %w", err)
	}
	return b, nil
}
