package virtio

import (
	"testing"
	"time"
)

func TestEventFDInterruptAndNotify(t *testing.T) {
	irq, err := NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer irq.Close()
	notify, err := NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	if irq.FD() < 0 || notify.FD() == irq.FD() {
		t.Fatalf("fds %d %d", irq.FD(), notify.FD())
	}
	mem := newTestMemory()
	tr, _ := NewRngMMIO(mem, irq)
	d := newDriver(t, mem, tr, nil)
	d.negotiate(0, 16)
	done := make(chan struct{})
	go func() { tr.ServeNotify(notify, 0); close(done) }()
	d.post(0, false, wseg(16))
	if err := notify.Trigger(); err != nil { // what KVM does on a QueueNotify write
		t.Fatal(err)
	}
	if n, err := irq.Wait(); err != nil || n != 1 {
		t.Fatalf("interrupt eventfd: %d, %v", n, err)
	}
	if u := d.takeUsed(0); len(u) != 1 || u[0].len != 16 {
		t.Fatalf("used %v", u)
	}
	notify.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeNotify did not return after Close")
	}
	if tr.TriggerError() != nil {
		t.Fatal(tr.TriggerError())
	}
}
