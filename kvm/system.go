package kvm

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// APIVersion is the only KVM API version there is (api.rst 4.1).
const APIVersion = 12

// DevicePath is the KVM device node.
const DevicePath = "/dev/kvm"

// maxCPUIDEntries bounds the CPUID arrays we exchange with the kernel
// (KVM_MAX_CPUID_ENTRIES is 256).
const maxCPUIDEntries = 256

// System is an open /dev/kvm.
type System struct {
	fd int
}

// Open opens /dev/kvm and checks the API version.
func Open() (*System, error) {
	fd, err := unix.Open(DevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("kvm: %s does not exist: this host has no KVM (load kvm_intel/kvm_amd or run where virtualization is exposed): %w", DevicePath, err)
		}
		return nil, fmt.Errorf("kvm: open %s: %w", DevicePath, err)
	}
	s := &System{fd: fd}
	v, err := s.APIVersion()
	if err != nil {
		s.Close()
		return nil, err
	}
	if v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("kvm: API version %d, want %d", v, APIVersion)
	}
	return s, nil
}

// Available reports whether /dev/kvm can be opened read-write, with the
// reason when it cannot.
func Available() error {
	s, err := Open()
	if err != nil {
		return err
	}
	return s.Close()
}

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error { return unix.Close(s.fd) }

// FD returns the raw file descriptor.
func (s *System) FD() int { return s.fd }

// APIVersion is KVM_GET_API_VERSION (api.rst 4.1).
func (s *System) APIVersion() (int, error) {
	r, err := ioctlVal(s.fd, kvmGetAPIVersion, 0)
	if err != nil {
		return 0, fmt.Errorf("kvm: KVM_GET_API_VERSION: %w", err)
	}
	return int(r), nil
}

// CheckExtension is KVM_CHECK_EXTENSION (api.rst 4.4): 0 if the capability
// is absent, else a positive, capability-specific value.
func (s *System) CheckExtension(capability int) int {
	r, err := ioctlVal(s.fd, kvmCheckExtension, uintptr(capability))
	if err != nil {
		return 0
	}
	return int(r)
}

// VCPUMmapSize is KVM_GET_VCPU_MMAP_SIZE (api.rst 4.5): the size of the
// shared kvm_run region of each vCPU.
func (s *System) VCPUMmapSize() (int, error) {
	r, err := ioctlVal(s.fd, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return 0, fmt.Errorf("kvm: KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	return int(r), nil
}

// cpuid2 is struct kvm_cpuid2 with room for maxCPUIDEntries entries.
type cpuid2 struct {
	Nent    uint32
	_       uint32
	Entries [maxCPUIDEntries]CPUIDEntry
}

func (s *System) getCPUID(req uintptr, name string) ([]CPUIDEntry, error) {
	c := new(cpuid2)
	c.Nent = maxCPUIDEntries
	if _, err := ioctlPtr(s.fd, req, unsafe.Pointer(c)); err != nil {
		return nil, fmt.Errorf("kvm: %s: %w", name, err)
	}
	if c.Nent > maxCPUIDEntries {
		return nil, fmt.Errorf("kvm: %s: kernel returned %d entries", name, c.Nent)
	}
	return append([]CPUIDEntry(nil), c.Entries[:c.Nent]...), nil
}

// SupportedCPUID is KVM_GET_SUPPORTED_CPUID (api.rst 4.46): the CPUID
// leaves KVM can expose to a guest on this host.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	return s.getCPUID(kvmGetSupportedCPUID, "KVM_GET_SUPPORTED_CPUID")
}

// EmulatedCPUID is KVM_GET_EMULATED_CPUID (api.rst 4.88).
func (s *System) EmulatedCPUID() ([]CPUIDEntry, error) {
	return s.getCPUID(kvmGetEmulatedCPUID, "KVM_GET_EMULATED_CPUID")
}

// msrList is struct kvm_msr_list with room for the indices.
type msrList struct {
	Nmsrs   uint32
	Indices [1024]uint32
}

func (s *System) msrIndexList(req uintptr, name string) ([]uint32, error) {
	l := new(msrList)
	l.Nmsrs = uint32(len(l.Indices))
	if _, err := ioctlPtr(s.fd, req, unsafe.Pointer(l)); err != nil {
		return nil, fmt.Errorf("kvm: %s: %w", name, err)
	}
	if int(l.Nmsrs) > len(l.Indices) {
		return nil, fmt.Errorf("kvm: %s: kernel returned %d indices", name, l.Nmsrs)
	}
	return append([]uint32(nil), l.Indices[:l.Nmsrs]...), nil
}

// MSRIndexList is KVM_GET_MSR_INDEX_LIST (api.rst 4.3): the MSRs a guest
// can have saved and restored.
func (s *System) MSRIndexList() ([]uint32, error) {
	return s.msrIndexList(kvmGetMSRIndexList, "KVM_GET_MSR_INDEX_LIST")
}

// MSRFeatureIndexList is KVM_GET_MSR_FEATURE_INDEX_LIST (api.rst 4.3).
func (s *System) MSRFeatureIndexList() ([]uint32, error) {
	return s.msrIndexList(kvmGetMSRFeatureIndexL, "KVM_GET_MSR_FEATURE_INDEX_LIST")
}

// CreateVM is KVM_CREATE_VM (api.rst 4.2) with the default machine type.
func (s *System) CreateVM() (*VM, error) {
	r, err := ioctlVal(s.fd, kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_CREATE_VM: %w", err)
	}
	mmapSize, err := s.VCPUMmapSize()
	if err != nil {
		unix.Close(int(r))
		return nil, err
	}
	unix.CloseOnExec(int(r))
	return &VM{fd: int(r), sys: s, runSize: mmapSize}, nil
}

// HostHasHardwareVirt reports whether the host CPU advertises VMX or SVM in
// /proc/cpuinfo. Without it, /dev/kvm may still exist (software-nested
// virtualization such as PVM) but ring-0 guest code is emulated.
func HostHasHardwareVirt() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	return hasVirtFlag(string(b))
}

func hasVirtFlag(cpuinfo string) bool {
	for _, line := range strings.Split(cpuinfo, "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
	}
	return false
}
