// This file owns network device slots and pausing. A VM template has one
// virtio-net device with no backend yet (NewNetSlot); the pod's tap is
// attached when a VM is restored from it (Attach). Pausing stops the
// receive goroutine filling the receiveq; the chains it holds for a frame
// in progress are given back to the restored device through the saved
// ring position (heldChains).

package virtio

import "fmt"

// netSlotFeatures is what a slot offers whatever backend it gets: what
// NewNet offers over a tap opened with IFF_VNET_HDR whose TUNSETOFFLOAD
// accepted every offload (OpenTap, AdoptTap). Fixed, so the features a
// template's driver negotiated stay valid with the pod's tap.
const netSlotFeatures = NetFMAC | NetFMTU | NetFStatus | NetFMrgRxbuf | netHostOffloads | netGuestOffloads

// NewNetSlot returns a network device without a backend: transmitted
// frames are dropped (counted in NetStats.TxDropped) and nothing is
// received until Attach. It offers MAC, MTU, STATUS, MRG_RXBUF and the
// checksum and TSO offloads both ways; the backend attached later must
// carry virtio_net_hdr (IFF_VNET_HDR) if the driver took CSUM or
// HOST_TSO4/6. Backend offloads the driver accepted but the backend
// lacks are simply not used (frames arrive fully checksummed, unsegmented).
func NewNetSlot(cfg NetConfig) (*Net, error) {
	d, err := newNet(cfg)
	if err != nil {
		return nil, err
	}
	d.slot = true
	d.offered = netSlotFeatures
	return d, nil
}

// NewNetSlotMMIO returns a network device slot behind an MMIO transport.
func NewNetSlotMMIO(mem *Memory, irq Interrupt, cfg NetConfig) (*MMIO, *Net, error) {
	d, err := NewNetSlot(cfg)
	if err != nil {
		return nil, nil, err
	}
	return NewMMIO(d, mem, irq), d, nil
}

// Attach gives a slot its backend and starts receiving; the device owns be
// from then on (Close closes it). On error be is left to the caller. It
// may be called
// before RestoreState (the restored driver's features are checked at
// activation) or on a running device, whose negotiated features it checks
// now: CSUM and HOST_TSO4/6 need a backend that takes virtio_net_hdr. The
// offloads the driver accepted are set on the backend as at activation.
func (d *Net) Attach(be NetBackend) error {
	if be == nil {
		return fmt.Errorf("virtio-net: Attach without a backend")
	}
	d.txMu.Lock()
	defer d.txMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case !d.slot:
		return fmt.Errorf("virtio-net: Attach on a device made by NewNet (not a slot)")
	case d.closed:
		return fmt.Errorf("virtio-net: Attach on a closed device")
	case d.be != nil:
		return fmt.Errorf("virtio-net: the slot already has a backend")
	}
	if d.txq != nil {
		if err := d.backendTakes(be, d.features); err != nil {
			return err
		}
	}
	d.be, d.vnet = be, be.VnetHdr()
	if d.vnet {
		d.curOffloads = be.GuestOffloads() & netGuestOffloads
	}
	if d.txq != nil {
		d.narrowOffloads(d.features)
	}
	d.wg.Add(1)
	go d.rxLoop(be, d.vnet)
	d.cond.Broadcast()
	return nil
}

// backendTakes checks that be (nil: none yet) can carry what the driver
// negotiated in f: the guest's partial checksums and TSO frames
// (§5.1.6.2) go to the backend as they are, which needs virtio_net_hdr.
func (d *Net) backendTakes(be NetBackend, f uint64) error {
	if be == nil || be.VnetHdr() {
		return nil
	}
	if h := f & netHostOffloads; h != 0 {
		return fmt.Errorf("virtio-net: the driver negotiated checksum/TSO offloads %#x (CSUM, HOST_TSO4/6) but the backend carries no virtio_net_hdr (a tap needs IFF_VNET_HDR)", h)
	}
	return nil
}

// Backed reports whether the device has a backend (a slot before Attach
// has none).
func (d *Net) Backed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.be != nil
}

// pause stops frames reaching the receiveq: the receive goroutine keeps
// the frame it holds and waits. Chains it took for that frame stay
// taken; if they are not the last ones popped (a malformed chain was
// returned after them) they cannot be given back by rewinding the saved
// ring position, so they are returned now, empty (Linux's virtio_net
// counts a length error and reposts them), and the frame is delivered
// into fresh buffers after Resume.
func (d *Net) pause() {
	d.txMu.Lock() // processTx checks paused under txMu, deliver under mu
	defer d.txMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = true
	if q := d.rxq; q != nil && len(d.pending) > 0 && q.lastAvail-d.pendingFrom != uint16(len(d.pending)) {
		for _, c := range d.pending {
			if q.Push(c.Head, 0) != nil {
				break
			}
		}
		q.Interrupt()
		d.pending, d.pendingLen = nil, 0
	}
}

func (d *Net) resume() {
	d.txMu.Lock()
	defer d.txMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = false
	d.cond.Broadcast()
}

// heldChains is how many chains of queue qi the device holds (popped, not
// used): the receiveq's chains of a frame waiting for more buffers, the
// last ones popped (pause made sure). Called while paused.
func (d *Net) heldChains(qi int) uint16 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if qi != netRxQ || d.rxq == nil {
		return 0
	}
	return uint16(len(d.pending))
}
