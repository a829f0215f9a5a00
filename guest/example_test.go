package guest_test

import (
	"fmt"

	"github.com/hyperhq/hyperd-go/guest"
)

// Example shows what a VMM does with the package: lay out memory, load the
// guest, compute each vCPU's CPUID, then copy EntryState into KVM's
// sregs/regs (not shown).
func Example() {
	const memSize = 256 << 20
	mem := make([]byte, guest.AddressSpaceEnd(memSize)) // the VMM's mmap'd guest RAM
	l, err := guest.Load(mem, guest.Config{
		Kernel:  "build/vmlinux",
		Initrd:  "build/initramfs.cpio.gz",
		Cmdline: "console=ttyS0 reboot=k panic=-1",
		MemSize: memSize,
		ACPI: guest.ACPIConfig{
			CPUs:    2,
			Serial:  true,
			Devices: []guest.MMIODevice{{Base: 0xd0000000, Size: 0x200, GSI: 5}},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	var host []guest.CPUIDEntry // from KVM_GET_SUPPORTED_CPUID
	for cpu := 0; cpu < 2; cpu++ {
		_ = guest.GuestCPUID(host, cpu, guest.CPUIDProfile{CPUs: 2, Emulated: true})
	}
	fmt.Printf("%s entry at %#x, RBX %#x\n", l.Entry.Mode, l.Entry.RIP, l.Entry.RBX)
}
