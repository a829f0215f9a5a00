package virtio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestConsole(t *testing.T) {
	for _, c := range []struct {
		name     string
		indirect bool
		segs     []seg
		want     string
	}{
		{"one buffer", false, []seg{rstr("hello\n")}, "hello\n"},
		{"three buffers", false, []seg{rstr("a"), rstr(""), rstr("bc")}, "abc"},
		{"indirect", true, []seg{rstr("in"), rstr("direct")}, "indirect"},
		{"writable ignored", false, []seg{rstr("x"), wseg(4)}, "x"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := newTestMemory()
			irq := &countIRQ{}
			out := &syncBuf{}
			tr, _ := NewConsoleMMIO(mem, irq, out)
			d := newDriver(t, mem, tr, irq)
			d.negotiate(ConsoleFEmergWrite, 16)
			ch := d.post(consoleTxQ, c.indirect, c.segs...)
			d.kick(consoleTxQ)
			u := d.takeUsed(consoleTxQ)
			if len(u) != 1 || u[0].id != uint32(ch.head) || u[0].len != 0 {
				t.Fatalf("used %v", u)
			}
			if out.String() != c.want {
				t.Fatalf("output %q, want %q", out.String(), c.want)
			}
			if irq.n.Load() != 1 {
				t.Fatalf("%d interrupts", irq.n.Load())
			}
		})
	}
}

func TestConsoleInputAndConfig(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	out := &syncBuf{}
	tr, con := NewConsoleMMIO(mem, irq, out)
	if n := con.Input([]byte("early")); n != 0 {
		t.Fatalf("input before DRIVER_OK accepted %d bytes", n)
	}
	d := newDriver(t, mem, tr, irq)
	d.negotiate(ConsoleFEmergWrite, 16)
	var cfg [4]byte
	tr.Read(RegConfig+4, cfg[:])
	if binary.LittleEndian.Uint32(cfg[:]) != 1 {
		t.Errorf("max_nr_ports %x", cfg)
	}
	tr.Write(RegConfig+consoleEmergWrOffs, []byte{'!', 0, 0, 0})
	if out.String() != "!" {
		t.Errorf("emerg_wr output %q", out.String())
	}
	b1 := d.post(consoleRxQ, false, wseg(4))
	b2 := d.post(consoleRxQ, false, wseg(4))
	if n := con.Input([]byte("0123456789")); n != 8 {
		t.Fatalf("input delivered %d bytes, want 8", n)
	}
	u := d.takeUsed(consoleRxQ)
	if len(u) != 2 || u[0].len != 4 || u[1].len != 4 {
		t.Fatalf("used %v", u)
	}
	if got := string(d.bytesAt(b1, 0, 4)) + string(d.bytesAt(b2, 0, 4)); got != "01234567" {
		t.Fatalf("guest received %q", got)
	}
}

// TestConsoleServeInput feeds a reader into the receive queue: input that
// arrives before DRIVER_OK or before buffers are posted waits for them.
func TestConsoleServeInput(t *testing.T) {
	mem := newTestMemory()
	irq := &countIRQ{}
	tr, con := NewConsoleMMIO(mem, irq, &syncBuf{})
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- con.ServeInput(pr) }()
	go pw.Write([]byte("hello world"))

	d := newDriver(t, mem, tr, irq)
	d.negotiate(ConsoleFEmergWrite, 16)
	b1 := d.post(consoleRxQ, false, wseg(4))
	d.kick(consoleRxQ)
	if u := d.waitUsed(consoleRxQ, 1, 5*time.Second); u[0].len != 4 || string(d.bytesAt(b1, 0, 4)) != "hell" {
		t.Fatalf("first buffer: used %v, %q", u, d.bytesAt(b1, 0, 4))
	}
	b2 := d.post(consoleRxQ, false, wseg(16))
	d.kick(consoleRxQ)
	if u := d.waitUsed(consoleRxQ, 1, 5*time.Second); u[0].len != 7 || string(d.bytesAt(b2, 0, 7)) != "o world" {
		t.Fatalf("second buffer: used %v, %q", u, d.bytesAt(b2, 0, 7))
	}
	pw.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeInput at EOF: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeInput did not return at EOF")
	}

	// Input waiting for buffers ends with Close.
	pr2, pw2 := io.Pipe()
	go func() { done <- con.ServeInput(pr2) }()
	pw2.Write([]byte("stuck")) // read by ServeInput, no buffer posted
	con.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrConsoleClosed) {
			t.Fatalf("ServeInput after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeInput did not return after Close")
	}
}
