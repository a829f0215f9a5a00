package virtio

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// EventFD is a Linux eventfd, the object KVM_IRQFD and KVM_IOEVENTFD take.
// As an Interrupt, Trigger adds 1 to it (KVM then injects the GSI it was
// registered for). As a notification source, Wait blocks until the
// kernel (an ioeventfd match) or Trigger signals it. It uses the Go
// runtime poller, so Close wakes a blocked Wait.
type EventFD struct {
	f  *os.File
	fd int
}

// NewEventFD creates a non-blocking, close-on-exec eventfd.
func NewEventFD() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("virtio: eventfd: %w", err)
	}
	return &EventFD{f: os.NewFile(uintptr(fd), "eventfd"), fd: fd}, nil
}

// FD is the descriptor to pass to KVM_IRQFD / KVM_IOEVENTFD. It stays
// valid until Close.
func (e *EventFD) FD() int { return e.fd }

// Trigger signals the eventfd.
func (e *EventFD) Trigger() error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	_, err := e.f.Write(b[:])
	return err
}

// Wait blocks until the eventfd is signalled and returns (and resets) its
// counter.
func (e *EventFD) Wait() (uint64, error) {
	var b [8]byte
	if _, err := e.f.Read(b[:]); err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

// Close closes the eventfd, waking any Wait.
func (e *EventFD) Close() error { return e.f.Close() }

// ServeNotify calls t.NotifyQueue(q) each time e is signalled, until e is
// closed. The VMM runs it on a goroutine per queue for an ioeventfd
// registered at the device's base + RegQueueNotify with datamatch q.
func (t *MMIO) ServeNotify(e *EventFD, q int) {
	for {
		if _, err := e.Wait(); err != nil {
			return
		}
		t.NotifyQueue(q)
	}
}
