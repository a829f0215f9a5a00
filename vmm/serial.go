package vmm

import (
	"fmt"
	"io"
	"sync"
)

// UART is a 16550A-compatible serial port (the PC's COM1: I/O ports
// 0x3f8-0x3ff, ISA IRQ 4). It is what the guest kernel's early console and
// "console=ttyS0" write to; output goes to Out, input comes from Input.
// Register model: National Semiconductor PC16550D data sheet, "Register
// Description" (RBR/THR, IER, IIR/FCR, LCR, MCR, LSR, MSR, SCR; DLL/DLM when
// LCR.DLAB is set).
type UART struct {
	mu   sync.Mutex
	out  io.Writer
	irq  func(level bool) // asserts/deasserts the interrupt line
	ier  uint8
	lcr  uint8
	mcr  uint8
	scr  uint8
	fcr  uint8
	dll  uint8
	dlm  uint8
	rx   []byte // received bytes not yet read by the guest
	thri bool   // a THR-empty interrupt is pending (cleared by reading IIR or writing THR)
	line bool   // current level of the interrupt line
}

// Register offsets from the base port.
const (
	uartRBR = 0 // receive buffer (read), THR transmit holding (write), DLL (DLAB)
	uartIER = 1 // interrupt enable, DLM (DLAB)
	uartIIR = 2 // interrupt identification (read), FCR FIFO control (write)
	uartLCR = 3
	uartMCR = 4
	uartLSR = 5
	uartMSR = 6
	uartSCR = 7

	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // transmit holding register empty

	iirNoInt = 0x01
	iirTHRI  = 0x02
	iirRDI   = 0x04
	iirFIFO  = 0xc0 // FIFOs enabled (16550A)

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10

	lsrDR   = 0x01 // data ready
	lsrTHRE = 0x20 // THR empty
	lsrTEMT = 0x40 // transmitter empty

	msrCTS = 0x10
	msrDSR = 0x20
	msrRI  = 0x40
	msrDCD = 0x80
)

// COM1 is the first PC serial port.
const (
	COM1Base = 0x3f8
	COM1IRQ  = 4
)

// NewUART returns a UART writing transmitted bytes to out and signalling
// its interrupt through irq (which may be nil for a polled console).
func NewUART(out io.Writer, irq func(level bool)) *UART {
	return &UART{out: out, irq: irq}
}

// Input queues bytes for the guest to read.
func (u *UART) Input(b []byte) {
	u.mu.Lock()
	u.rx = append(u.rx, b...)
	u.update()
	u.mu.Unlock()
}

// In handles a guest read of the register at offset off (0..7).
func (u *UART) In(off uint16) uint8 {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch off {
	case uartRBR:
		if u.lcr&lcrDLAB != 0 {
			return u.dll
		}
		if len(u.rx) == 0 {
			return 0
		}
		b := u.rx[0]
		u.rx = u.rx[1:]
		u.update()
		return b
	case uartIER:
		if u.lcr&lcrDLAB != 0 {
			return u.dlm
		}
		return u.ier
	case uartIIR:
		v := u.iir()
		if v&0x0f == iirTHRI {
			u.thri = false // reading IIR acknowledges THR empty
			u.update()
		}
		if u.fcr&1 != 0 {
			v |= iirFIFO
		}
		return v
	case uartLCR:
		return u.lcr
	case uartMCR:
		return u.mcr
	case uartLSR:
		v := uint8(lsrTHRE | lsrTEMT) // we transmit instantly
		if len(u.rx) > 0 {
			v |= lsrDR
		}
		return v
	case uartMSR:
		if u.mcr&mcrLoop != 0 {
			// Loopback: modem outputs feed the modem status inputs.
			var v uint8
			if u.mcr&mcrRTS != 0 {
				v |= msrCTS
			}
			if u.mcr&mcrDTR != 0 {
				v |= msrDSR
			}
			if u.mcr&mcrOUT1 != 0 {
				v |= msrRI
			}
			if u.mcr&mcrOUT2 != 0 {
				v |= msrDCD
			}
			return v
		}
		return msrDCD | msrDSR | msrCTS
	case uartSCR:
		return u.scr
	}
	return 0xff
}

// Out handles a guest write of v to the register at offset off (0..7).
func (u *UART) Out(off uint16, v uint8) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch off {
	case uartRBR:
		if u.lcr&lcrDLAB != 0 {
			u.dll = v
			return
		}
		if u.mcr&mcrLoop != 0 {
			u.rx = append(u.rx, v)
		} else if u.out != nil {
			u.out.Write([]byte{v})
		}
		u.thri = true
		u.update()
	case uartIER:
		if u.lcr&lcrDLAB != 0 {
			u.dlm = v
			return
		}
		u.ier = v & 0x0f
		// Enabling THRI with an empty THR raises the interrupt at once.
		u.thri = u.ier&ierTHRI != 0
		u.update()
	case uartIIR:
		u.fcr = v
		if v&0x02 != 0 { // clear receive FIFO
			u.rx = nil
		}
		u.update()
	case uartLCR:
		u.lcr = v
	case uartMCR:
		u.mcr = v & 0x1f
		u.update()
	case uartSCR:
		u.scr = v
	}
}

// iir computes the highest-priority pending interrupt (caller holds mu).
func (u *UART) iir() uint8 {
	switch {
	case u.ier&ierRDI != 0 && len(u.rx) > 0:
		return iirRDI
	case u.ier&ierTHRI != 0 && u.thri:
		return iirTHRI
	}
	return iirNoInt
}

// update drives the interrupt line from the pending state (caller holds
// mu). On a PC the UART's line reaches the PIC/IOAPIC only when MCR.OUT2
// is set.
func (u *UART) update() {
	level := u.iir() != iirNoInt && u.mcr&mcrOUT2 != 0 && u.mcr&mcrLoop == 0
	if level == u.line || u.irq == nil {
		u.line = level
		return
	}
	u.line = level
	u.irq(level)
}

// UARTState is the UART's registers and pending input, for a snapshot.
type UARTState struct {
	IER, LCR, MCR, SCR, FCR, DLL, DLM uint8
	RX                                []byte
	THRI, Line                        bool
}

// State returns the UART's registers.
func (u *UART) State() UARTState {
	u.mu.Lock()
	defer u.mu.Unlock()
	return UARTState{IER: u.ier, LCR: u.lcr, MCR: u.mcr, SCR: u.scr, FCR: u.fcr, DLL: u.dll, DLM: u.dlm,
		RX: append([]byte(nil), u.rx...), THRI: u.thri, Line: u.line}
}

// maxUARTInput bounds the pending input a state may carry.
const maxUARTInput = 4096

// SetState loads registers saved by State (before the guest runs). The
// interrupt line's level is part of the irqchip's saved state, so it is
// taken as it was, not raised again.
func (u *UART) SetState(s UARTState) error {
	if len(s.RX) > maxUARTInput {
		return fmt.Errorf("vmm: UART state with %d bytes of pending input, at most %d", len(s.RX), maxUARTInput)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ier, u.lcr, u.mcr, u.scr, u.fcr, u.dll, u.dlm = s.IER&0x0f, s.LCR, s.MCR&0x1f, s.SCR, s.FCR, s.DLL, s.DLM
	u.rx = append([]byte(nil), s.RX...)
	u.thri, u.line = s.THRI, s.Line
	return nil
}
