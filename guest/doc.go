// Package guest puts a Linux guest into guest memory. It owns:
//
//   - loading an ELF vmlinux through its PVH entry point (LoadELF, the
//     XEN_ELFNOTE_PHYS32_ENTRY note) or a bzImage through the 64-bit boot
//     protocol (the fallback; decompressing in the guest is slow);
//   - the boot information the kernel reads: PVH hvm_start_info with its
//     memory map and module list, or boot_params (the zero page); the e820
//     map (MemoryMap); the command line; the initrd;
//   - the GDT, boot stack and identity page tables of the entry state;
//   - the ACPI tables that describe CPUs, interrupt controllers and our
//     devices (RSDP, XSDT, FADT for hardware-reduced ACPI, MADT, and a DSDT
//     built by a small AML encoder, checked byte for byte against iasl);
//   - the CPUID each vCPU shows (GuestCPUID), with the masks for the VM
//     and for software-nested KVM's instruction emulator documented bit by
//     bit in cpuid.go.
//
// It does not import package kvm: Load returns the boot vCPU's state as
// plain data (EntryState) and GuestCPUID works on plain CPUIDEntry values;
// package vmm maps both onto KVM. No MP table is written: Linux finds CPUs
// and the I/O APIC in the MADT.
//
// # Guest physical memory layout
//
// mem is guest memory indexed by physical address. Everything besides the
// kernel and the initrd goes in the PC's BIOS area, which the e820 map
// marks reserved:
//
//	0x0000_0000  RAM (real-mode IVT/BDA; Linux keeps the first 1 MiB to itself)
//	0x0009_fc00  reserved: EBDA
//	0x000a_0000  reserved: VGA window, option ROMs
//	0x000e_0000  reserved: RSDP (first: the legacy RSDP scan finds it), DSDT, FADT, MADT, XSDT (up to 0xeffff)
//	0x000f_0000  reserved: GDT (null, 0x08 code32, 0x10 code64, 0x18 data, 0x20 TSS)
//	0x000f_1000  reserved: hvm_start_info; 0xf1040 module list (the initrd); 0xf1100 memory map
//	0x000f_2000  reserved: boot_params (bzImage)
//	0x000f_3000  reserved: command line (4 KiB, NUL included)
//	0x000f_4000  reserved: PML4, 0xf5000 PDPT, 0xf6000-0xf9fff four PDs (0-4 GiB in 2 MiB pages)
//	0x000f_a000  reserved: boot stack, RSP = 0xfe000
//	0x0010_0000  RAM: a bzImage's protected-mode kernel; an ELF kernel at its
//	             physical addresses (Debian's: 16 MiB up)
//	top of low RAM  the initrd, page aligned, as high as fits (below
//	             initrd_addr_max for a bzImage)
//	0xc000_0000  the 32-bit MMIO hole (virtio-mmio windows, I/O APIC
//	             0xfec00000, local APIC 0xfee00000) up to 4 GiB
//	0x1_0000_0000  RAM beyond 3 GiB, if any
//
// # References
//
// PVH: Xen's xen/include/public/arch-x86/hvm/start_info.h (hvm_start_info
// version 1), xen/include/public/elfnote.h (XEN_ELFNOTE_PHYS32_ENTRY = 18),
// Xen docs/misc/pvh.pandoc (entry state) and Linux
// Documentation/arch/x86/boot.rst ("PVH"). The 64-bit boot protocol:
// Linux Documentation/arch/x86/boot.rst and zero-page.rst. ACPI 6.5: 5.2
// (tables), 6.4 (resource descriptors), 15 (e820 types), 20 (AML). Intel
// SDM Vol. 2A (CPUID), Vol. 3A 3.4.5 (segment descriptors), 4.5 (4-level
// paging). The approach (vmlinux through PVH, hardware-reduced ACPI,
// virtio-mmio devices declared in the DSDT) is the one Firecracker and
// Cloud Hypervisor take; this code is written from the specifications.
package guest
