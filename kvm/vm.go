package kvm

import (
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine (the fd returned by KVM_CREATE_VM).
type VM struct {
	fd      int
	sys     *System
	runSize int

	mu    sync.Mutex
	vcpus []*VCPU
}

// FD returns the raw VM file descriptor.
func (vm *VM) FD() int { return vm.fd }

// Close closes every vCPU and the VM. Guest memory is the caller's to free.
func (vm *VM) Close() error {
	vm.mu.Lock()
	vcpus := vm.vcpus
	vm.vcpus = nil
	vm.mu.Unlock()
	for _, c := range vcpus {
		c.Close()
	}
	return unix.Close(vm.fd)
}

// CheckExtension is KVM_CHECK_EXTENSION on the VM fd, which reports what
// this VM (rather than the host in general) supports.
func (vm *VM) CheckExtension(capability int) int {
	r, err := ioctlVal(vm.fd, kvmCheckExtension, uintptr(capability))
	if err != nil {
		return 0
	}
	return int(r)
}

// AllocateMemory maps size bytes of anonymous, private, zeroed memory for
// use as guest RAM. Pages are not touched, so only what the guest uses
// becomes resident. Free it with FreeMemory.
func AllocateMemory(size int) ([]byte, error) {
	if size <= 0 || size%unix.Getpagesize() != 0 {
		return nil, fmt.Errorf("kvm: guest memory size %d is not a positive multiple of the page size", size)
	}
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("kvm: mmap %d bytes of guest memory: %w", size, err)
	}
	return b, nil
}

// FreeMemory unmaps memory from AllocateMemory.
func FreeMemory(b []byte) error { return unix.Munmap(b) }

// SetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION (api.rst 4.35): maps
// mem at guest physical address gpa in slot. flags may include MemReadOnly
// (guest writes then exit as MMIO). A nil or empty mem deletes the slot.
// mem must stay mapped for as long as the slot exists.
func (vm *VM) SetUserMemoryRegion(slot uint32, flags uint32, gpa uint64, mem []byte) error {
	r := UserMemoryRegion{Slot: slot, Flags: flags, GuestPhysAddr: gpa}
	if len(mem) > 0 {
		r.MemorySize = uint64(len(mem))
		r.UserspaceAddr = uint64(uintptr(unsafe.Pointer(&mem[0])))
	}
	if _, err := ioctlPtr(vm.fd, kvmSetUserMemoryRegion, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_USER_MEMORY_REGION slot %d at %#x (%d bytes, flags %#x): %w", slot, gpa, len(mem), flags, err)
	}
	return nil
}

// SetTSSAddr is KVM_SET_TSS_ADDR (api.rst 4.48): three pages of guest
// physical address space, outside RAM and MMIO, for Intel real-mode support.
func (vm *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctlVal(vm.fd, kvmSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_TSS_ADDR %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr is KVM_SET_IDENTITY_MAP_ADDR (api.rst 4.57): one page
// for the identity-map page table of Intel real mode.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	a := addr
	if _, err := ioctlPtr(vm.fd, kvmSetIdentityMapAddr, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_IDENTITY_MAP_ADDR %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip is KVM_CREATE_IRQCHIP (api.rst 4.24): an in-kernel PIC pair,
// IOAPIC and per-vCPU local APICs. Call it before creating vCPUs.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctlVal(vm.fd, kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("kvm: KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// CreatePIT2 is KVM_CREATE_PIT2 (api.rst 4.58): an in-kernel i8254 PIT.
// flags may be PITSpeakerDummy.
func (vm *VM) CreatePIT2(flags uint32) error {
	c := pitConfig{Flags: flags}
	if _, err := ioctlPtr(vm.fd, kvmCreatePIT2, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("kvm: KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// IRQLine is KVM_IRQ_LINE (api.rst 4.25): sets the level of a GSI on the
// in-kernel irqchip. Edge interrupts are a raise followed by a lower.
func (vm *VM) IRQLine(gsi uint32, level bool) error {
	l := irqLevel{IRQOrStatus: gsi}
	if level {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd, kvmIRQLine, unsafe.Pointer(&l)); err != nil {
		return fmt.Errorf("kvm: KVM_IRQ_LINE gsi %d level %v: %w", gsi, level, err)
	}
	return nil
}

// IRQLineStatus is KVM_IRQ_LINE_STATUS: like IRQLine, and returns the
// delivery status (>0 delivered, 0 coalesced/masked, <0 error).
func (vm *VM) IRQLineStatus(gsi uint32, level bool) (int32, error) {
	l := irqLevel{IRQOrStatus: gsi}
	if level {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd, kvmIRQLineStatus, unsafe.Pointer(&l)); err != nil {
		return 0, fmt.Errorf("kvm: KVM_IRQ_LINE_STATUS gsi %d: %w", gsi, err)
	}
	return int32(l.IRQOrStatus), nil
}

// GetIRQChip is KVM_GET_IRQCHIP (api.rst 4.26).
func (vm *VM) GetIRQChip(chipID uint32) (*IRQChip, error) {
	c := &IRQChip{ChipID: chipID}
	if _, err := ioctlPtr(vm.fd, kvmGetIRQChip, unsafe.Pointer(c)); err != nil {
		return nil, fmt.Errorf("kvm: KVM_GET_IRQCHIP %d: %w", chipID, err)
	}
	return c, nil
}

// SetIRQChip is KVM_SET_IRQCHIP (api.rst 4.27).
func (vm *VM) SetIRQChip(c *IRQChip) error {
	if _, err := ioctlPtr(vm.fd, kvmSetIRQChip, unsafe.Pointer(c)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_IRQCHIP %d: %w", c.ChipID, err)
	}
	return nil
}

// SignalMSI is KVM_SIGNAL_MSI (api.rst 4.71): injects a message signalled
// interrupt. It returns >0 when delivered, 0 when blocked by the guest.
func (vm *VM) SignalMSI(m MSI) (int, error) {
	r, err := ioctlPtr(vm.fd, kvmSignalMSI, unsafe.Pointer(&m))
	if err != nil {
		return 0, fmt.Errorf("kvm: KVM_SIGNAL_MSI addr %#x data %#x: %w", uint64(m.AddressHi)<<32|uint64(m.AddressLo), m.Data, err)
	}
	return int(r), nil
}

// IRQFD is KVM_IRQFD (api.rst 4.75): a write to eventfd efd raises GSI gsi.
// With resampleFD >= 0 the GSI is level-triggered: it stays asserted until
// the guest EOIs it, and then resampleFD is signalled.
func (vm *VM) IRQFD(efd int, gsi uint32, resampleFD int) error {
	a := irqfd{FD: uint32(efd), GSI: gsi}
	if resampleFD >= 0 {
		a.Flags |= irqfdFlagResample
		a.ResampleFD = uint32(resampleFD)
	}
	if _, err := ioctlPtr(vm.fd, kvmIRQFD, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("kvm: KVM_IRQFD fd %d gsi %d: %w", efd, gsi, err)
	}
	return nil
}

// RemoveIRQFD detaches an eventfd registered with IRQFD.
func (vm *VM) RemoveIRQFD(efd int, gsi uint32) error {
	a := irqfd{FD: uint32(efd), GSI: gsi, Flags: irqfdFlagDeassign}
	if _, err := ioctlPtr(vm.fd, kvmIRQFD, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("kvm: KVM_IRQFD deassign fd %d gsi %d: %w", efd, gsi, err)
	}
	return nil
}

// IOEventFD describes a KVM_IOEVENTFD registration (api.rst 4.59): a guest
// write of Len bytes (0 = any length, with CapIOEventFDAnyLength) to Addr
// signals the eventfd FD instead of exiting to userspace.
type IOEventFD struct {
	FD        int
	Addr      uint64
	Len       uint32
	PIO       bool    // port I/O rather than MMIO
	Datamatch *uint64 // only writes of this value match
}

func (e IOEventFD) raw(deassign bool) ioeventfd {
	a := ioeventfd{Addr: e.Addr, Len: e.Len, FD: int32(e.FD)}
	if e.PIO {
		a.Flags |= ioeventfdFlagPIO
	}
	if e.Datamatch != nil {
		a.Flags |= ioeventfdFlagDatamatch
		a.Datamatch = *e.Datamatch
	}
	if deassign {
		a.Flags |= ioeventfdFlagDeassign
	}
	return a
}

// AddIOEventFD registers e.
func (vm *VM) AddIOEventFD(e IOEventFD) error {
	a := e.raw(false)
	if _, err := ioctlPtr(vm.fd, kvmIOEventFD, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("kvm: KVM_IOEVENTFD addr %#x len %d: %w", e.Addr, e.Len, err)
	}
	return nil
}

// RemoveIOEventFD removes a registration made with AddIOEventFD.
func (vm *VM) RemoveIOEventFD(e IOEventFD) error {
	a := e.raw(true)
	if _, err := ioctlPtr(vm.fd, kvmIOEventFD, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("kvm: KVM_IOEVENTFD deassign addr %#x: %w", e.Addr, err)
	}
	return nil
}

// GetClock is KVM_GET_CLOCK (api.rst 4.67): the guest's kvmclock in ns.
func (vm *VM) GetClock() (ClockData, error) {
	var c ClockData
	if _, err := ioctlPtr(vm.fd, kvmGetClock, unsafe.Pointer(&c)); err != nil {
		return c, fmt.Errorf("kvm: KVM_GET_CLOCK: %w", err)
	}
	return c, nil
}

// SetClock is KVM_SET_CLOCK (api.rst 4.68).
func (vm *VM) SetClock(c ClockData) error {
	if _, err := ioctlPtr(vm.fd, kvmSetClock, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_CLOCK: %w", err)
	}
	return nil
}

// EnableCap is KVM_ENABLE_CAP on the VM (api.rst 4.37, section 7).
func (vm *VM) EnableCap(capability uint32, args ...uint64) error {
	c := enableCap{Cap: capability}
	if len(args) > len(c.Args) {
		return fmt.Errorf("kvm: KVM_ENABLE_CAP %d: %d args, at most %d", capability, len(args), len(c.Args))
	}
	copy(c.Args[:], args)
	if _, err := ioctlPtr(vm.fd, kvmEnableCap, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("kvm: KVM_ENABLE_CAP %d: %w", capability, err)
	}
	return nil
}

// CreateVCPU is KVM_CREATE_VCPU (api.rst 4.7) and maps its kvm_run page.
// id is the vCPU's APIC ID.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	r, err := ioctlVal(vm.fd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_CREATE_VCPU %d: %w", id, err)
	}
	fd := int(r)
	unix.CloseOnExec(fd)
	if vm.runSize < int(unsafe.Sizeof(runHeader{})) {
		unix.Close(fd)
		return nil, fmt.Errorf("kvm: vCPU mmap size %d is smaller than struct kvm_run", vm.runSize)
	}
	run, err := unix.Mmap(fd, 0, vm.runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kvm: mmap kvm_run of vCPU %d: %w", id, err)
	}
	c := &VCPU{id: id, fd: fd, vm: vm, runMem: run, run: (*runHeader)(unsafe.Pointer(&run[0]))}
	vm.mu.Lock()
	vm.vcpus = append(vm.vcpus, c)
	vm.mu.Unlock()
	return c, nil
}
