// This file owns the socket device's pause and snapshot restore.
// Connections cannot survive a snapshot (their host ends are sockets of
// another process), so a saved vsock holds no connection state, and a
// restored one tells the guest with VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
// (§5.10.6 "Device Events"; §5.10.6.1: the driver then resets its
// connections and re-reads guest_cid, which may have changed).

package virtio

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// pause stops every host goroutine (accept loop, CONNECT handling,
// connection readers and writers, connect timers) from touching the
// queues: they still run and queue packets, but processRx and processTx
// return at once. Data already read from a host socket waits.
func (v *Vsock) pause() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.paused = true
}

// resume delivers what the host side queued while paused.
func (v *Vsock) resume() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.paused = false
	v.processRx()
}

// restoring arms the restore work before the transport activates the
// device with the saved queues: the transport reset event is sent on the
// first event queue notification (RestoreState notifies every active
// queue), and until the driver handled it nothing goes to the rx queue.
// Otherwise a host connection made right after the restore could reach the
// guest before the reset and be dropped by it: Linux handles the rx and
// event queues in separate work items, rx first.
func (v *Vsock) restoring() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.resetPending, v.rxHeld = true, true
}

// activatedAfterRestore gives up the restore work when the driver did
// not enable the event queue: the reset cannot be sent. Called from
// Activate with v.mu held.
func (v *Vsock) activatedAfterRestore() {
	if v.resetPending && v.queue(vsockEvQ) == nil {
		v.logf("restored without an event queue: no transport reset sent, old guest connections stay until they time out")
		v.endRestore()
	}
}

// eventNotified handles an event queue notification. The first one after
// a restore sends the transport reset event; the next one means the
// driver handled it (Linux's virtio_transport_event_work re-posts the
// buffer and kicks after handling the event), so host packets may flow.
// A driver that never kicks gets host packets after resetAckWait.
// Called with v.mu held.
func (v *Vsock) eventNotified() {
	switch {
	case v.paused:
	case v.resetPending:
		// No connection is dropped: this device's connections were all
		// made after the restore (a host CONNECT may race it), none of
		// the guest's old ones exists here.
		if err := v.sendResetEvent(false); err != nil {
			v.logf("restore: %v; retrying at the next event queue notification", err)
			return
		}
		v.resetPending = false
		v.restoredAt = time.Now()
		v.releaseTimer = time.AfterFunc(v.resetAckWait(), v.releaseRx)
	case v.rxHeld:
		if v.restoredAt != (time.Time{}) {
			v.logf("restore: the guest handled the transport reset after %v", time.Since(v.restoredAt).Round(time.Millisecond))
		}
		v.endRestore()
		v.processRx()
	}
}

// resetAckWait bounds the wait for the driver to handle the transport
// reset: half ConnectTimeout, so host connections waiting meanwhile do not
// time out. A loaded host (the nested runner's TCG) has been measured to
// take over a second to run the guest's event work after a restore, and a
// REQUEST released before it is wiped by the reset (or refused, when the
// CID changed): the host dials again.
func (v *Vsock) resetAckWait() time.Duration {
	return v.cfg.ConnectTimeout / 2
}

// releaseRx ends the wait for the driver to handle the transport reset.
func (v *Vsock) releaseRx() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.rxHeld && !v.resetPending {
		v.logf("restore: the guest did not handle the transport reset within %v; sending host packets anyway", v.resetAckWait())
		v.endRestore()
		v.processRx()
	}
}

// endRestore forgets any restore work left. Called with v.mu held.
func (v *Vsock) endRestore() {
	v.resetPending, v.rxHeld = false, false
	if v.releaseTimer != nil {
		v.releaseTimer.Stop()
		v.releaseTimer = nil
	}
}

// sendResetEvent puts VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (struct
// virtio_vsock_event { le32 id; }, §5.10.6) in the next event buffer and
// raises the interrupt; with drop it also drops every connection. Called
// with v.mu held.
func (v *Vsock) sendResetEvent(drop bool) error {
	q := v.queue(vsockEvQ)
	if q == nil {
		return errors.New("virtio-vsock: event queue not active")
	}
	c := q.Next()
	if c == nil {
		return errors.New("virtio-vsock: no event buffer posted")
	}
	var ev [4]byte
	binary.LittleEndian.PutUint32(ev[:], VsockEventTransportReset)
	w := c.Writer()
	w.Write(ev[:])
	err := q.PushChain(c, w.Written())
	q.Interrupt()
	if drop {
		v.dropAll()
	}
	return err
}

// The device's own state is the next host port it hands out to a
// host-initiated connection (le32). A restored device continues from it:
// the guest may still hold sockets of connections the snapshot's device
// made (one the guest was closing sends its RST when its close timeout
// fires, seconds after the restore), and a new connection on a reused
// host port would be taken for it, and reset.
const vsockStateSize = 4

func (v *Vsock) saveDevice() []byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	b := make([]byte, vsockStateSize)
	binary.LittleEndian.PutUint32(b, v.nextPort)
	return b
}

func (v *Vsock) checkDevice(b []byte) error {
	if len(b) == 0 {
		return nil // a state without it: ports start at the first
	}
	if len(b) != vsockStateSize {
		return fmt.Errorf("vsock state of %d bytes, want %d", len(b), vsockStateSize)
	}
	return nil
}

// loadDevice continues from the saved port unless a host connection
// already took one (a CONNECT can race the restore): then the device's
// random first port (firstHostPort) keeps it clear of the saved device's.
func (v *Vsock) loadDevice(b []byte) {
	if len(b) != vsockStateSize {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if p := binary.LittleEndian.Uint32(b); p >= vsockFirstHostPort && len(v.conns) == 0 {
		v.nextPort = p
	}
}

// firstHostPort is where a device starts handing out host ports: a
// random point in the upper quarter of the port space (2^30 and up, as
// Firecracker's), so that two devices of one guest - a snapshot's and the
// one restored from it - do not hand out the same ports.
func firstHostPort() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return vsockFirstHostPort + binary.LittleEndian.Uint32(b[:])%(1<<29)
}
