// This file owns restoring a machine from a snapshot (snapshot.go): guest
// memory mapped privately from the snapshot's memory file (shared by every
// VM restored from it until written), the vCPUs, interrupt controllers,
// PIT and kvmclock loaded, and fresh device models - with this VM's own
// backing: disks, vsock socket, tap - given the saved transport state.

package vmm

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hyperhq/hyperd-go/guest"
	"github.com/hyperhq/hyperd-go/kvm"
	"github.com/hyperhq/hyperd-go/virtio"
)

// RestoreConfig describes a machine to restore.
type RestoreConfig struct {
	Dir string // the snapshot directory
	// Snapshot is its state file as ReadSnapshot returned it (a caller
	// that read it to make Devices); nil reads it from Dir.
	Snapshot *Snapshot
	Console  io.Writer
	// Devices are the device models, in the snapshot's order and of its
	// kinds (ReadSnapshot tells them), created with this VM's backing.
	Devices []virtio.Device
}

// maxSnapshotState bounds the state file read.
const maxSnapshotState = 16 << 20

// ReadSnapshot reads and checks the state file of the snapshot in dir.
func ReadSnapshot(dir string) (*Snapshot, error) {
	f, err := os.Open(filepath.Join(dir, SnapshotStateFile))
	if err != nil {
		return nil, fmt.Errorf("vmm: snapshot: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSnapshotState+1))
	if err != nil {
		return nil, fmt.Errorf("vmm: snapshot: %w", err)
	}
	if len(b) > maxSnapshotState {
		return nil, fmt.Errorf("vmm: snapshot state %s is larger than %d bytes", f.Name(), maxSnapshotState)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("vmm: snapshot state %s: %w", f.Name(), err)
	}
	switch {
	case s.Version != SnapshotVersion:
		return nil, fmt.Errorf("vmm: snapshot version %d; this hyperd reads version %d", s.Version, SnapshotVersion)
	case s.MemMiB < 32 || uint64(s.MemMiB)<<20 > MMIOHoleStart:
		return nil, fmt.Errorf("vmm: snapshot of %d MiB of memory", s.MemMiB)
	case s.CPUs < 1 || s.CPUs > 64 || len(s.VCPUs) != s.CPUs:
		return nil, fmt.Errorf("vmm: snapshot with %d vCPUs and %d vCPU states", s.CPUs, len(s.VCPUs))
	case FirstDeviceGSI+len(s.Devices) > guest.IOAPICPins:
		return nil, fmt.Errorf("vmm: snapshot with %d devices", len(s.Devices))
	}
	for i, v := range s.VCPUs {
		if v.ID != i {
			return nil, fmt.Errorf("vmm: snapshot vCPU %d has id %d", i, v.ID)
		}
	}
	return &s, nil
}

// Restore creates a machine from the snapshot in cfg.Dir; Start runs it.
func Restore(cfg RestoreConfig) (*Machine, error) {
	snap := cfg.Snapshot
	if snap == nil {
		var err error
		if snap, err = ReadSnapshot(cfg.Dir); err != nil {
			return nil, err
		}
	}
	if len(cfg.Devices) != len(snap.Devices) {
		return nil, fmt.Errorf("vmm: the snapshot has %d devices, %d given", len(snap.Devices), len(cfg.Devices))
	}
	for i, d := range cfg.Devices {
		if d.DeviceID() != snap.Devices[i].DeviceID {
			return nil, fmt.Errorf("vmm: device %d is of type %d, the snapshot's of type %d", i, d.DeviceID(), snap.Devices[i].DeviceID)
		}
	}
	if cfg.Console == nil {
		cfg.Console = discard
	}
	memFile, err := os.Open(filepath.Join(cfg.Dir, SnapshotMemoryFile))
	if err != nil {
		return nil, fmt.Errorf("vmm: snapshot memory: %w", err)
	}
	// the mapping keeps the file referenced
	defer memFile.Close()
	c, err := newCore(uint64(snap.MemMiB)<<20, func(size int) ([]byte, error) { return kvm.MapMemoryFile(memFile, size) })
	if err != nil {
		return nil, err
	}
	m := &Machine{core: c, cfg: Config{MemMiB: snap.MemMiB, CPUs: snap.CPUs, Console: cfg.Console, Devices: cfg.Devices},
		cmdline: snap.Cmdline, emulated: snap.Emulated}
	if err := m.restore(snap); err != nil {
		m.release()
		return nil, err
	}
	return m, nil
}

// restore loads the machine state in the order KVM needs it: CPUID before
// anything that depends on it, each vCPU (its LAPIC before the MSRs, so
// the TSC deadline lands in a LAPIC in TSC-deadline mode; pending events
// last), then the interrupt controllers, the PIT and the clock, and only
// then the devices, whose restore may raise interrupts.
func (m *Machine) restore(snap *Snapshot) error {
	if err := m.addLegacy(); err != nil {
		return err
	}
	m.vmem = virtio.NewMemory(m.mem)
	for i, d := range m.cfg.Devices {
		s, err := m.attachVirtio(i, d)
		if err != nil {
			return err
		}
		m.slots = append(m.slots, s)
	}
	for _, st := range snap.VCPUs {
		v, err := m.vm.CreateVCPU(st.ID)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
		if err := restoreVCPU(v, st, &m.notes); err != nil {
			return err
		}
	}
	for i, id := range []uint32{kvm.IRQChipPICMaster, kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC} {
		c := &kvm.IRQChip{ChipID: id}
		if len(snap.IRQChips[i]) != len(c.Chip) {
			return fmt.Errorf("vmm: snapshot irqchip %d has %d bytes, want %d", id, len(snap.IRQChips[i]), len(c.Chip))
		}
		copy(c.Chip[:], snap.IRQChips[i])
		if err := m.vm.SetIRQChip(c); err != nil {
			return err
		}
	}
	pit, err := unraw[kvm.PITState2](snap.PIT, "PIT state")
	if err != nil {
		return err
	}
	if err := m.vm.SetPIT2(pit); err != nil {
		return err
	}
	// The guest's clock continues from the snapshot: no time passed for
	// it (its agent sets the wall clock when the pod is set up).
	if err := m.vm.SetClock(kvm.ClockData{Clock: snap.Clock}); err != nil {
		return err
	}
	if err := m.uart.SetState(snap.UART); err != nil {
		return err
	}
	for i, s := range m.slots {
		if err := s.mmio.RestoreState(snap.Devices[i].MMIOState); err != nil {
			return fmt.Errorf("vmm: restore of device %d: %w", i, err)
		}
	}
	return nil
}

func restoreVCPU(v *kvm.VCPU, st VCPUState, notes *[]string) error {
	if err := v.SetCPUID2(st.CPUID); err != nil {
		return err
	}
	if err := v.SetMPState(st.MPState); err != nil {
		return err
	}
	regs, err := unraw[kvm.Regs](st.Regs, "registers")
	if err != nil {
		return err
	}
	sregs, err := unraw[kvm.Sregs](st.Sregs, "segment registers")
	if err != nil {
		return err
	}
	if err := v.SetSregs(sregs); err != nil {
		return err
	}
	if err := v.SetRegs(regs); err != nil {
		return err
	}
	if err := v.SetXSave(st.XSave); err != nil {
		return err
	}
	if st.XCRs != nil {
		x, err := unraw[kvm.XCRs](st.XCRs, "XCRs")
		if err != nil {
			return err
		}
		// a host without XSAVE reports no XCRs and refuses to set any
		if x.NrXCRs > 0 {
			if err := v.SetXCRs(x); err != nil {
				return err
			}
		}
	}
	dr, err := unraw[kvm.DebugRegs](st.DebugRegs, "debug registers")
	if err != nil {
		return err
	}
	if err := v.SetDebugRegs(dr); err != nil {
		return err
	}
	lapic, err := unraw[kvm.LAPICState](st.LAPIC, "LAPIC")
	if err != nil {
		return err
	}
	if err := v.SetLAPIC(&lapic); err != nil {
		return err
	}
	if err := setMSRs(v, st.MSRs, notes); err != nil {
		return err
	}
	ev, err := unraw[kvm.VCPUEvents](st.Events, "vCPU events")
	if err != nil {
		return err
	}
	return v.SetVCPUEvents(ev)
}

// setMSRs loads saved MSRs. KVM stops at the first MSR it refuses; then
// they are loaded one at a time and the refused ones noted.
func setMSRs(v *kvm.VCPU, msrs []kvm.MSREntry, notes *[]string) error {
	if v.SetMSRs(msrs...) == nil {
		return nil
	}
	for _, e := range msrs {
		if v.SetMSRs(e) != nil {
			*notes = append(*notes, fmt.Sprintf("vCPU %d: KVM refused the saved MSR %#x", v.ID(), e.Index))
		}
	}
	return nil
}
