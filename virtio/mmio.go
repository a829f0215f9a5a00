package virtio

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

// virtio-mmio register offsets, virtio v1.2 §4.2.2 (table "MMIO Device
// Register Layout"), relative to the device's base address.
const (
	RegMagicValue        = 0x000
	RegVersion           = 0x004
	RegDeviceID          = 0x008
	RegVendorID          = 0x00c
	RegDeviceFeatures    = 0x010
	RegDeviceFeaturesSel = 0x014
	RegDriverFeatures    = 0x020
	RegDriverFeaturesSel = 0x024
	RegQueueSel          = 0x030
	RegQueueNumMax       = 0x034
	RegQueueNum          = 0x038
	RegQueueReady        = 0x044
	RegQueueNotify       = 0x050
	RegInterruptStatus   = 0x060
	RegInterruptACK      = 0x064
	RegStatus            = 0x070
	RegQueueDescLow      = 0x080
	RegQueueDescHigh     = 0x084
	RegQueueDriverLow    = 0x090
	RegQueueDriverHigh   = 0x094
	RegQueueDeviceLow    = 0x0a0
	RegQueueDeviceHigh   = 0x0a4
	RegSHMSel            = 0x0ac
	RegSHMLenLow         = 0x0b0
	RegSHMLenHigh        = 0x0b4
	RegSHMBaseLow        = 0x0b8
	RegSHMBaseHigh       = 0x0bc
	RegConfigGeneration  = 0x0fc
	RegConfig            = 0x100

	// MMIOWindowSize is the size of one device's MMIO window.
	MMIOWindowSize = 0x200

	// MagicValue is "virt" little-endian (§4.2.2).
	MagicValue = 0x74726976
	// MMIOVersion is the non-legacy interface version (§4.2.2).
	MMIOVersion = 2
	// VendorID is reported in the VendorID register ("HYPR").
	VendorID = 0x52505948
)

// Device status bits, §2.1.
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 64
	StatusFailed           = 128
)

// Interrupt status bits, §4.2.2 (InterruptStatus).
const (
	InterruptUsedBuffer   = 1
	InterruptConfigChange = 2
)

// Reserved feature bits, §6.
const (
	FeatureIndirectDesc = 1 << 28 // VIRTIO_F_INDIRECT_DESC
	FeatureEventIdx     = 1 << 29 // VIRTIO_F_EVENT_IDX (never offered)
	FeatureVersion1     = 1 << 32 // VIRTIO_F_VERSION_1
)

// Interrupt raises the device's interrupt line. The VMM backs it with an
// irqfd (KVM_IRQFD) on the device's GSI; tests count calls.
type Interrupt interface {
	Trigger() error
}

// Device is a virtio device model driven by a transport.
type Device interface {
	// DeviceID is the virtio device type (§5).
	DeviceID() uint32
	// Features are the device-type feature bits offered; the transport
	// adds VIRTIO_F_VERSION_1 and VIRTIO_F_INDIRECT_DESC.
	Features() uint64
	// QueueMaxSizes lists each queue's maximum size (powers of 2).
	QueueMaxSizes() []uint16
	// ReadConfig and WriteConfig access the device configuration space;
	// offset is relative to its start and may be anywhere (untrusted).
	ReadConfig(offset uint64, data []byte)
	WriteConfig(offset uint64, data []byte)
	// Activate is called once the driver sets DRIVER_OK, with validated
	// queues (nil for queues the driver did not enable) and the
	// negotiated features. The device owns the queues until Reset.
	Activate(queues []*Queue, features uint64) error
	// Notify is called when the driver notifies queue q. It may run
	// concurrently with other calls; devices serialise internally.
	Notify(q int)
	// Reset stops the device and forgets the queues (§2.4).
	Reset()
}

type queueRegs struct {
	num                uint16
	ready              bool
	desc, driver, devc uint64
}

// MMIO is the virtio-mmio v2 transport (§4.2) for one device. The VMM maps
// it at a 0x200-byte window on its MMIO bus and forwards exits to Read and
// Write; an ioeventfd on QueueNotify may call NotifyQueue directly.
type MMIO struct {
	dev Device
	mem *Memory
	irq Interrupt

	mu          sync.Mutex
	status      uint32
	devFeatSel  uint32
	drvFeatSel  uint32
	drvFeatures uint64
	queueSel    uint32
	queues      []queueRegs
	generation  uint32
	active      atomic.Bool
	isr         atomic.Uint32
	triggerErr  atomic.Pointer[error]
	broken      atomic.Pointer[error] // why DEVICE_NEEDS_RESET is set
	qs          []*Queue              // the device's queues while active (under mu)

	// Pausing (state.go). opMu serialises Pause, Resume, SaveState,
	// RestoreState and Close. NotifyQueue holds pauseMu for reading
	// while it delivers, so Pause (writing) waits for deliveries in
	// flight; while paused, notifications are only recorded in notified.
	opMu     sync.Mutex
	pauseMu  sync.RWMutex
	paused   bool
	notified []atomic.Bool // per queue: notified while paused
}

// NewMMIO returns the MMIO transport for dev over guest memory mem,
// signalling the guest through irq.
func NewMMIO(dev Device, mem *Memory, irq Interrupt) *MMIO {
	n := len(dev.QueueMaxSizes())
	return &MMIO{dev: dev, mem: mem, irq: irq, queues: make([]queueRegs, n), notified: make([]atomic.Bool, n)}
}

// Device returns the device model behind the transport.
func (t *MMIO) Device() Device { return t.dev }

// NumQueues is the number of virtqueues of the device.
func (t *MMIO) NumQueues() int { return len(t.queues) }

func (t *MMIO) offeredFeatures() uint64 {
	return t.dev.Features() | FeatureVersion1 | FeatureIndirectDesc
}

// raise sets interrupt status bits and triggers the interrupt.
func (t *MMIO) raise(bits uint32) {
	t.isr.Or(bits)
	if t.irq != nil {
		if err := t.irq.Trigger(); err != nil {
			t.triggerErr.Store(&err)
		}
	}
}

// TriggerError returns the last error returned by Interrupt.Trigger, if any.
func (t *MMIO) TriggerError() error {
	if p := t.triggerErr.Load(); p != nil {
		return *p
	}
	return nil
}

// needsReset sets DEVICE_NEEDS_RESET and notifies the driver with a
// configuration change interrupt (§2.1.2). It takes no lock, so devices may
// call it (through a broken queue) while holding their own.
func (t *MMIO) needsReset(err error) {
	if t.broken.CompareAndSwap(nil, &err) {
		t.raise(InterruptConfigChange)
	}
}

// Err reports why the device needs a reset (a corrupt queue, a failed
// activation), or nil.
func (t *MMIO) Err() error {
	if p := t.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// InterruptPending reports whether InterruptStatus has bits the driver has
// not acknowledged; a VMM wiring a level-triggered line with a resample
// irqfd re-asserts while this is true.
func (t *MMIO) InterruptPending() bool { return t.isr.Load() != 0 }

// ConfigChanged bumps ConfigGeneration and raises a configuration change
// interrupt (§4.2.2, §2.5.1).
func (t *MMIO) ConfigChanged() {
	t.mu.Lock()
	t.generation++
	t.mu.Unlock()
	t.raise(InterruptConfigChange)
}

// NotifyQueue delivers a driver notification for queue q to the device. It
// is what a QueueNotify write does; the VMM may also call it from an
// ioeventfd registered at QueueNotify. Invalid queues and notifications
// before DRIVER_OK are ignored. While the transport is paused the
// notification is recorded and served by Resume.
func (t *MMIO) NotifyQueue(q int) {
	if q < 0 || q >= len(t.queues) || !t.active.Load() {
		return
	}
	t.pauseMu.RLock()
	defer t.pauseMu.RUnlock()
	if t.paused {
		t.notified[q].Store(true)
		return
	}
	t.dev.Notify(q)
}

// Read handles a guest read of len(data) bytes at offset within the window.
func (t *MMIO) Read(offset uint64, data []byte) {
	clear(data)
	if offset >= RegConfig {
		if offset < MMIOWindowSize {
			t.dev.ReadConfig(offset-RegConfig, data)
		}
		return
	}
	// §4.2.2.2: control registers are accessed 32 bits wide and aligned.
	if len(data) != 4 || offset%4 != 0 {
		return
	}
	binary.LittleEndian.PutUint32(data, t.readReg(offset))
}

func (t *MMIO) readReg(offset uint64) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case RegMagicValue:
		return MagicValue
	case RegVersion:
		return MMIOVersion
	case RegDeviceID:
		return t.dev.DeviceID()
	case RegVendorID:
		return VendorID
	case RegDeviceFeatures:
		if t.devFeatSel > 1 {
			return 0
		}
		return uint32(t.offeredFeatures() >> (32 * t.devFeatSel))
	case RegQueueNumMax:
		if q := t.queueSel; q < uint32(len(t.queues)) {
			return uint32(t.dev.QueueMaxSizes()[q])
		}
		return 0
	case RegQueueReady:
		if q := t.queueSel; q < uint32(len(t.queues)) && t.queues[q].ready {
			return 1
		}
		return 0
	case RegInterruptStatus:
		return t.isr.Load()
	case RegStatus:
		if t.broken.Load() != nil {
			return t.status | StatusDeviceNeedsReset
		}
		return t.status
	case RegSHMLenLow, RegSHMLenHigh:
		return 0xffffffff // no shared memory regions (§4.2.2)
	case RegConfigGeneration:
		return t.generation
	}
	return 0
}

// Write handles a guest write of data at offset within the window.
func (t *MMIO) Write(offset uint64, data []byte) {
	if offset >= RegConfig {
		if offset < MMIOWindowSize {
			t.dev.WriteConfig(offset-RegConfig, data)
		}
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		return
	}
	v := binary.LittleEndian.Uint32(data)
	if offset == RegQueueNotify {
		// Outside the lock: devices may take a while and must not
		// block register access of other vCPUs.
		t.NotifyQueue(int(v & 0xffff))
		return
	}
	t.writeReg(offset, v)
}

func (t *MMIO) writeReg(offset uint64, v uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case RegDeviceFeaturesSel:
		t.devFeatSel = v
	case RegDriverFeaturesSel:
		t.drvFeatSel = v
	case RegDriverFeatures:
		if t.status&StatusFeaturesOK != 0 || t.drvFeatSel > 1 {
			return // features are frozen after FEATURES_OK (§3.1.1)
		}
		sh := 32 * t.drvFeatSel
		t.drvFeatures = t.drvFeatures&^(0xffffffff<<sh) | uint64(v)<<sh
	case RegQueueSel:
		t.queueSel = v
	case RegInterruptACK:
		t.isr.And(^v)
	case RegStatus:
		t.setStatus(v)
	default:
		t.writeQueueReg(offset, v)
	}
}

func (t *MMIO) writeQueueReg(offset uint64, v uint32) {
	if t.queueSel >= uint32(len(t.queues)) || t.status&StatusDriverOK != 0 {
		return
	}
	q := &t.queues[t.queueSel]
	if offset == RegQueueReady {
		q.ready = v&1 != 0
		return
	}
	if q.ready {
		return // §4.2.2: no layout changes while QueueReady is 1
	}
	lo := func(r *uint64) { *r = *r&^0xffffffff | uint64(v) }
	hi := func(r *uint64) { *r = *r&0xffffffff | uint64(v)<<32 }
	switch offset {
	case RegQueueNum:
		q.num = uint16(v)
		if v > 0xffff {
			q.num = 0 // rejected at activation
		}
	case RegQueueDescLow:
		lo(&q.desc)
	case RegQueueDescHigh:
		hi(&q.desc)
	case RegQueueDriverLow:
		lo(&q.driver)
	case RegQueueDriverHigh:
		hi(&q.driver)
	case RegQueueDeviceLow:
		lo(&q.devc)
	case RegQueueDeviceHigh:
		hi(&q.devc)
	}
}

// setStatus implements the device status state machine (§2.1, §3.1.1).
// Called with t.mu held.
func (t *MMIO) setStatus(v uint32) {
	if v == 0 {
		t.reset()
		return
	}
	old := t.status
	if v&^old&StatusFeaturesOK != 0 {
		// §2.2: accept only a subset of what we offered, and
		// VERSION_1 is mandatory for a non-legacy device (§6).
		f := t.drvFeatures
		if f&^t.offeredFeatures() != 0 || f&FeatureVersion1 == 0 {
			v &^= StatusFeaturesOK
		}
	}
	if v&StatusDriverOK != 0 && v&StatusFeaturesOK == 0 {
		v &^= StatusDriverOK
	}
	t.status = v
	if v&^old&StatusDriverOK != 0 {
		if err := t.activate(nil); err != nil {
			t.needsReset(err)
		}
	}
}

// activate validates the ready queues and hands them to the device. With
// pos (a restored state, state.go) each queue starts at its saved ring
// positions instead of 0. Called with t.mu held.
func (t *MMIO) activate(pos []QueueState) error {
	maxes := t.dev.QueueMaxSizes()
	qs := make([]*Queue, len(t.queues))
	for i, r := range t.queues {
		if !r.ready {
			continue
		}
		q := NewQueue(t.mem, maxes[i])
		q.Size, q.Desc, q.Avail, q.Used, q.Ready = r.num, r.desc, r.driver, r.devc, true
		q.signal = func() { t.raise(InterruptUsedBuffer) }
		q.fail = t.needsReset
		if err := q.activate(t.drvFeatures&FeatureIndirectDesc != 0); err != nil {
			return err
		}
		if pos != nil {
			if err := q.setPositions(pos[i].LastAvail, pos[i].UsedIdx); err != nil {
				return fmt.Errorf("queue %d: %w", i, err)
			}
		}
		qs[i] = q
	}
	if err := t.dev.Activate(qs, t.drvFeatures); err != nil {
		return err
	}
	t.qs = qs
	t.active.Store(true)
	return nil
}

// reset is the device reset triggered by writing 0 to Status (§4.2.2.1).
func (t *MMIO) reset() {
	t.active.Store(false)
	t.dev.Reset()
	t.qs = nil
	for i := range t.notified {
		t.notified[i].Store(false)
	}
	t.status, t.devFeatSel, t.drvFeatSel, t.drvFeatures, t.queueSel = 0, 0, 0, 0, 0
	for i := range t.queues {
		t.queues[i] = queueRegs{}
	}
	t.isr.Store(0)
	t.broken.Store(nil)
}

// Close resets the device (stopping any work it does) as on a guest reset.
// It ends a pause: the device has no queues left to touch.
func (t *MMIO) Close() {
	t.opMu.Lock()
	defer t.opMu.Unlock()
	t.mu.Lock()
	t.reset()
	t.mu.Unlock()
	t.pauseMu.Lock()
	was := t.paused
	t.paused = false
	t.pauseMu.Unlock()
	if p, ok := t.dev.(pauser); was && ok {
		p.resume()
	}
}
