package vmm

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/guest"
	"github.com/hyperhq/hyperd-go/kvm"
	"github.com/hyperhq/hyperd-go/virtio"
)

// Config describes a machine to boot.
type Config struct {
	Kernel  string // ELF vmlinux (PVH entry) or bzImage
	Initrd  string // optional
	Cmdline string
	MemMiB  int // guest RAM; default 256
	CPUs    int // vCPUs; default 1
	// Console receives everything the guest writes to its serial port.
	Console io.Writer
	// Devices are virtio device models; each is put behind a virtio-mmio
	// transport at MMIOBase + i*MMIOStride with GSI FirstDeviceGSI + i.
	// The machine closes those that are io.Closers when it stops.
	Devices []virtio.Device
	// Emulated forces the CPUID profile for software-nested KVM; by default
	// it is chosen from the host (no vmx/svm in /proc/cpuinfo).
	Emulated *bool
}

// Placement of virtio-mmio devices: in the MMIO hole below 4 GiB, one
// 4 KiB page each, on I/O APIC pins 5.. (0-4 are the PIT, keyboard,
// cascade, COM2 and COM1 on a PC).
const (
	MMIOBase       = 0xd0000000
	MMIOStride     = 0x1000
	MMIOSize       = 0x200
	FirstDeviceGSI = 5
)

// Machine is a booted virtual machine.
type Machine struct {
	*core
	uart        *UART
	loaded      *guest.Loaded
	vmem        *virtio.Memory
	slots       []*virtioSlot
	notifyWG    sync.WaitGroup
	cmdline     string
	notes       []string
	releaseOnce sync.Once
	cfg         Config
	start       time.Time
	emulated    bool // the CPUID profile for software-nested KVM
}

// New creates the VM, loads the guest and wires the devices; Start runs it.
func New(cfg Config) (*Machine, error) {
	if cfg.MemMiB == 0 {
		cfg.MemMiB = 256
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.MemMiB < 32 {
		return nil, fmt.Errorf("vmm: %d MiB of memory; at least 32 MiB", cfg.MemMiB)
	}
	if cfg.CPUs < 1 || cfg.CPUs > 64 {
		return nil, fmt.Errorf("vmm: %d vCPUs; 1 to 64 are supported", cfg.CPUs)
	}
	if FirstDeviceGSI+len(cfg.Devices) > guest.IOAPICPins {
		return nil, fmt.Errorf("vmm: %d devices; at most %d", len(cfg.Devices), guest.IOAPICPins-FirstDeviceGSI)
	}
	if cfg.Console == nil {
		cfg.Console = discard
	}
	c, err := newCore(uint64(cfg.MemMiB)<<20, nil)
	if err != nil {
		return nil, err
	}
	m := &Machine{core: c, cfg: cfg}
	if err := m.setup(); err != nil {
		m.release()
		return nil, err
	}
	return m, nil
}

func (m *Machine) setup() error {
	cfg := m.cfg
	emulated := !kvm.HostHasHardwareVirt()
	if cfg.Emulated != nil {
		emulated = *cfg.Emulated
	}
	m.emulated = emulated
	if err := m.addLegacy(); err != nil {
		return err
	}
	acpi := guest.ACPIConfig{CPUs: cfg.CPUs, Serial: true, SleepPort: SleepControlPort, ResetPort: i8042Base + i8042CmdOffset, ResetValue: i8042CmdReset}
	m.vmem = virtio.NewMemory(m.mem)
	for i, d := range cfg.Devices {
		base := uint64(MMIOBase + i*MMIOStride)
		s, err := m.attachVirtio(i, d)
		if err != nil {
			return err
		}
		m.slots = append(m.slots, s)
		acpi.Devices = append(acpi.Devices, guest.MMIODevice{Base: base, Size: MMIOSize, GSI: uint32(FirstDeviceGSI + i)})
	}
	host, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	hostEntries := make([]guest.CPUIDEntry, len(host))
	for i, e := range host {
		hostEntries[i] = guest.CPUIDEntry{Function: e.Function, Index: e.Index, Flags: e.Flags, EAX: e.EAX, EBX: e.EBX, ECX: e.ECX, EDX: e.EDX}
	}
	for i := 0; i < cfg.CPUs; i++ {
		v, err := m.vm.CreateVCPU(i)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
		prof := guest.GuestCPUID(hostEntries, i, guest.CPUIDProfile{CPUs: cfg.CPUs, Emulated: emulated})
		entries := make([]kvm.CPUIDEntry, len(prof))
		for j, e := range prof {
			entries[j] = kvm.CPUIDEntry{Function: e.Function, Index: e.Index, Flags: e.Flags, EAX: e.EAX, EBX: e.EBX, ECX: e.ECX, EDX: e.EDX}
		}
		if err := v.SetCPUID2(entries); err != nil {
			return err
		}
		if err := setupLAPIC(v); err != nil {
			return err
		}
		// Application processors wait in KVM for the INIT/SIPI the kernel
		// sends through its local APIC.
	}
	m.cmdline = cfg.Cmdline
	if emulated && xsaveOverridden(m.vcpus[0]) {
		// The host put XSAVE back into the CPUID we masked, and its
		// emulator cannot run xsave/xrstor: tell the kernel not to use them.
		m.cmdline = strings.TrimSpace(m.cmdline + " noxsave")
		m.notes = append(m.notes, "host KVM overrides CPUID leaf 1 (XSAVE stays visible): added noxsave to the command line")
	}
	l, err := guest.Load(m.mem, guest.Config{Kernel: cfg.Kernel, Initrd: cfg.Initrd, Cmdline: m.cmdline, ACPI: acpi})
	if err != nil {
		return err
	}
	m.loaded = l
	return setEntryState(m.vcpus[0], l.Entry)
}

// addLegacy puts the PC devices on the port bus: COM1, the i8042's reset
// line and the ACPI sleep control port.
func (m *Machine) addLegacy() error {
	m.uart = NewUART(m.cfg.Console, func(level bool) { m.vm.IRQLine(COM1IRQ, level) })
	if err := m.bus.addPIO(COM1Base, 8, uartPIO{m.uart}); err != nil {
		return err
	}
	if err := m.bus.addPIO(i8042Base, i8042Size, &i8042{reset: func() { m.stop(Result{Reason: StopReset}) }}); err != nil {
		return err
	}
	return m.bus.addPIO(SleepControlPort, sleepControlSize, &sleepControl{poweroff: func() { m.stop(Result{Reason: StopPoweroff}) }})
}

// xsaveOverridden reports whether the vCPU's CPUID still advertises XSAVE
// (leaf 1 ECX bit 26) after we masked it: KVM_GET_CPUID2 returns what the
// guest's CPUID instruction will see.
func xsaveOverridden(v *kvm.VCPU) bool {
	got, err := v.GetCPUID2()
	if err != nil {
		return false
	}
	for _, e := range got {
		if e.Function == 1 {
			return e.ECX&(1<<26) != 0
		}
	}
	return false
}

// Notes lists adjustments the VMM made for this host.
func (m *Machine) Notes() []string { return m.notes }

// Cmdline is the kernel command line the guest got.
func (m *Machine) Cmdline() string { return m.cmdline }

// setupLAPIC wires LINT0 as ExtINT (the 8259's output) and LINT1 as NMI,
// as a PC BIOS leaves them (Intel SDM Vol. 3A 10.5.1, local vector table).
func setupLAPIC(v *kvm.VCPU) error {
	l, err := v.GetLAPIC()
	if err != nil {
		return err
	}
	const lvtLINT0, lvtLINT1 = 0x350, 0x360
	const dmExtINT, dmNMI = 7 << 8, 4 << 8
	l.SetReg32(lvtLINT0, l.Reg32(lvtLINT0)&^0x700|dmExtINT)
	l.SetReg32(lvtLINT1, l.Reg32(lvtLINT1)&^0x700|dmNMI)
	return v.SetLAPIC(l)
}

func kvmSegment(s guest.Segment) kvm.Segment {
	return kvm.Segment{Base: s.Base, Limit: s.Limit, Selector: s.Selector, Type: s.Type, Present: s.Present,
		DPL: s.DPL, DB: s.DB, S: s.S, L: s.L, G: s.G}
}

// setEntryState puts the boot vCPU in the state guest.Load asked for.
func setEntryState(v *kvm.VCPU, e guest.EntryState) error {
	s, err := v.GetSregs()
	if err != nil {
		return err
	}
	s.CS = kvmSegment(e.CS)
	ds := kvmSegment(e.DS)
	s.DS, s.ES, s.FS, s.GS, s.SS = ds, ds, ds, ds, ds
	s.TR = kvmSegment(e.TR)
	s.GDT = kvm.DTable{Base: e.GDTBase, Limit: e.GDTLimit}
	s.IDT = kvm.DTable{}
	s.CR0, s.CR3, s.CR4, s.EFER = e.CR0, e.CR3, e.CR4, e.EFER
	if err := v.SetSregs(s); err != nil {
		return err
	}
	return v.SetRegs(kvm.Regs{RIP: e.RIP, RSP: e.RSP, RBX: e.RBX, RSI: e.RSI, RFLAGS: e.RFLAGS})
}

// Start runs the vCPUs.
func (m *Machine) Start() {
	m.start = time.Now()
	m.core.start()
}

// Wait blocks until the machine stops and returns why. The machine's
// resources are released.
func (m *Machine) Wait() Result {
	<-m.done
	m.release()
	return m.result
}

// release frees devices, eventfds, vCPUs, the VM and guest memory.
func (m *Machine) release() {
	m.releaseOnce.Do(func() {
		m.stopping.Store(true)
		for _, s := range m.slots {
			s.close(m.vm)
		}
		m.notifyWG.Wait()
		for _, s := range m.slots {
			s.closeFDs()
		}
		m.close()
	})
}

// Done is closed when every vCPU has stopped.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Stop stops the machine (as if its power were cut).
func (m *Machine) Stop() { m.stop(Result{Reason: StopKilled}) }

// Memory is guest RAM (valid until Wait returns).
func (m *Machine) Memory() []byte { return m.mem }

// VM is the KVM VM (for wiring irqfds and ioeventfds).
func (m *Machine) VM() *kvm.VM { return m.vm }

// GSI returns the interrupt line of virtio device i.
func GSI(i int) uint32 { return uint32(FirstDeviceGSI + i) }

// Loaded describes where the guest was put in memory.
func (m *Machine) Loaded() *guest.Loaded { return m.loaded }

// Stats of a running or stopped machine.
type Stats struct {
	Exits     uint64
	Signals   uint64 // KVM_RUN interrupted by a signal (kicks, runtime signals)
	Emulation EmulationStats
	Uptime    time.Duration
}

// Stats returns counters.
func (m *Machine) Stats() Stats {
	return Stats{Exits: m.exits.Load(), Signals: m.intrs.Load(), Emulation: m.emulationStats(), Uptime: time.Since(m.start)}
}

// Run boots cfg in the foreground until the guest powers off or fails.
func Run(cfg Config) (Result, error) {
	m, err := New(cfg)
	if err != nil {
		return Result{}, err
	}
	m.Start()
	return m.Wait(), nil
}
