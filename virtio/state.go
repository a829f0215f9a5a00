// This file owns snapshots of the virtio-mmio transport and its device:
// pausing and resuming a device (no guest memory or queue access while
// paused, notifications kept for later), the saved state (MMIOState,
// QueueState), saving it, and restoring it on a new transport in a new
// process, checked as untrusted input. The devices' own pause and restore
// work is in their files (vsock_state.go, net_slot.go, console.go).

package virtio

import (
	"bytes"
	"errors"
	"fmt"
)

// MMIOStateVersion is the version of MMIOState this package writes and
// the only one RestoreState accepts.
const MMIOStateVersion = 1

// maxConfigSize is the device configuration space a virtio-mmio window
// exposes (§4.2.2: Config starts at 0x100 in a 0x200 window).
const maxConfigSize = MMIOWindowSize - RegConfig

// QueueState is a virtqueue's registers (§4.2.2: QueueNum, QueueReady,
// QueueDesc, QueueDriver, QueueDevice) and, for an active queue, the
// device's ring positions: the next available ring slot it consumes and
// the next used ring slot it fills (§2.7.6, §2.7.8).
type QueueState struct {
	Num                  uint16
	Ready                bool
	Desc, Driver, Device uint64
	LastAvail, UsedIdx   uint16
}

// MMIOState is the saved state of one virtio-mmio transport and its
// device. It encodes as JSON. Guest memory is not part of it: it must be
// restored alongside (the rings live there).
type MMIOState struct {
	Version  int
	DeviceID uint32
	// Status is the device status (§2.1); the other registers are the
	// transport's (§4.2.2). ISR is InterruptStatus not yet acknowledged.
	Status, DevFeatSel, DrvFeatSel, QueueSel, Generation, ISR uint32
	DrvFeatures                                               uint64
	Queues                                                    []QueueState
	// Config is the device configuration space as the guest last could
	// read it, trailing zero bytes dropped; RestoreState compares it
	// with the new device's to tell the guest about changes.
	Config []byte
	// Device is the device's own state, nil when it has none. Only vsock
	// has any (the next host port it hands out, see vsock_state.go): what
	// the others hold across a pause is either in the queues (net's held
	// receive chains are given back by rewinding LastAvail) or per
	// process (backends).
	Device []byte
}

// pauser is implemented by devices that touch guest memory or their queues
// from goroutines of their own (backends): pause stops them (returning
// once none can), resume lets them go on. Notifications are the
// transport's business and never reach a paused device.
type pauser interface {
	pause()
	resume()
}

// chainHolder is implemented by devices that keep chains popped from a
// queue but not yet used across a pause (net's receive side keeps the
// chains of a frame it is waiting to complete). SaveState saves LastAvail
// that many slots earlier, so the restored device pops them again.
type chainHolder interface {
	heldChains(q int) uint16
}

// deviceStater is implemented by devices with state of their own that a
// restored device must continue from (MMIOState.Device): saveDevice runs
// while paused, checkDevice validates saved bytes (untrusted), loadDevice
// loads checked bytes before activation.
type deviceStater interface {
	saveDevice() []byte
	checkDevice(b []byte) error
	loadDevice(b []byte)
}

// restorer is implemented by devices with work to do when they are
// restored from a snapshot: restoring is called before they are activated
// with the saved queues (vsock arms its transport reset event).
type restorer interface {
	restoring()
}

// Pause stops the device touching guest memory or its queues: once it
// returns, no notification (NotifyQueue, a QueueNotify write) reaches the
// device and none of its backend goroutines (vsock host connections, net
// receive, console input) fills a queue, until Resume or Close.
// Notifications arriving meanwhile are recorded and served by Resume; in
// a snapshot, RestoreState serves them by re-scanning every queue.
// Register accesses still work; the VMM stops its vCPUs first. Pause is
// idempotent.
func (t *MMIO) Pause() {
	t.opMu.Lock()
	defer t.opMu.Unlock()
	t.pauseMu.Lock() // waits for notifications being delivered
	was := t.paused
	t.paused = true
	t.pauseMu.Unlock()
	if p, ok := t.dev.(pauser); ok && !was {
		p.pause()
	}
}

// Resume undoes Pause and serves the notifications that arrived while
// paused. It does nothing on a transport that is not paused.
func (t *MMIO) Resume() {
	t.opMu.Lock()
	defer t.opMu.Unlock()
	t.pauseMu.RLock()
	paused := t.paused
	t.pauseMu.RUnlock()
	if !paused {
		return
	}
	// The device first, so a notification is never delivered to a
	// device that is still paused.
	if p, ok := t.dev.(pauser); ok {
		p.resume()
	}
	t.pauseMu.Lock()
	t.paused = false
	t.pauseMu.Unlock()
	for q := range t.notified {
		if t.notified[q].Swap(false) {
			t.NotifyQueue(q)
		}
	}
}

// Paused reports whether the transport is paused.
func (t *MMIO) Paused() bool {
	t.pauseMu.RLock()
	defer t.pauseMu.RUnlock()
	return t.paused
}

// SaveState returns the transport's and device's state. The transport
// must be paused; a device that needs a reset (DEVICE_NEEDS_RESET) is not
// saved. Guest memory is to be saved after the pause as well.
func (t *MMIO) SaveState() (MMIOState, error) {
	t.opMu.Lock()
	defer t.opMu.Unlock()
	if !t.Paused() {
		return MMIOState{}, errors.New("virtio-mmio: SaveState on a running device (Pause first)")
	}
	if err := t.Err(); err != nil {
		return MMIOState{}, fmt.Errorf("virtio-mmio: device %d needs a reset: %w", t.dev.DeviceID(), err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := MMIOState{
		Version: MMIOStateVersion, DeviceID: t.dev.DeviceID(),
		Status: t.status, DevFeatSel: t.devFeatSel, DrvFeatSel: t.drvFeatSel, QueueSel: t.queueSel,
		Generation: t.generation, ISR: t.isr.Load(), DrvFeatures: t.drvFeatures,
		Queues: make([]QueueState, len(t.queues)),
		Config: t.configBytes(),
	}
	if ds, ok := t.dev.(deviceStater); ok {
		s.Device = ds.saveDevice()
	}
	holder, _ := t.dev.(chainHolder)
	for i, r := range t.queues {
		qs := QueueState{Num: r.num, Ready: r.ready, Desc: r.desc, Driver: r.driver, Device: r.devc}
		if i < len(t.qs) && t.qs[i] != nil {
			q := t.qs[i]
			qs.LastAvail, qs.UsedIdx = q.lastAvail, q.usedIdx
			if holder != nil {
				qs.LastAvail -= holder.heldChains(i)
			}
		}
		s.Queues[i] = qs
	}
	if err := t.checkState(&s); err != nil {
		return MMIOState{}, fmt.Errorf("virtio-mmio: device %d: cannot save: %w", s.DeviceID, err)
	}
	return s, nil
}

// configBytes reads the whole configuration space, trailing zeros dropped.
func (t *MMIO) configBytes() []byte {
	cfg := make([]byte, maxConfigSize)
	t.dev.ReadConfig(0, cfg)
	cfg = bytes.TrimRight(cfg, "\x00")
	if len(cfg) == 0 {
		return nil
	}
	return cfg
}

// knownStatus are the device status bits a saved state may hold (§2.1).
const knownStatus = StatusAcknowledge | StatusDriver | StatusDriverOK | StatusFeaturesOK | StatusFailed

// checkState validates s against this transport's device without looking
// at guest memory (activation does that): version, device type, status
// bits and their order (§3.1.1), negotiated features a subset of those
// offered (§2.2) with VERSION_1, ISR bits, queue count, ready queues'
// sizes (powers of 2 within QueueNumMax, §2.7) and ring positions only on
// active queues.
func (t *MMIO) checkState(s *MMIOState) error {
	if s.Version != MMIOStateVersion {
		return fmt.Errorf("state version %d, want %d", s.Version, MMIOStateVersion)
	}
	if id := t.dev.DeviceID(); s.DeviceID != id {
		return fmt.Errorf("state of device type %d, this device is type %d", s.DeviceID, id)
	}
	if s.Status&^knownStatus != 0 {
		return fmt.Errorf("status %#x has bits outside %#x", s.Status, knownStatus)
	}
	if s.Status&StatusDriverOK != 0 && s.Status&StatusFeaturesOK == 0 {
		return fmt.Errorf("status %#x: DRIVER_OK without FEATURES_OK", s.Status)
	}
	if s.Status&StatusFeaturesOK != 0 {
		if extra := s.DrvFeatures &^ t.offeredFeatures(); extra != 0 {
			return fmt.Errorf("negotiated features %#x include %#x this device does not offer (%#x)", s.DrvFeatures, extra, t.offeredFeatures())
		}
		if s.DrvFeatures&FeatureVersion1 == 0 {
			return fmt.Errorf("negotiated features %#x lack VIRTIO_F_VERSION_1", s.DrvFeatures)
		}
	}
	if s.ISR&^(InterruptUsedBuffer|InterruptConfigChange) != 0 {
		return fmt.Errorf("interrupt status %#x", s.ISR)
	}
	maxes := t.dev.QueueMaxSizes()
	if len(s.Queues) != len(maxes) {
		return fmt.Errorf("%d queues, the device has %d", len(s.Queues), len(maxes))
	}
	for i, q := range s.Queues {
		if q.Ready {
			n := q.Num
			if n == 0 || n&(n-1) != 0 || n > maxes[i] {
				return fmt.Errorf("queue %d: size %d is not a power of 2 within its maximum %d", i, n, maxes[i])
			}
		}
		active := q.Ready && s.Status&StatusDriverOK != 0
		if !active && (q.LastAvail != 0 || q.UsedIdx != 0) {
			return fmt.Errorf("queue %d: ring positions %d/%d on a queue that is not active", i, q.LastAvail, q.UsedIdx)
		}
		if q.LastAvail != q.UsedIdx {
			return fmt.Errorf("queue %d: last avail %d != used idx %d: chains in flight", i, q.LastAvail, q.UsedIdx)
		}
	}
	if len(s.Config) > maxConfigSize {
		return fmt.Errorf("configuration space of %d bytes (at most %d)", len(s.Config), maxConfigSize)
	}
	if ds, ok := t.dev.(deviceStater); ok {
		if err := ds.checkDevice(s.Device); err != nil {
			return fmt.Errorf("device state: %w", err)
		}
	} else if len(s.Device) != 0 {
		return fmt.Errorf("%d bytes of device state; device type %d has none", len(s.Device), s.DeviceID)
	}
	return nil
}

// RestoreState loads s, saved by SaveState in another process, into this
// new transport (NewMMIO over a device freshly created with the restored
// VM's backing) before any vCPU runs. It checks s (checkState), restores
// the registers and, when the saved status has DRIVER_OK, activates the
// device with the saved queues at their saved ring positions, after
// checking their layout (Queue.Validate) and that guest memory holds the
// rings as saved. Then, in this order: if the configuration space differs
// from s.Config (a slot backed with a disk of another size, a new vsock
// CID), ConfigGeneration is bumped and a configuration change interrupt
// raised (§2.5.1, §4.2.2) so the driver re-reads it; else an
// unacknowledged saved InterruptStatus is raised again (spurious
// interrupts are harmless, lost ones are not); finally every active queue
// is notified once, serving what the driver made available while the
// saved device was paused. Devices do their own restore work (vsock's
// transport reset event). On error the transport is left reset.
func (t *MMIO) RestoreState(s MMIOState) error {
	t.opMu.Lock()
	defer t.opMu.Unlock()
	id := t.dev.DeviceID()
	if err := t.checkState(&s); err != nil {
		return fmt.Errorf("virtio-mmio: restoring device %d: %w", id, err)
	}
	t.mu.Lock()
	if t.status != 0 || t.active.Load() || t.Err() != nil {
		t.mu.Unlock()
		return fmt.Errorf("virtio-mmio: restoring device %d: the transport is in use (status %#x)", id, t.status)
	}
	t.status, t.devFeatSel, t.drvFeatSel, t.queueSel = s.Status, s.DevFeatSel, s.DrvFeatSel, s.QueueSel
	t.drvFeatures, t.generation = s.DrvFeatures, s.Generation
	for i, q := range s.Queues {
		t.queues[i] = queueRegs{num: q.Num, ready: q.Ready, desc: q.Desc, driver: q.Driver, devc: q.Device}
	}
	// ISR before activation: an activated device's goroutines (console
	// input, net receive) may raise interrupts at once, bits a later
	// store would lose.
	t.isr.Store(s.ISR)
	if ds, ok := t.dev.(deviceStater); ok {
		ds.loadDevice(s.Device) // checked by checkState
	}
	active := s.Status&StatusDriverOK != 0
	if active {
		if r, ok := t.dev.(restorer); ok {
			r.restoring()
		}
		if err := t.activate(s.Queues); err != nil {
			t.reset()
			t.generation = 0
			t.mu.Unlock()
			return fmt.Errorf("virtio-mmio: restoring device %d: %w", id, err)
		}
	}
	cfg := t.configBytes()
	t.mu.Unlock()

	if !bytes.Equal(cfg, bytes.TrimRight(s.Config, "\x00")) {
		t.ConfigChanged()
	} else if s.ISR != 0 {
		t.raise(0)
	}
	if active {
		for q := range t.queues {
			if s.Queues[q].Ready {
				t.NotifyQueue(q)
			}
		}
	}
	return nil
}
