// Package guest puts a Linux guest into guest memory: it loads an ELF
// vmlinux through its PVH entry point (or a bzImage through the 64-bit boot
// protocol), writes the boot information the kernel reads (PVH start_info
// or boot_params, the e820 memory map, the command line, the initrd), the
// ACPI tables that describe CPUs, interrupt controllers and our devices
// (RSDP, XSDT, FADT, MADT, DSDT), and computes the CPUID each vCPU shows.
// It returns the register state the boot vCPU must start in as plain data;
// package vmm maps it onto KVM.
//
// Guest physical memory layout (below 1 MiB, then the kernel):
//
//	0x0000_0500  GDT for the entry state (null, code, data, TSS)
//	0x0000_6000  hvm_start_info (PVH) / 0x7000 boot_params (bzImage)
//	0x0000_6100  PVH memory map (hvm_memmap_table_entry[])
//	0x0000_6800  PVH module list (the initrd)
//	0x0000_9000  page tables for the 64-bit boot protocol (PML4, PDPT, PD)
//	0x0002_0000  kernel command line (up to 64 KiB)
//	0x0009_fc00  reserved (EBDA), 0xa0000-0xfffff reserved (legacy holes)
//	0x000e_0000  ACPI: RSDP, then XSDT, FADT, MADT, DSDT
//	0x0100_0000  kernel (ELF PT_LOAD physical addresses, or 1 MiB for bzImage)
//	top of RAM   initrd, page aligned, as high as fits
//
// References: the PVH boot ABI (Xen's xen/include/public/arch-x86/hvm/start_info.h
// and Linux Documentation/x86/boot.rst for the 64-bit protocol), ACPI 6.5
// (sections cited at each table), and the Intel SDM for CPUID.
package guest
