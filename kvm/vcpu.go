package kvm

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// runHeader is the fixed part of struct kvm_run (api.rst 5), the page
// shared between KVM and userspace.
type runHeader struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	_                          [6]uint8
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IFFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
	Exit                       [256]byte // the exit union, decoded in exit.go
	KVMValidRegs               uint64
	KVMDirtyRegs               uint64
}

// kickSignal interrupts a vCPU thread inside KVM_RUN. The Go runtime uses
// SIGURG for goroutine preemption and treats extra ones as spurious, so it is
// the one signal we can send to any thread without installing a handler.
const kickSignal = unix.SIGURG

// VCPU is one virtual CPU.
type VCPU struct {
	id     int
	fd     int
	vm     *VM
	runMem []byte
	run    *runHeader
	tid    atomic.Int32 // OS thread that last entered Run
	closed atomic.Bool
}

// ID is the vCPU id given to CreateVCPU (its APIC ID).
func (c *VCPU) ID() int { return c.id }

// FD is the raw vCPU file descriptor.
func (c *VCPU) FD() int { return c.fd }

// Close unmaps the run page and closes the vCPU fd. It must not race with
// Run: stop the vCPU's thread first.
func (c *VCPU) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	unix.Munmap(c.runMem)
	return unix.Close(c.fd)
}

// Run is KVM_RUN (api.rst 4.10): it runs the vCPU until an exit that
// userspace must handle and returns it decoded. The exit's data slices alias
// the kvm_run page and are valid until the next Run. The caller must have
// locked its goroutine to its OS thread (runtime.LockOSThread).
//
// A Kick makes Run return an *IntrExit; the vCPU stays kicked (every Run
// returns at once) until ClearKick.
func (c *VCPU) Run() (Exit, error) {
	c.tid.Store(int32(unix.Gettid()))
	_, err := ioctlVal(c.fd, kvmRun, 0)
	for errors.Is(err, unix.EAGAIN) {
		// An application processor that was waiting for INIT/SIPI has
		// just received them (api.rst 4.10: KVM_RUN returns EAGAIN after
		// processing the events of an uninitialized vCPU): run it again.
		_, err = ioctlVal(c.fd, kvmRun, 0)
	}
	if err != nil {
		if errors.Is(err, unix.EINTR) {
			return &IntrExit{Kicked: c.run.ImmediateExit != 0}, nil
		}
		return nil, fmt.Errorf("kvm: KVM_RUN vCPU %d: %w", c.id, err)
	}
	return c.decodeExit()
}

// Kick takes the vCPU out of KVM_RUN as soon as possible: it sets
// immediate_exit (so a Run that has not yet entered the guest returns at
// once) and signals the vCPU's thread (so one inside the guest leaves it).
// Safe to call from any goroutine.
func (c *VCPU) Kick() error {
	if c.closed.Load() {
		return errors.New("kvm: kick of a closed vCPU")
	}
	c.run.ImmediateExit = 1
	if tid := c.tid.Load(); tid != 0 {
		if err := unix.Tgkill(unix.Getpid(), int(tid), kickSignal); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kvm: kick vCPU %d (tid %d): %w", c.id, tid, err)
		}
	}
	return nil
}

// ClearKick clears immediate_exit so Run enters the guest again.
func (c *VCPU) ClearKick() { c.run.ImmediateExit = 0 }

// RequestInterruptWindow sets request_interrupt_window: KVM exits with
// ExitIRQWindowOpen when the guest can take an interrupt (userspace irqchip).
func (c *VCPU) RequestInterruptWindow(on bool) {
	if on {
		c.run.RequestInterruptWindow = 1
	} else {
		c.run.RequestInterruptWindow = 0
	}
}

// ReadyForInterruptInjection and IFFlag report kvm_run's fields after an exit.
func (c *VCPU) ReadyForInterruptInjection() bool { return c.run.ReadyForInterruptInjection != 0 }

// IFFlag reports the guest's RFLAGS.IF at the last exit.
func (c *VCPU) IFFlag() bool { return c.run.IFFlag != 0 }

// GetRegs is KVM_GET_REGS (api.rst 4.11).
func (c *VCPU) GetRegs() (Regs, error) {
	var r Regs
	if _, err := ioctlPtr(c.fd, kvmGetRegs, unsafe.Pointer(&r)); err != nil {
		return r, fmt.Errorf("kvm: KVM_GET_REGS vCPU %d: %w", c.id, err)
	}
	return r, nil
}

// SetRegs is KVM_SET_REGS (api.rst 4.12).
func (c *VCPU) SetRegs(r Regs) error {
	if _, err := ioctlPtr(c.fd, kvmSetRegs, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_REGS vCPU %d: %w", c.id, err)
	}
	return nil
}

// GetSregs is KVM_GET_SREGS (api.rst 4.13).
func (c *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	if _, err := ioctlPtr(c.fd, kvmGetSregs, unsafe.Pointer(&s)); err != nil {
		return s, fmt.Errorf("kvm: KVM_GET_SREGS vCPU %d: %w", c.id, err)
	}
	return s, nil
}

// SetSregs is KVM_SET_SREGS (api.rst 4.14).
func (c *VCPU) SetSregs(s Sregs) error {
	if _, err := ioctlPtr(c.fd, kvmSetSregs, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_SREGS vCPU %d: %w", c.id, err)
	}
	return nil
}

// GetFPU is KVM_GET_FPU (api.rst 4.22).
func (c *VCPU) GetFPU() (FPU, error) {
	var f FPU
	if _, err := ioctlPtr(c.fd, kvmGetFPU, unsafe.Pointer(&f)); err != nil {
		return f, fmt.Errorf("kvm: KVM_GET_FPU vCPU %d: %w", c.id, err)
	}
	return f, nil
}

// SetFPU is KVM_SET_FPU (api.rst 4.23).
func (c *VCPU) SetFPU(f FPU) error {
	if _, err := ioctlPtr(c.fd, kvmSetFPU, unsafe.Pointer(&f)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_FPU vCPU %d: %w", c.id, err)
	}
	return nil
}

// msrsBuf builds struct kvm_msrs: {u32 nmsrs, u32 pad, kvm_msr_entry[n]}.
func msrsBuf(entries []MSREntry) []uint64 {
	buf := make([]uint64, 1+2*len(entries))
	buf[0] = uint64(len(entries))
	for i, e := range entries {
		buf[1+2*i] = uint64(e.Index)
		buf[2+2*i] = e.Data
	}
	return buf
}

// GetMSRs is KVM_GET_MSRS (api.rst 4.18) for the given indices.
func (c *VCPU) GetMSRs(indices ...uint32) ([]MSREntry, error) {
	if len(indices) == 0 {
		return nil, nil
	}
	in := make([]MSREntry, len(indices))
	for i, idx := range indices {
		in[i].Index = idx
	}
	buf := msrsBuf(in)
	n, err := ioctlPtr(c.fd, kvmGetMSRs, unsafe.Pointer(&buf[0]))
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_GET_MSRS vCPU %d: %w", c.id, err)
	}
	if int(n) != len(indices) {
		return nil, fmt.Errorf("kvm: KVM_GET_MSRS vCPU %d: read %d of %d MSRs (first failing: %#x)", c.id, n, len(indices), indices[n])
	}
	out := make([]MSREntry, len(indices))
	for i := range out {
		out[i].Index = uint32(buf[1+2*i])
		out[i].Data = buf[2+2*i]
	}
	return out, nil
}

// SetMSRs is KVM_SET_MSRS (api.rst 4.19).
func (c *VCPU) SetMSRs(entries ...MSREntry) error {
	if len(entries) == 0 {
		return nil
	}
	buf := msrsBuf(entries)
	n, err := ioctlPtr(c.fd, kvmSetMSRs, unsafe.Pointer(&buf[0]))
	if err != nil {
		return fmt.Errorf("kvm: KVM_SET_MSRS vCPU %d: %w", c.id, err)
	}
	if int(n) != len(entries) {
		return fmt.Errorf("kvm: KVM_SET_MSRS vCPU %d: set %d of %d MSRs (first failing: %#x)", c.id, n, len(entries), entries[n].Index)
	}
	return nil
}

// SetCPUID2 is KVM_SET_CPUID2 (api.rst 4.73): the CPUID the guest sees.
func (c *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	if len(entries) > maxCPUIDEntries {
		return fmt.Errorf("kvm: KVM_SET_CPUID2: %d entries, at most %d", len(entries), maxCPUIDEntries)
	}
	b := new(cpuid2)
	b.Nent = uint32(len(entries))
	copy(b.Entries[:], entries)
	if _, err := ioctlPtr(c.fd, kvmSetCPUID2, unsafe.Pointer(b)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_CPUID2 vCPU %d: %w", c.id, err)
	}
	return nil
}

// GetCPUID2 is KVM_GET_CPUID2: the CPUID set on this vCPU.
func (c *VCPU) GetCPUID2() ([]CPUIDEntry, error) {
	b := new(cpuid2)
	b.Nent = maxCPUIDEntries
	if _, err := ioctlPtr(c.fd, kvmGetCPUID2, unsafe.Pointer(b)); err != nil {
		return nil, fmt.Errorf("kvm: KVM_GET_CPUID2 vCPU %d: %w", c.id, err)
	}
	if b.Nent > maxCPUIDEntries {
		return nil, fmt.Errorf("kvm: KVM_GET_CPUID2: kernel returned %d entries", b.Nent)
	}
	return append([]CPUIDEntry(nil), b.Entries[:b.Nent]...), nil
}

// GetLAPIC is KVM_GET_LAPIC (api.rst 4.56); needs the in-kernel irqchip.
func (c *VCPU) GetLAPIC() (*LAPICState, error) {
	l := new(LAPICState)
	if _, err := ioctlPtr(c.fd, kvmGetLAPIC, unsafe.Pointer(l)); err != nil {
		return nil, fmt.Errorf("kvm: KVM_GET_LAPIC vCPU %d: %w", c.id, err)
	}
	return l, nil
}

// SetLAPIC is KVM_SET_LAPIC (api.rst 4.57).
func (c *VCPU) SetLAPIC(l *LAPICState) error {
	if _, err := ioctlPtr(c.fd, kvmSetLAPIC, unsafe.Pointer(l)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_LAPIC vCPU %d: %w", c.id, err)
	}
	return nil
}

// Reg32 reads the 32-bit LAPIC register at offset off (e.g. 0x20 = APIC ID).
func (l *LAPICState) Reg32(off int) uint32 {
	return uint32(l.Regs[off]) | uint32(l.Regs[off+1])<<8 | uint32(l.Regs[off+2])<<16 | uint32(l.Regs[off+3])<<24
}

// SetReg32 writes the 32-bit LAPIC register at offset off.
func (l *LAPICState) SetReg32(off int, v uint32) {
	l.Regs[off], l.Regs[off+1], l.Regs[off+2], l.Regs[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// GetMPState is KVM_GET_MP_STATE (api.rst 4.38).
func (c *VCPU) GetMPState() (uint32, error) {
	var s uint32
	if _, err := ioctlPtr(c.fd, kvmGetMPState, unsafe.Pointer(&s)); err != nil {
		return 0, fmt.Errorf("kvm: KVM_GET_MP_STATE vCPU %d: %w", c.id, err)
	}
	return s, nil
}

// SetMPState is KVM_SET_MP_STATE (api.rst 4.39). With the in-kernel irqchip
// application processors start uninitialized (waiting for INIT/SIPI); set
// MPStateRunnable to start them directly.
func (c *VCPU) SetMPState(s uint32) error {
	if _, err := ioctlPtr(c.fd, kvmSetMPState, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_MP_STATE vCPU %d: %w", c.id, err)
	}
	return nil
}

// GetVCPUEvents is KVM_GET_VCPU_EVENTS (api.rst 4.31).
func (c *VCPU) GetVCPUEvents() (VCPUEvents, error) {
	var e VCPUEvents
	if _, err := ioctlPtr(c.fd, kvmGetVCPUEvents, unsafe.Pointer(&e)); err != nil {
		return e, fmt.Errorf("kvm: KVM_GET_VCPU_EVENTS vCPU %d: %w", c.id, err)
	}
	return e, nil
}

// SetVCPUEvents is KVM_SET_VCPU_EVENTS (api.rst 4.32), e.g. to inject an
// exception into the guest.
func (c *VCPU) SetVCPUEvents(e VCPUEvents) error {
	if _, err := ioctlPtr(c.fd, kvmSetVCPUEvents, unsafe.Pointer(&e)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_VCPU_EVENTS vCPU %d: %w", c.id, err)
	}
	return nil
}

// Translate is KVM_TRANSLATE (api.rst 4.15): guest virtual to physical
// through the vCPU's current page tables.
func (c *VCPU) Translate(gva uint64) (Translation, error) {
	t := Translation{LinearAddress: gva}
	if _, err := ioctlPtr(c.fd, kvmTranslate, unsafe.Pointer(&t)); err != nil {
		return t, fmt.Errorf("kvm: KVM_TRANSLATE %#x vCPU %d: %w", gva, c.id, err)
	}
	return t, nil
}

// SetGuestDebug is KVM_SET_GUEST_DEBUG (api.rst 4.59).
func (c *VCPU) SetGuestDebug(d GuestDebug) error {
	if _, err := ioctlPtr(c.fd, kvmSetGuestDebug, unsafe.Pointer(&d)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_GUEST_DEBUG vCPU %d: %w", c.id, err)
	}
	return nil
}

// Interrupt is KVM_INTERRUPT (api.rst 4.16): queue an external interrupt
// vector (only without the in-kernel irqchip).
func (c *VCPU) Interrupt(vector uint32) error {
	v := vector
	if _, err := ioctlPtr(c.fd, kvmInterrupt, unsafe.Pointer(&v)); err != nil {
		return fmt.Errorf("kvm: KVM_INTERRUPT %d vCPU %d: %w", vector, c.id, err)
	}
	return nil
}

// TSCKHz is KVM_GET_TSC_KHZ (api.rst 4.56): the guest TSC frequency.
func (c *VCPU) TSCKHz() (uint32, error) {
	r, err := ioctlVal(c.fd, kvmGetTSCKHz, 0)
	if err != nil {
		return 0, fmt.Errorf("kvm: KVM_GET_TSC_KHZ vCPU %d: %w", c.id, err)
	}
	return uint32(r), nil
}

// EnableCap is KVM_ENABLE_CAP on the vCPU.
func (c *VCPU) EnableCap(capability uint32, args ...uint64) error {
	e := enableCap{Cap: capability}
	if len(args) > len(e.Args) {
		return fmt.Errorf("kvm: KVM_ENABLE_CAP %d: %d args, at most %d", capability, len(args), len(e.Args))
	}
	copy(e.Args[:], args)
	if _, err := ioctlPtr(c.fd, kvmEnableCap, unsafe.Pointer(&e)); err != nil {
		return fmt.Errorf("kvm: KVM_ENABLE_CAP %d vCPU %d: %w", capability, c.id, err)
	}
	return nil
}
