package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/kvm"
	"github.com/hyperhq/hyperd-go/virtio"
)

// eventfdIRQ is a virtio.Interrupt backed by an eventfd registered with
// KVM_IRQFD: a write raises the device's GSI (edge) without a vCPU exit.
type eventfdIRQ struct{ fd int }

func (e eventfdIRQ) Trigger() error {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	_, err := unix.Write(e.fd, one[:])
	return err
}

// virtioSlot is one attached virtio-mmio device with its eventfds.
type virtioSlot struct {
	mmio    *virtio.MMIO
	dev     virtio.Device
	irqFD   int
	notifFD []int
	base    uint64
}

// queueNotifyOffset is the QueueNotify register (virtio 1.2, 4.2.2).
const queueNotifyOffset = 0x50

// attachVirtio puts dev behind a virtio-mmio transport at slot i: an irqfd
// on its GSI and one ioeventfd per queue on QueueNotify (matched by queue
// index), serviced by a goroutine that calls NotifyQueue.
func (m *Machine) attachVirtio(i int, dev virtio.Device) (*virtioSlot, error) {
	base := uint64(MMIOBase + i*MMIOStride)
	s := &virtioSlot{dev: dev, base: base, irqFD: -1}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("vmm: eventfd: %w", err)
	}
	s.irqFD = fd
	if err := m.vm.IRQFD(fd, GSI(i), -1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	s.mmio = virtio.NewMMIO(dev, m.vmem, eventfdIRQ{fd})
	for q := range s.mmio.NumQueues() {
		nfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			s.close(m.vm)
			return nil, fmt.Errorf("vmm: eventfd: %w", err)
		}
		s.notifFD = append(s.notifFD, nfd)
		match := uint64(q)
		if err := m.vm.AddIOEventFD(kvm.IOEventFD{FD: nfd, Addr: base + queueNotifyOffset, Len: 4, Datamatch: &match}); err != nil {
			s.close(m.vm)
			return nil, err
		}
		m.notifyWG.Add(1)
		go m.notifyLoop(s.mmio, q, nfd)
	}
	if err := m.bus.addMMIO(base, MMIOSize, s.mmio); err != nil {
		s.close(m.vm)
		return nil, err
	}
	return s, nil
}

// notifyLoop turns ioeventfd signals into NotifyQueue calls until the fd
// is closed.
func (m *Machine) notifyLoop(t *virtio.MMIO, q, fd int) {
	defer m.notifyWG.Done()
	var buf [8]byte
	for {
		_, err := unix.Read(fd, buf[:])
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return
		}
		if m.stopping.Load() {
			return
		}
		t.NotifyQueue(q)
	}
}

func (s *virtioSlot) close(vm *kvm.VM) {
	if s.mmio != nil {
		s.mmio.Close()
	}
	for q, fd := range s.notifFD {
		match := uint64(q)
		vm.RemoveIOEventFD(kvm.IOEventFD{FD: fd, Addr: s.base + queueNotifyOffset, Len: 4, Datamatch: &match})
		// Wake the notify goroutine: it sees the machine stopping.
		var one [8]byte
		binary.LittleEndian.PutUint64(one[:], 1)
		unix.Write(fd, one[:])
	}
	if c, ok := s.dev.(io.Closer); ok {
		c.Close()
	}
}

// closeFDs closes the eventfds once no goroutine reads them.
func (s *virtioSlot) closeFDs() {
	for _, fd := range s.notifFD {
		unix.Close(fd)
	}
	if s.irqFD >= 0 {
		unix.Close(s.irqFD)
	}
}

// ConfigChanged raises a configuration change interrupt for dev, one of
// the machine's devices: a running VM's disk slot given its backing
// (virtio.Blk.AttachFile; hyperd vm run's control socket).
func (m *Machine) ConfigChanged(dev virtio.Device) error {
	for _, s := range m.slots {
		if s.dev == dev {
			s.mmio.ConfigChanged()
			return nil
		}
	}
	return errors.New("vmm: ConfigChanged: not a device of this machine")
}
