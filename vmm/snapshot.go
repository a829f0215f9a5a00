// This file owns taking a snapshot of a paused machine: the versioned
// format of its state file (every vCPU's registers, XSAVE/XCR, debug
// registers, LAPIC, MSRs and pending events; the PIC, IOAPIC and PIT; the
// kvmclock; the UART; every virtio device's transport and queue state)
// and its guest memory file, written sparse. restore.go reads them.

package vmm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/hyperhq/hyperd-go/kvm"
	"github.com/hyperhq/hyperd-go/virtio"
)

// SnapshotVersion is the format of the state file; Restore refuses others.
const SnapshotVersion = 1

// Files of a snapshot directory.
const (
	SnapshotStateFile  = "state.json"
	SnapshotMemoryFile = "memory"
)

// Snapshot is the state file of a snapshot. Kernel structs are kept as
// their raw bytes (the <linux/kvm.h> layout, which is ABI): a snapshot is
// restored by the same kind of host that took it.
type Snapshot struct {
	Version  int
	Created  time.Time
	MemMiB   int
	CPUs     int
	Cmdline  string
	Emulated bool
	VCPUs    []VCPUState
	// IRQChips are the kvm_irqchip payloads of the PIC master, PIC slave
	// and IOAPIC, in that order.
	IRQChips [3][]byte
	PIT      []byte // kvm_pit_state2
	Clock    uint64 // kvmclock, ns
	UART     UARTState
	Devices  []DeviceState
}

// VCPUState is one vCPU's saved state.
type VCPUState struct {
	ID        int
	CPUID     []kvm.CPUIDEntry
	MPState   uint32
	Regs      []byte // kvm_regs
	Sregs     []byte // kvm_sregs
	XSave     []byte // kvm_xsave (or the larger KVM_GET_XSAVE2 area)
	XCRs      []byte // kvm_xcrs; nil where the host has no KVM_CAP_XCRS
	DebugRegs []byte // kvm_debugregs
	LAPIC     []byte // kvm_lapic_state
	Events    []byte // kvm_vcpu_events
	MSRs      []kvm.MSREntry
}

// DeviceState is one virtio-mmio slot's saved state.
type DeviceState struct {
	virtio.MMIOState
}

// raw returns a copy of v's bytes.
func raw[T any](v *T) []byte {
	return bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v)))
}

// unraw loads a struct saved by raw, checking its size.
func unraw[T any](b []byte, what string) (T, error) {
	var v T
	if len(b) != int(unsafe.Sizeof(v)) {
		return v, fmt.Errorf("vmm: snapshot: %s has %d bytes, want %d", what, len(b), unsafe.Sizeof(v))
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v)), b)
	return v, nil
}

// Pause stops the vCPUs and every device (no guest memory is touched
// until Resume), waiting at most timeout for the vCPUs.
func (m *Machine) Pause(timeout time.Duration) error {
	if err := m.core.Pause(timeout); err != nil {
		return err
	}
	for _, s := range m.slots {
		s.mmio.Pause()
	}
	return nil
}

// Resume undoes Pause.
func (m *Machine) Resume() {
	for _, s := range m.slots {
		s.mmio.Resume()
	}
	m.core.Resume()
}

// SnapshotAndStop pauses the machine, writes its snapshot into dir and
// stops it (StopSnapshot). If any step fails the machine stops with
// StopError and the error (a half-written snapshot is not to be used:
// dir is the caller's to remove).
func (m *Machine) SnapshotAndStop(dir string, timeout time.Duration) error {
	err := m.Pause(timeout)
	if err == nil {
		err = m.SaveSnapshot(dir)
	}
	if err != nil {
		m.stop(Result{Reason: StopError, Err: fmt.Errorf("snapshot: %w", err)})
		return err
	}
	m.stop(Result{Reason: StopSnapshot})
	return nil
}

// SaveSnapshot writes the machine's state and memory into dir (which must
// exist). The machine must be paused; it stays paused.
func (m *Machine) SaveSnapshot(dir string) error {
	snap := Snapshot{Version: SnapshotVersion, Created: time.Now().UTC(), MemMiB: len(m.mem) >> 20, CPUs: len(m.vcpus),
		Cmdline: m.cmdline, Emulated: m.emulated}
	msrs, err := m.savedMSRs()
	if err != nil {
		return err
	}
	for _, v := range m.vcpus {
		st, err := saveVCPU(v, msrs)
		if err != nil {
			return err
		}
		snap.VCPUs = append(snap.VCPUs, st)
	}
	for i, id := range []uint32{kvm.IRQChipPICMaster, kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC} {
		c, err := m.vm.GetIRQChip(id)
		if err != nil {
			return err
		}
		snap.IRQChips[i] = bytes.Clone(c.Chip[:])
	}
	pit, err := m.vm.GetPIT2()
	if err != nil {
		return err
	}
	snap.PIT = raw(&pit)
	clk, err := m.vm.GetClock()
	if err != nil {
		return err
	}
	snap.Clock = clk.Clock
	snap.UART = m.uart.State()
	for i, s := range m.slots {
		st, err := s.mmio.SaveState()
		if err != nil {
			return fmt.Errorf("vmm: snapshot of device %d: %w", i, err)
		}
		snap.Devices = append(snap.Devices, DeviceState{MMIOState: st})
	}
	if err := writeMemory(filepath.Join(dir, SnapshotMemoryFile), m.mem); err != nil {
		return err
	}
	b, err := json.Marshal(&snap)
	if err != nil {
		return err
	}
	return writeFileSync(filepath.Join(dir, SnapshotStateFile), b)
}

// savedMSRs is the list of MSRs a snapshot carries: every MSR KVM lists
// for save/restore (KVM_GET_MSR_INDEX_LIST) that this vCPU can read.
func (m *Machine) savedMSRs() ([]uint32, error) {
	list, err := m.sys.MSRIndexList()
	if err != nil {
		return nil, err
	}
	var ok []uint32
	for _, idx := range list {
		if _, err := m.vcpus[0].GetMSRs(idx); err == nil {
			ok = append(ok, idx)
		}
	}
	return ok, nil
}

func saveVCPU(v *kvm.VCPU, msrs []uint32) (VCPUState, error) {
	st := VCPUState{ID: v.ID()}
	var err error
	if st.CPUID, err = v.GetCPUID2(); err != nil {
		return st, err
	}
	if st.MPState, err = v.GetMPState(); err != nil {
		return st, err
	}
	regs, err := v.GetRegs()
	if err != nil {
		return st, err
	}
	st.Regs = raw(&regs)
	sregs, err := v.GetSregs()
	if err != nil {
		return st, err
	}
	st.Sregs = raw(&sregs)
	if st.XSave, err = v.GetXSave(); err != nil {
		return st, err
	}
	if xcrs, err := v.GetXCRs(); err == nil {
		st.XCRs = raw(&xcrs)
	}
	dr, err := v.GetDebugRegs()
	if err != nil {
		return st, err
	}
	st.DebugRegs = raw(&dr)
	lapic, err := v.GetLAPIC()
	if err != nil {
		return st, err
	}
	st.LAPIC = raw(lapic)
	ev, err := v.GetVCPUEvents()
	if err != nil {
		return st, err
	}
	st.Events = raw(&ev)
	if st.MSRs, err = v.GetMSRs(msrs...); err != nil {
		return st, err
	}
	return st, nil
}

// memChunk is the granularity of the sparse memory file: an all-zero
// chunk is a hole (which a private mapping reads as zeros and never
// shares a page-cache page for).
const memChunk = 64 << 10

// writeMemory writes guest memory to path, leaving all-zero chunks as holes.
func writeMemory(path string, mem []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("vmm: snapshot memory: %w", err)
	}
	defer f.Close()
	zero := make([]byte, memChunk)
	for off := 0; off < len(mem); off += memChunk {
		c := mem[off:min(off+memChunk, len(mem))]
		if bytes.Equal(c, zero[:len(c)]) {
			continue
		}
		if _, err := f.WriteAt(c, int64(off)); err != nil {
			return fmt.Errorf("vmm: snapshot memory: %w", err)
		}
	}
	if err := f.Truncate(int64(len(mem))); err != nil {
		return fmt.Errorf("vmm: snapshot memory: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("vmm: snapshot memory: %w", err)
	}
	return f.Close()
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("vmm: snapshot: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("vmm: snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("vmm: snapshot: %w", err)
	}
	return f.Close()
}
