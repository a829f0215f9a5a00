package vmm

import (
	"bytes"
	"testing"
)

type irqRecorder struct{ events []bool }

func (r *irqRecorder) set(level bool) { r.events = append(r.events, level) }

func TestUARTTransmitAndProbe(t *testing.T) {
	var out bytes.Buffer
	var irq irqRecorder
	u := NewUART(&out, irq.set)

	// Linux 8250 autoconfig: scratch register, loopback with RTS|OUT2
	// reflected as CTS|DCD in MSR, FIFO detection through IIR.
	u.Out(uartSCR, 0xa5)
	if got := u.In(uartSCR); got != 0xa5 {
		t.Errorf("scratch = %#x", got)
	}
	u.Out(uartMCR, mcrLoop|0x0a)
	if got := u.In(uartMSR) & 0xf0; got != 0x90 {
		t.Errorf("loopback MSR = %#x, want 0x90", got)
	}
	u.Out(uartRBR, 'L') // looped back, not transmitted
	if got := u.In(uartLSR); got&lsrDR == 0 {
		t.Errorf("loopback byte not received, LSR %#x", got)
	}
	if got := u.In(uartRBR); got != 'L' {
		t.Errorf("loopback read %q", got)
	}
	u.Out(uartMCR, 0)
	u.Out(uartIIR, 0x01) // enable FIFOs
	if got := u.In(uartIIR); got&iirFIFO != iirFIFO {
		t.Errorf("IIR %#x does not report 16550A FIFOs", got)
	}

	// Divisor latch does not transmit.
	u.Out(uartLCR, lcrDLAB)
	u.Out(uartRBR, 1)
	u.Out(uartIER, 0)
	u.Out(uartLCR, 0x03)
	if got := u.In(uartLSR); got&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
		t.Errorf("LSR %#x: transmitter not empty", got)
	}
	for _, b := range []byte("hello\n") {
		u.Out(uartRBR, b)
	}
	if out.String() != "hello\n" {
		t.Errorf("transmitted %q", out.String())
	}
	if len(irq.events) != 0 {
		t.Errorf("interrupts %v without IER/OUT2", irq.events)
	}

	// THR-empty interrupt: raised when enabled with OUT2, acknowledged by
	// reading IIR.
	u.Out(uartMCR, mcrOUT2)
	u.Out(uartIER, ierTHRI)
	if len(irq.events) != 1 || !irq.events[0] {
		t.Fatalf("interrupt events %v, want [true]", irq.events)
	}
	if got := u.In(uartIIR) & 0x0f; got != iirTHRI {
		t.Errorf("IIR = %#x, want THRI", got)
	}
	if len(irq.events) != 2 || irq.events[1] {
		t.Errorf("interrupt not lowered after IIR read: %v", irq.events)
	}

	// Receive interrupt.
	u.Out(uartIER, ierRDI)
	u.Input([]byte("ab"))
	if got := u.In(uartIIR) & 0x0f; got != iirRDI {
		t.Errorf("IIR = %#x, want RDI", got)
	}
	if a, b := u.In(uartRBR), u.In(uartRBR); a != 'a' || b != 'b' {
		t.Errorf("read %q %q", a, b)
	}
	if got := u.In(uartIIR) & 0x0f; got != iirNoInt {
		t.Errorf("IIR = %#x after draining, want no interrupt", got)
	}
	if last := irq.events[len(irq.events)-1]; last {
		t.Errorf("interrupt line still high: %v", irq.events)
	}
}
