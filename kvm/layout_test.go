package kvm

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// headerProbe prints, for every struct we mirror and every ioctl number we
// use, the kernel headers' value. TestHeaderLayouts compares them with ours.
const headerProbe = `
#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
#define S(t) printf("sizeof %s %zu\n", #t, sizeof(struct t));
#define O(t, f) printf("offsetof %s.%s %zu\n", #t, #f, offsetof(struct t, f));
#define N(x) printf("const %s %lu\n", #x, (unsigned long)(x));
int main(void) {
	S(kvm_userspace_memory_region) S(kvm_regs) S(kvm_segment) S(kvm_dtable) S(kvm_sregs)
	S(kvm_fpu) S(kvm_msr_entry) S(kvm_cpuid_entry2) S(kvm_lapic_state) S(kvm_vcpu_events)
	S(kvm_translation) S(kvm_guest_debug) S(kvm_irq_level) S(kvm_irqchip) S(kvm_pit_config)
	S(kvm_irqfd) S(kvm_ioeventfd) S(kvm_msi) S(kvm_clock_data) S(kvm_enable_cap)
	S(kvm_xsave) S(kvm_xcr) S(kvm_xcrs) S(kvm_debugregs) S(kvm_pit_channel_state) S(kvm_pit_state2)
	O(kvm_pit_channel_state, count_load_time) O(kvm_pit_state2, flags) O(kvm_debugregs, flags)
	O(kvm_run, immediate_exit) O(kvm_run, exit_reason) O(kvm_run, cr8) O(kvm_run, apic_base)
	O(kvm_run, io) O(kvm_run, kvm_valid_regs) O(kvm_run, kvm_dirty_regs)
	O(kvm_run, io.port) O(kvm_run, io.count) O(kvm_run, io.data_offset)
	O(kvm_run, mmio.data) O(kvm_run, mmio.len) O(kvm_run, mmio.is_write)
	O(kvm_run, internal.data) O(kvm_run, emulation_failure.flags) O(kvm_run, emulation_failure.insn_size)
	O(kvm_run, system_event.data) O(kvm_run, fail_entry.cpu)
	O(kvm_sregs, efer) O(kvm_sregs, interrupt_bitmap) O(kvm_vcpu_events, exception_payload)
	N(KVM_GET_API_VERSION) N(KVM_CREATE_VM) N(KVM_GET_MSR_INDEX_LIST) N(KVM_CHECK_EXTENSION)
	N(KVM_GET_VCPU_MMAP_SIZE) N(KVM_GET_SUPPORTED_CPUID) N(KVM_GET_EMULATED_CPUID)
	N(KVM_GET_MSR_FEATURE_INDEX_LIST) N(KVM_CREATE_VCPU) N(KVM_SET_USER_MEMORY_REGION)
	N(KVM_SET_TSS_ADDR) N(KVM_SET_IDENTITY_MAP_ADDR) N(KVM_CREATE_IRQCHIP) N(KVM_IRQ_LINE)
	N(KVM_IRQ_LINE_STATUS) N(KVM_GET_IRQCHIP) N(KVM_SET_IRQCHIP) N(KVM_IRQFD) N(KVM_CREATE_PIT2)
	N(KVM_IOEVENTFD) N(KVM_SET_CLOCK) N(KVM_GET_CLOCK) N(KVM_ENABLE_CAP) N(KVM_SIGNAL_MSI)
	N(KVM_RUN) N(KVM_GET_REGS) N(KVM_SET_REGS) N(KVM_GET_SREGS) N(KVM_SET_SREGS)
	N(KVM_TRANSLATE) N(KVM_INTERRUPT) N(KVM_GET_MSRS) N(KVM_SET_MSRS) N(KVM_GET_FPU) N(KVM_SET_FPU)
	N(KVM_GET_LAPIC) N(KVM_SET_LAPIC) N(KVM_SET_CPUID2) N(KVM_GET_CPUID2) N(KVM_GET_MP_STATE)
	N(KVM_SET_MP_STATE) N(KVM_SET_GUEST_DEBUG) N(KVM_GET_VCPU_EVENTS) N(KVM_SET_VCPU_EVENTS)
	N(KVM_GET_TSC_KHZ)
	N(KVM_GET_XSAVE) N(KVM_SET_XSAVE) N(KVM_GET_XSAVE2) N(KVM_GET_XCRS) N(KVM_SET_XCRS)
	N(KVM_GET_DEBUGREGS) N(KVM_SET_DEBUGREGS) N(KVM_GET_PIT2) N(KVM_SET_PIT2) N(KVM_CAP_XSAVE2)
	N(KVM_CAP_IRQCHIP) N(KVM_CAP_USER_MEMORY) N(KVM_CAP_SET_TSS_ADDR) N(KVM_CAP_NR_VCPUS)
	N(KVM_CAP_PIT2) N(KVM_CAP_IRQFD) N(KVM_CAP_IOEVENTFD) N(KVM_CAP_SET_IDENTITY_MAP_ADDR)
	N(KVM_CAP_VCPU_EVENTS) N(KVM_CAP_SIGNAL_MSI) N(KVM_CAP_READONLY_MEM) N(KVM_CAP_IMMEDIATE_EXIT)
	N(KVM_CAP_MAX_VCPUS) N(KVM_CAP_EXIT_ON_EMULATION_FAILURE) N(KVM_CAP_IOEVENTFD_ANY_LENGTH)
	N(KVM_CAP_ADJUST_CLOCK) N(KVM_CAP_GET_TSC_KHZ) N(KVM_CAP_X86_DISABLE_EXITS)
	N(KVM_EXIT_IO) N(KVM_EXIT_MMIO) N(KVM_EXIT_HLT) N(KVM_EXIT_SHUTDOWN) N(KVM_EXIT_FAIL_ENTRY)
	N(KVM_EXIT_INTR) N(KVM_EXIT_INTERNAL_ERROR) N(KVM_EXIT_SYSTEM_EVENT) N(KVM_EXIT_DEBUG)
	N(KVM_MEM_READONLY) N(KVM_PIT_SPEAKER_DUMMY)
	return 0;
}
`

// TestHeaderLayouts compiles headerProbe against the installed
// <linux/kvm.h> and checks every size, offset and number we hard-code.
func TestHeaderLayouts(t *testing.T) {
	if _, err := os.Stat("/usr/include/linux/kvm.h"); err != nil {
		t.Fatalf("kernel headers missing (apt-get install linux-libc-dev): %v", err)
	}
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatalf("gcc is needed to compile the header probe (apt-get install gcc): %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "probe.c")
	if err := os.WriteFile(src, []byte(headerProbe), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "probe")
	if out, err := exec.Command(cc, "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("compile header probe: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("run header probe: %v", err)
	}
	want := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		v, _ := strconv.ParseUint(f[2], 10, 64)
		want[f[0]+" "+f[1]] = v
	}
	var run runHeader
	got := map[string]uint64{
		"sizeof kvm_userspace_memory_region":             uint64(unsafe.Sizeof(UserMemoryRegion{})),
		"sizeof kvm_regs":                                uint64(unsafe.Sizeof(Regs{})),
		"sizeof kvm_segment":                             uint64(unsafe.Sizeof(Segment{})),
		"sizeof kvm_dtable":                              uint64(unsafe.Sizeof(DTable{})),
		"sizeof kvm_sregs":                               uint64(unsafe.Sizeof(Sregs{})),
		"sizeof kvm_fpu":                                 uint64(unsafe.Sizeof(FPU{})),
		"sizeof kvm_msr_entry":                           uint64(unsafe.Sizeof(MSREntry{})),
		"sizeof kvm_cpuid_entry2":                        uint64(unsafe.Sizeof(CPUIDEntry{})),
		"sizeof kvm_lapic_state":                         uint64(unsafe.Sizeof(LAPICState{})),
		"sizeof kvm_vcpu_events":                         uint64(unsafe.Sizeof(VCPUEvents{})),
		"sizeof kvm_translation":                         uint64(unsafe.Sizeof(Translation{})),
		"sizeof kvm_guest_debug":                         uint64(unsafe.Sizeof(GuestDebug{})),
		"sizeof kvm_irq_level":                           uint64(unsafe.Sizeof(irqLevel{})),
		"sizeof kvm_irqchip":                             uint64(unsafe.Sizeof(IRQChip{})),
		"sizeof kvm_pit_config":                          uint64(unsafe.Sizeof(pitConfig{})),
		"sizeof kvm_irqfd":                               uint64(unsafe.Sizeof(irqfd{})),
		"sizeof kvm_ioeventfd":                           uint64(unsafe.Sizeof(ioeventfd{})),
		"sizeof kvm_msi":                                 uint64(unsafe.Sizeof(MSI{})),
		"sizeof kvm_clock_data":                          uint64(unsafe.Sizeof(ClockData{})),
		"sizeof kvm_enable_cap":                          uint64(unsafe.Sizeof(enableCap{})),
		"sizeof kvm_xsave":                               uint64(unsafe.Sizeof(XSave{})),
		"sizeof kvm_xcr":                                 uint64(unsafe.Sizeof(XCR{})),
		"sizeof kvm_xcrs":                                uint64(unsafe.Sizeof(XCRs{})),
		"sizeof kvm_debugregs":                           uint64(unsafe.Sizeof(DebugRegs{})),
		"sizeof kvm_pit_channel_state":                   uint64(unsafe.Sizeof(PITChannel{})),
		"sizeof kvm_pit_state2":                          uint64(unsafe.Sizeof(PITState2{})),
		"offsetof kvm_pit_channel_state.count_load_time": uint64(unsafe.Offsetof(PITChannel{}.CountLoadTime)),
		"offsetof kvm_pit_state2.flags":                  uint64(unsafe.Offsetof(PITState2{}.Flags)),
		"offsetof kvm_debugregs.flags":                   uint64(unsafe.Offsetof(DebugRegs{}.Flags)),
		"offsetof kvm_run.immediate_exit":                uint64(unsafe.Offsetof(run.ImmediateExit)),
		"offsetof kvm_run.exit_reason":                   uint64(unsafe.Offsetof(run.ExitReason)),
		"offsetof kvm_run.cr8":                           uint64(unsafe.Offsetof(run.CR8)),
		"offsetof kvm_run.apic_base":                     uint64(unsafe.Offsetof(run.APICBase)),
		"offsetof kvm_run.io":                            uint64(exitUnionOffset),
		"offsetof kvm_run.kvm_valid_regs":                uint64(unsafe.Offsetof(run.KVMValidRegs)),
		"offsetof kvm_run.kvm_dirty_regs":                uint64(unsafe.Offsetof(run.KVMDirtyRegs)),
		"offsetof kvm_run.io.port":                       uint64(exitUnionOffset + 2),
		"offsetof kvm_run.io.count":                      uint64(exitUnionOffset + 4),
		"offsetof kvm_run.io.data_offset":                uint64(exitUnionOffset + 8),
		"offsetof kvm_run.mmio.data":                     uint64(exitUnionOffset + 8),
		"offsetof kvm_run.mmio.len":                      uint64(exitUnionOffset + 16),
		"offsetof kvm_run.mmio.is_write":                 uint64(exitUnionOffset + 20),
		"offsetof kvm_run.internal.data":                 uint64(exitUnionOffset + 8),
		"offsetof kvm_run.emulation_failure.flags":       uint64(exitUnionOffset + 8),
		"offsetof kvm_run.emulation_failure.insn_size":   uint64(exitUnionOffset + 16),
		"offsetof kvm_run.system_event.data":             uint64(exitUnionOffset + 8),
		"offsetof kvm_run.fail_entry.cpu":                uint64(exitUnionOffset + 8),
		"offsetof kvm_sregs.efer":                        uint64(unsafe.Offsetof(Sregs{}.EFER)),
		"offsetof kvm_sregs.interrupt_bitmap":            uint64(unsafe.Offsetof(Sregs{}.InterruptBitmap)),
		"offsetof kvm_vcpu_events.exception_payload":     uint64(unsafe.Offsetof(VCPUEvents{}.ExceptionPayload)),

		"const KVM_GET_API_VERSION":            uint64(kvmGetAPIVersion),
		"const KVM_CREATE_VM":                  uint64(kvmCreateVM),
		"const KVM_GET_MSR_INDEX_LIST":         uint64(kvmGetMSRIndexList),
		"const KVM_CHECK_EXTENSION":            uint64(kvmCheckExtension),
		"const KVM_GET_VCPU_MMAP_SIZE":         uint64(kvmGetVCPUMmapSize),
		"const KVM_GET_SUPPORTED_CPUID":        uint64(kvmGetSupportedCPUID),
		"const KVM_GET_EMULATED_CPUID":         uint64(kvmGetEmulatedCPUID),
		"const KVM_GET_MSR_FEATURE_INDEX_LIST": uint64(kvmGetMSRFeatureIndexL),
		"const KVM_CREATE_VCPU":                uint64(kvmCreateVCPU),
		"const KVM_SET_USER_MEMORY_REGION":     uint64(kvmSetUserMemoryRegion),
		"const KVM_SET_TSS_ADDR":               uint64(kvmSetTSSAddr),
		"const KVM_SET_IDENTITY_MAP_ADDR":      uint64(kvmSetIdentityMapAddr),
		"const KVM_CREATE_IRQCHIP":             uint64(kvmCreateIRQChip),
		"const KVM_IRQ_LINE":                   uint64(kvmIRQLine),
		"const KVM_IRQ_LINE_STATUS":            uint64(kvmIRQLineStatus),
		"const KVM_GET_IRQCHIP":                uint64(kvmGetIRQChip),
		"const KVM_SET_IRQCHIP":                uint64(kvmSetIRQChip),
		"const KVM_IRQFD":                      uint64(kvmIRQFD),
		"const KVM_CREATE_PIT2":                uint64(kvmCreatePIT2),
		"const KVM_IOEVENTFD":                  uint64(kvmIOEventFD),
		"const KVM_SET_CLOCK":                  uint64(kvmSetClock),
		"const KVM_GET_CLOCK":                  uint64(kvmGetClock),
		"const KVM_ENABLE_CAP":                 uint64(kvmEnableCap),
		"const KVM_SIGNAL_MSI":                 uint64(kvmSignalMSI),
		"const KVM_RUN":                        uint64(kvmRun),
		"const KVM_GET_REGS":                   uint64(kvmGetRegs),
		"const KVM_SET_REGS":                   uint64(kvmSetRegs),
		"const KVM_GET_SREGS":                  uint64(kvmGetSregs),
		"const KVM_SET_SREGS":                  uint64(kvmSetSregs),
		"const KVM_TRANSLATE":                  uint64(kvmTranslate),
		"const KVM_INTERRUPT":                  uint64(kvmInterrupt),
		"const KVM_GET_MSRS":                   uint64(kvmGetMSRs),
		"const KVM_SET_MSRS":                   uint64(kvmSetMSRs),
		"const KVM_GET_FPU":                    uint64(kvmGetFPU),
		"const KVM_SET_FPU":                    uint64(kvmSetFPU),
		"const KVM_GET_LAPIC":                  uint64(kvmGetLAPIC),
		"const KVM_SET_LAPIC":                  uint64(kvmSetLAPIC),
		"const KVM_SET_CPUID2":                 uint64(kvmSetCPUID2),
		"const KVM_GET_CPUID2":                 uint64(kvmGetCPUID2),
		"const KVM_GET_MP_STATE":               uint64(kvmGetMPState),
		"const KVM_SET_MP_STATE":               uint64(kvmSetMPState),
		"const KVM_SET_GUEST_DEBUG":            uint64(kvmSetGuestDebug),
		"const KVM_GET_VCPU_EVENTS":            uint64(kvmGetVCPUEvents),
		"const KVM_SET_VCPU_EVENTS":            uint64(kvmSetVCPUEvents),
		"const KVM_GET_TSC_KHZ":                uint64(kvmGetTSCKHz),
		"const KVM_GET_XSAVE":                  uint64(kvmGetXSave),
		"const KVM_SET_XSAVE":                  uint64(kvmSetXSave),
		"const KVM_GET_XSAVE2":                 uint64(kvmGetXSave2),
		"const KVM_GET_XCRS":                   uint64(kvmGetXCRs),
		"const KVM_SET_XCRS":                   uint64(kvmSetXCRs),
		"const KVM_GET_DEBUGREGS":              uint64(kvmGetDebugRegs),
		"const KVM_SET_DEBUGREGS":              uint64(kvmSetDebugRegs),
		"const KVM_GET_PIT2":                   uint64(kvmGetPIT2),
		"const KVM_SET_PIT2":                   uint64(kvmSetPIT2),
		"const KVM_CAP_XSAVE2":                 CapXSave2,

		"const KVM_CAP_IRQCHIP":                   CapIRQChip,
		"const KVM_CAP_USER_MEMORY":               CapUserMemory,
		"const KVM_CAP_SET_TSS_ADDR":              CapSetTSSAddr,
		"const KVM_CAP_NR_VCPUS":                  CapNrVCPUs,
		"const KVM_CAP_PIT2":                      CapPIT2,
		"const KVM_CAP_IRQFD":                     CapIRQFD,
		"const KVM_CAP_IOEVENTFD":                 CapIOEventFD,
		"const KVM_CAP_SET_IDENTITY_MAP_ADDR":     CapSetIdentityMapAddr,
		"const KVM_CAP_VCPU_EVENTS":               CapVCPUEvents,
		"const KVM_CAP_SIGNAL_MSI":                CapSignalMSI,
		"const KVM_CAP_READONLY_MEM":              CapReadonlyMem,
		"const KVM_CAP_IMMEDIATE_EXIT":            CapImmediateExit,
		"const KVM_CAP_MAX_VCPUS":                 CapMaxVCPUs,
		"const KVM_CAP_EXIT_ON_EMULATION_FAILURE": CapExitOnEmulationFailure,
		"const KVM_CAP_IOEVENTFD_ANY_LENGTH":      CapIOEventFDAnyLength,
		"const KVM_CAP_ADJUST_CLOCK":              CapAdjustClock,
		"const KVM_CAP_GET_TSC_KHZ":               CapGetTSCKHz,
		"const KVM_CAP_X86_DISABLE_EXITS":         CapX86DisableExits,
		"const KVM_EXIT_IO":                       uint64(ExitIO),
		"const KVM_EXIT_MMIO":                     uint64(ExitMMIO),
		"const KVM_EXIT_HLT":                      uint64(ExitHLT),
		"const KVM_EXIT_SHUTDOWN":                 uint64(ExitShutdown),
		"const KVM_EXIT_FAIL_ENTRY":               uint64(ExitFailEntry),
		"const KVM_EXIT_INTR":                     uint64(ExitIntr),
		"const KVM_EXIT_INTERNAL_ERROR":           uint64(ExitInternalError),
		"const KVM_EXIT_SYSTEM_EVENT":             uint64(ExitSystemEvent),
		"const KVM_EXIT_DEBUG":                    uint64(ExitDebug),
		"const KVM_MEM_READONLY":                  MemReadOnly,
		"const KVM_PIT_SPEAKER_DUMMY":             PITSpeakerDummy,
	}
	if len(want) != len(got) {
		t.Errorf("probe printed %d values, test checks %d", len(want), len(got))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: not checked", k)
			continue
		}
		if g != w {
			t.Errorf("%s = %d (%#x), kernel headers say %d (%#x)", k, g, g, w, w)
		}
	}
}
