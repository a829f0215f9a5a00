package vmm

// Small legacy PC devices a Linux guest touches.

// i8042 is just enough of the PS/2 keyboard controller (ports 0x60 and
// 0x64) for the kernel's "reboot=k" path: a write of 0xFE (pulse the reset
// line) to the command port resets the machine. Reads report an empty
// controller so the kernel's waits for the input buffer finish at once.
type i8042 struct {
	reset func()
}

const (
	i8042Base      = 0x60
	i8042Size      = 5 // 0x60..0x64
	i8042CmdOffset = 4 // port 0x64
	i8042CmdReset  = 0xfe
)

func (k *i8042) PIORead(port uint16, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

func (k *i8042) PIOWrite(port uint16, data []byte) {
	if port == i8042CmdOffset && len(data) == 1 && data[0] == i8042CmdReset {
		k.reset()
	}
}

// sleepControl is the ACPI hardware-reduced sleep control register (ACPI
// 6.5, 4.8.3.7 "Sleep Control Register"): the FADT points
// SLEEP_CONTROL_REG at this port; the guest writes SLP_TYPx<<2 | SLP_EN to
// enter a sleep state. The DSDT's \_S5 package gives SLP_TYP 5 for soft-off,
// so a write with SLP_EN and SLP_TYP 5 powers the machine off.
type sleepControl struct {
	poweroff func()
}

const (
	// SleepControlPort is the I/O port of the sleep control and status
	// registers (one byte each, control at +0, status at +1).
	SleepControlPort = 0x3c0
	sleepControlSize = 2
	slpEn            = 1 << 5
	slpTypShift      = 2
	slpTypMask       = 7
	// S5SleepType is the SLP_TYP value the DSDT's \_S5 object declares.
	S5SleepType = 5
)

func (s *sleepControl) PIORead(port uint16, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if port == 1 && len(data) > 0 {
		data[0] = 0x80 // WAK_STS: the wake has completed
	}
}

func (s *sleepControl) PIOWrite(port uint16, data []byte) {
	if port != 0 || len(data) == 0 {
		return
	}
	v := data[0]
	if v&slpEn != 0 && (v>>slpTypShift)&slpTypMask == S5SleepType {
		s.poweroff()
	}
}
