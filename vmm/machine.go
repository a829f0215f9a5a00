package vmm

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hyperhq/hyperd-go/kvm"
)

// StopReason says how a machine stopped.
type StopReason string

const (
	StopPoweroff    StopReason = "poweroff"     // ACPI soft-off (S5)
	StopReset       StopReason = "reset"        // the guest reset the machine (reboot, panic with panic=-1)
	StopTripleFault StopReason = "triple-fault" // KVM_EXIT_SHUTDOWN
	StopCrash       StopReason = "crash"        // KVM_SYSTEM_EVENT_CRASH
	StopKilled      StopReason = "killed"       // Stop was called
	StopError       StopReason = "error"        // a vCPU failed; Err says why
	StopSnapshot    StopReason = "snapshot"     // SnapshotAndStop wrote a snapshot
)

// exitStatuses are what `hyperd vm run` exits with for each stop reason,
// so that its parent (the kvm sandbox driver) learns why a VM stopped
// without parsing its console. 2 is left to usage/setup errors (and Go's
// own fatal errors); 1 to anything else unexpected.
var exitStatuses = map[StopReason]int{
	StopPoweroff:    0,
	StopReset:       3,
	StopTripleFault: 4,
	StopCrash:       5,
	StopError:       6,
	StopKilled:      7,
	StopSnapshot:    8,
}

// ExitStatus is the process exit status that reports r (see StopReasonOf).
func (r StopReason) ExitStatus() int {
	if s, ok := exitStatuses[r]; ok {
		return s
	}
	return 1
}

// StopReasonOf maps a `hyperd vm run` exit status back to its stop reason.
func StopReasonOf(status int) (StopReason, bool) {
	for r, s := range exitStatuses {
		if s == status {
			return r, true
		}
	}
	return "", false
}

// Result is how and why a machine stopped.
type Result struct {
	Reason StopReason
	Err    error
	At     time.Time
}

func (r Result) String() string {
	if r.Err != nil {
		return fmt.Sprintf("%s: %v", r.Reason, r.Err)
	}
	return string(r.Reason)
}

// core is the part of a machine that does not depend on how the guest was
// loaded: the KVM VM, its memory, the device bus and the vCPU threads.
type core struct {
	sys   *kvm.System
	vm    *kvm.VM
	mem   []byte
	vcpus []*kvm.VCPU
	bus   bus

	emuMu sync.Mutex
	emu   EmulationStats

	stopOnce sync.Once
	stopping atomic.Bool
	result   Result
	done     chan struct{}
	wg       sync.WaitGroup
	exits    atomic.Uint64
	intrs    atomic.Uint64

	pause pauser // Pause/Resume (pause.go)
}

// newCore creates the VM with an in-kernel irqchip and PIT and memSize
// bytes of RAM at guest physical address 0 (below the 32-bit MMIO hole),
// anonymous memory unless alloc (a snapshot's memory file) provides it.
func newCore(memSize uint64, alloc func(size int) ([]byte, error)) (*core, error) {
	sys, err := kvm.Open()
	if err != nil {
		return nil, err
	}
	c := &core{sys: sys, done: make(chan struct{})}
	fail := func(err error) (*core, error) {
		c.close()
		return nil, err
	}
	if c.vm, err = sys.CreateVM(); err != nil {
		return fail(err)
	}
	// Three pages for Intel's real-mode TSS and one for the identity map,
	// just below the BIOS area at 4 GiB - 256 KiB, as is customary.
	if err := c.vm.SetTSSAddr(0xfffbd000); err != nil {
		return fail(err)
	}
	if err := c.vm.SetIdentityMapAddr(0xfffbc000); err != nil {
		return fail(err)
	}
	if err := c.vm.CreateIRQChip(); err != nil {
		return fail(err)
	}
	if err := c.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return fail(err)
	}
	if sys.CheckExtension(kvm.CapExitOnEmulationFailure) > 0 {
		// Emulation failures come back with the instruction bytes.
		if err := c.vm.EnableCap(kvm.CapExitOnEmulationFailure, 1); err != nil {
			return fail(err)
		}
	}
	if memSize > MMIOHoleStart {
		return fail(fmt.Errorf("vmm: %d MiB of memory reaches the MMIO hole at %#x; at most %d MiB", memSize>>20, MMIOHoleStart, MMIOHoleStart>>20))
	}
	if alloc == nil {
		alloc = kvm.AllocateMemory
	}
	if c.mem, err = alloc(int(memSize)); err != nil {
		return fail(err)
	}
	if err := c.vm.SetUserMemoryRegion(0, 0, 0, c.mem); err != nil {
		return fail(err)
	}
	return c, nil
}

// MMIOHoleStart is where guest RAM ends and device MMIO begins.
const MMIOHoleStart = 0xc0000000

func (c *core) close() {
	for _, v := range c.vcpus {
		v.Close()
	}
	if c.vm != nil {
		c.vm.Close()
	}
	if c.mem != nil {
		kvm.FreeMemory(c.mem)
		c.mem = nil
	}
	if c.sys != nil {
		c.sys.Close()
	}
}

// stop records the first reason the machine stops and kicks every vCPU.
func (c *core) stop(r Result) {
	c.stopOnce.Do(func() {
		r.At = time.Now()
		c.result = r
		c.stopping.Store(true)
		for _, v := range c.vcpus {
			v.Kick()
		}
		c.Resume()
		go func() {
			c.wg.Wait()
			close(c.done)
		}()
	})
}

// start runs every vCPU on its own locked OS thread.
func (c *core) start() {
	for _, v := range c.vcpus {
		c.wg.Add(1)
		go c.runVCPU(v)
	}
}

func (c *core) runVCPU(v *kvm.VCPU) {
	defer c.wg.Done()
	runtime.LockOSThread()
	// The thread stays locked (and dies with the goroutine) so no other
	// goroutine inherits its signal mask or pending kicks.
	defer func() {
		if p := recover(); p != nil {
			c.stop(Result{Reason: StopError, Err: fmt.Errorf("vCPU %d: panic: %v", v.ID(), p)})
		}
	}()
	for !c.stopping.Load() {
		e, err := v.Run()
		if err != nil {
			c.stop(Result{Reason: StopError, Err: err})
			return
		}
		c.exits.Add(1)
		if err := c.handleExit(v, e); err != nil {
			if errors.Is(err, errStopped) {
				return
			}
			c.stop(Result{Reason: StopError, Err: fmt.Errorf("vCPU %d: %w", v.ID(), err)})
			return
		}
	}
}

var errStopped = errors.New("machine stopped")

func (c *core) handleExit(v *kvm.VCPU, e kvm.Exit) error {
	switch e := e.(type) {
	case *kvm.IOExit:
		dev, off := c.bus.findPIO(e.Port)
		for i := uint32(0); i < e.Count; i++ {
			d := e.Data[uint32(e.Size)*i : uint32(e.Size)*(i+1)]
			switch {
			case dev == nil && e.In:
				for j := range d {
					d[j] = 0xff // nothing there: the bus floats high
				}
			case dev == nil:
			case e.In:
				dev.PIORead(off, d)
			default:
				dev.PIOWrite(off, d)
			}
		}
	case *kvm.MMIOExit:
		dev, off := c.bus.findMMIO(e.Addr)
		switch {
		case dev == nil && !e.IsWrite:
			for j := range e.Data {
				e.Data[j] = 0xff
			}
		case dev == nil:
		case e.IsWrite:
			dev.Write(off, e.Data)
		default:
			dev.Read(off, e.Data)
		}
	case *kvm.IntrExit:
		c.intrs.Add(1)
		if c.stopping.Load() {
			return errStopped
		}
		if e.Kicked {
			// the kick of a Pause: any I/O exit before it has been
			// completed by this KVM_RUN (api.rst 4.10, immediate_exit)
			c.park(v)
		}
	case *kvm.HLTExit:
		// Only without an in-kernel LAPIC; ours has one. Treat as idle.
	case *kvm.ShutdownExit:
		c.stop(Result{Reason: StopTripleFault, Err: describe(v, "triple fault")})
		return errStopped
	case *kvm.SystemEventExit:
		switch e.Type {
		case kvm.SystemEventShutdown:
			c.stop(Result{Reason: StopPoweroff})
		case kvm.SystemEventReset:
			c.stop(Result{Reason: StopReset})
		case kvm.SystemEventCrash:
			c.stop(Result{Reason: StopCrash})
		default:
			return fmt.Errorf("system event %d", e.Type)
		}
		return errStopped
	case *kvm.InternalErrorExit:
		if e.IsEmulationFailure() {
			c.emuMu.Lock()
			err := emulateFailure(v, c.mem, e, &c.emu)
			c.emuMu.Unlock()
			if err == nil {
				return nil
			}
			return fmt.Errorf("KVM could not emulate an instruction: %w", err)
		}
		return describe(v, fmt.Sprintf("KVM internal error, suberror %d, data %x", e.Suberror, e.Data))
	case *kvm.FailEntryExit:
		return describe(v, fmt.Sprintf("KVM_EXIT_FAIL_ENTRY, hardware reason %#x", e.HardwareReason))
	default:
		return describe(v, "unexpected exit "+e.Reason().String())
	}
	return nil
}

// describe adds the vCPU's instruction pointer and mode to an error.
func describe(v *kvm.VCPU, what string) error {
	r, err1 := v.GetRegs()
	s, err2 := v.GetSregs()
	if err1 != nil || err2 != nil {
		return errors.New(what)
	}
	return fmt.Errorf("%s at rip %#x (cs %#x, cr0 %#x, efer %#x, rsp %#x)", what, r.RIP, s.CS.Selector, s.CR0, s.EFER, r.RSP)
}

// emulationStats returns a copy of the counters.
func (c *core) emulationStats() EmulationStats {
	c.emuMu.Lock()
	defer c.emuMu.Unlock()
	return c.emu
}

// discard is an io.Writer for a machine without a console.
var discard io.Writer = io.Discard
