package guest

import (
	"encoding/binary"
	"fmt"
)

// MMIODevice is a virtio-mmio device the DSDT declares.
type MMIODevice struct {
	Base uint64 // guest physical base of the register window (below 4 GiB)
	Size uint64
	GSI  uint32 // I/O APIC input its interrupt is wired to
	// Level declares a level-triggered interrupt (the VMM then needs a
	// resampling irqfd); the default is edge-triggered. Active high either way.
	Level bool
}

// ACPIConfig describes the machine to the guest.
type ACPIConfig struct {
	CPUs       int
	Devices    []MMIODevice
	Serial     bool   // declare COM1 (PNP0501, I/O 0x3f8, IRQ 4)
	SleepPort  uint16 // I/O port of the HW-reduced sleep control (+0) and status (+1) registers
	ResetPort  uint16 // I/O port of the FADT reset register (0 = none)
	ResetValue uint8
}

// Fixed addresses of the local APIC and I/O APIC (Intel SDM Vol. 3A 10.4.1;
// the 82093AA I/O APIC data sheet).
const (
	LAPICAddr  = 0xfee00000
	IOAPICAddr = 0xfec00000
	IOAPICPins = 24
)

const (
	oemID      = "HYPERD"
	oemTableID = "HYPERDGO"
	creatorID  = "HYPD"
)

var le = binary.LittleEndian

// sdt builds a System Description Table: the 36-byte header (ACPI 6.5,
// 5.2.6) followed by body, with length and checksum filled in.
func sdt(sig string, rev uint8, body []byte) []byte {
	t := make([]byte, 36, 36+len(body))
	copy(t[0:4], sig)
	le.PutUint32(t[4:], uint32(36+len(body)))
	t[8] = rev
	copy(t[10:16], oemID)
	copy(t[16:24], oemTableID)
	le.PutUint32(t[24:], 1) // OEM revision
	copy(t[28:32], creatorID)
	le.PutUint32(t[32:], 1) // creator revision
	t = append(t, body...)
	t[9] = checksum(t)
	return t
}

// checksum returns the byte that makes b sum to zero mod 256.
func checksum(b []byte) uint8 {
	var s uint8
	for _, v := range b {
		s += v
	}
	return -s
}

// gas is a Generic Address Structure (ACPI 6.5, 5.2.3.2).
func gas(space, bitWidth, accessSize uint8, addr uint64) []byte {
	b := make([]byte, 12)
	b[0], b[1], b[2], b[3] = space, bitWidth, 0, accessSize
	le.PutUint64(b[4:], addr)
	return b
}

const (
	gasSystemMemory = 0
	gasSystemIO     = 1
	gasAccessByte   = 1
)

// fadt builds the Fixed ACPI Description Table, revision 6.5 (ACPI 6.5,
// 5.2.9 "Fixed ACPI Description Table (FADT)", FADT Format), for a
// hardware-reduced ACPI machine (4.1 "Hardware-Reduced ACPI": no PM
// timer, no SCI, no fixed-feature hardware) pointing at dsdtAddr.
func fadt(cfg ACPIConfig, dsdtAddr uint64) []byte {
	body := make([]byte, 276-36)
	at := func(off int) []byte { return body[off-36:] }
	le.PutUint32(at(40), uint32(dsdtAddr)) // DSDT
	at(45)[0] = 0                          // Preferred_PM_Profile: unspecified
	le.PutUint16(at(46), 9)                // SCI_INT (unused when HW-reduced)
	// IAPC_BOOT_ARCH (5.2.9.3): VGA not present (bit 2), MSI not supported
	// (bit 3), CMOS RTC not present (bit 5). LEGACY_DEVICES (bit 0) and
	// 8042 (bit 1) clear: the only legacy device, COM1, is in the DSDT,
	// and Linux skips probing a keyboard controller.
	le.PutUint16(at(109), 1<<2|1<<3|1<<5)
	// Flags (5.2.9, Fixed ACPI Description Table Fixed Feature Flags):
	// WBINVD (0), PWR_BUTTON (4: no fixed power button), SLP_BUTTON (5),
	// RESET_REG_SUP (10), HW_REDUCED_ACPI (20).
	flags := uint32(1<<0 | 1<<4 | 1<<5 | 1<<20)
	if cfg.ResetPort != 0 {
		flags |= 1 << 10
		copy(at(116), gas(gasSystemIO, 8, gasAccessByte, uint64(cfg.ResetPort)))
		at(128)[0] = cfg.ResetValue
	}
	le.PutUint32(at(112), flags)
	at(131)[0] = 5                  // FADT minor version (ACPI 6.5)
	le.PutUint64(at(140), dsdtAddr) // X_DSDT
	if cfg.SleepPort != 0 {
		copy(at(244), gas(gasSystemIO, 8, gasAccessByte, uint64(cfg.SleepPort)))   // SLEEP_CONTROL_REG
		copy(at(256), gas(gasSystemIO, 8, gasAccessByte, uint64(cfg.SleepPort)+1)) // SLEEP_STATUS_REG
	}
	copy(at(268), "HYPERDGO") // Hypervisor Vendor Identity
	return sdt("FACP", 6, body)
}

// madt builds the Multiple APIC Description Table (ACPI 6.5, 5.2.12): one
// enabled Processor Local APIC per vCPU (APIC ID = vCPU index), the I/O
// APIC at GSI 0, the PC's IRQ0 → GSI 2 override and LINT1 as NMI.
func madt(cpus int) []byte {
	body := make([]byte, 8)
	le.PutUint32(body[0:], LAPICAddr)
	le.PutUint32(body[4:], 1) // PCAT_COMPAT: the 8259 pair exists (KVM's irqchip has it)
	for i := 0; i < cpus; i++ {
		// Processor Local APIC (5.2.12.2): type 0, length 8, UID, APIC ID, flags (enabled).
		body = append(body, 0, 8, byte(i), byte(i), 1, 0, 0, 0)
	}
	// I/O APIC (5.2.12.3): type 1, length 12, id, reserved, address, GSI base.
	ioapic := []byte{1, 12, byte(cpus), 0, 0, 0, 0, 0, 0, 0, 0, 0}
	le.PutUint32(ioapic[4:], IOAPICAddr)
	body = append(body, ioapic...)
	// Interrupt Source Override (5.2.12.5): ISA IRQ 0 (PIT) is GSI 2.
	body = append(body, 2, 10, 0, 0, 2, 0, 0, 0, 0, 0)
	// Local APIC NMI (5.2.12.7): all processors (0xff), flags 0, LINT1.
	body = append(body, 4, 6, 0xff, 0, 0, 1)
	return sdt("APIC", 5, body)
}

// dsdt builds the Differentiated System Description Table: COM1, each
// virtio-mmio device as an "LNRO0005" device (the ACPI id Linux's
// virtio_mmio driver matches), and \_S5 for soft-off.
func dsdt(cfg ACPIConfig) ([]byte, error) {
	var devs [][]byte
	if cfg.Serial {
		devs = append(devs, amlDevice("COM1",
			amlName("_HID", append([]byte{amlDWordPrefix}, le.AppendUint32(nil, eisaID("PNP0501"))...)),
			amlName("_UID", amlInteger(0)),
			amlName("_CRS", resourceTemplate(resIO(0x3f8, 8), resIRQNoFlags(4))),
		))
	}
	if len(cfg.Devices) > 0x100 {
		return nil, fmt.Errorf("guest: %d virtio devices, at most 256 (names VR00-VRFF)", len(cfg.Devices))
	}
	for i, d := range cfg.Devices {
		if d.Base > 0xffffffff || d.Size > 0xffffffff || d.Base+d.Size > 1<<32 {
			return nil, fmt.Errorf("guest: virtio device %d at %#x+%#x is not below 4 GiB", i, d.Base, d.Size)
		}
		if d.GSI >= IOAPICPins {
			return nil, fmt.Errorf("guest: virtio device %d uses GSI %d, the I/O APIC has %d pins", i, d.GSI, IOAPICPins)
		}
		switch {
		case d.GSI == 0 || d.GSI == 2:
			return nil, fmt.Errorf("guest: virtio device %d uses GSI %d, the PIT's", i, d.GSI)
		case d.GSI == 4 && cfg.Serial:
			return nil, fmt.Errorf("guest: virtio device %d uses GSI 4, COM1's", i)
		}
		devs = append(devs, amlDevice(fmt.Sprintf("VR%02X", i),
			amlName("_HID", amlString("LNRO0005")),
			amlName("_UID", amlInteger(uint64(i))),
			amlName("_CCA", amlInteger(1)), // cache coherent DMA
			amlName("_CRS", resourceTemplate(
				resMemory32Fixed(uint32(d.Base), uint32(d.Size), true),
				resExtendedIRQ(d.GSI, !d.Level),
			)),
		))
	}
	body := amlScope("\\_SB", devs...)
	// \_S5: SLP_TYPa, SLP_TYPb (7.4.2 "\_Sx (System States)"); with
	// hardware-reduced ACPI the kernel writes SLP_TYPa to the sleep
	// control register (4.8, "Sleep Control and Status Registers").
	body = append(body, amlName("\\_S5", amlPackage(5, 5, 0, 0))...)
	return sdt("DSDT", 2, body), nil
}

// rsdp builds the Root System Description Pointer, revision 2 (ACPI 6.5,
// 5.2.5.3): 36 bytes with both checksums.
func rsdp(xsdtAddr uint64) []byte {
	b := make([]byte, 36)
	copy(b[0:8], "RSD PTR ")
	copy(b[9:15], oemID)
	b[15] = 2
	le.PutUint32(b[20:], 36)
	le.PutUint64(b[24:], xsdtAddr)
	b[8] = checksum(b[:20])
	b[32] = checksum(b)
	return b
}

// WriteACPI writes RSDP, XSDT, FADT, MADT and DSDT into mem starting at
// ACPIStart and returns the RSDP's address.
func WriteACPI(mem []byte, cfg ACPIConfig) (uint64, error) {
	if cfg.CPUs < 1 || cfg.CPUs > 255 {
		return 0, fmt.Errorf("guest: %d vCPUs; 1 to 255 are supported", cfg.CPUs)
	}
	if uint64(len(mem)) < BIOSEnd {
		return 0, fmt.Errorf("guest: %d bytes of memory cannot hold the ACPI tables", len(mem))
	}
	clear(mem[ACPIStart:ACPIEnd])
	d, err := dsdt(cfg)
	if err != nil {
		return 0, err
	}
	addr := uint64(ACPIStart)
	put := func(t []byte) (uint64, error) {
		a := (addr + 15) &^ 15
		if a+uint64(len(t)) > ACPIEnd {
			return 0, fmt.Errorf("guest: ACPI tables exceed %#x-%#x", ACPIStart, ACPIEnd)
		}
		copy(mem[a:], t)
		addr = a + uint64(len(t))
		return a, nil
	}
	rsdpAddr, _ := put(make([]byte, 36)) // placeholder, written last
	dsdtAddr, err := put(d)
	if err != nil {
		return 0, err
	}
	fadtAddr, err := put(fadt(cfg, dsdtAddr))
	if err != nil {
		return 0, err
	}
	madtAddr, err := put(madt(cfg.CPUs))
	if err != nil {
		return 0, err
	}
	xsdtBody := le.AppendUint64(le.AppendUint64(nil, fadtAddr), madtAddr)
	xsdtAddr, err := put(sdt("XSDT", 1, xsdtBody))
	if err != nil {
		return 0, err
	}
	copy(mem[rsdpAddr:], rsdp(xsdtAddr))
	return rsdpAddr, nil
}
