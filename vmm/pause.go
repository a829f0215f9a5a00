// This file owns pausing a running machine: every vCPU thread parked
// outside KVM_RUN with its last I/O exit completed, so the vCPU and
// irqchip state read by a snapshot is consistent, then resumed.

package vmm

import (
	"errors"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/kvm"
)

// pauser parks vCPU threads on request.
type pauser struct {
	mu      sync.Mutex
	cond    *sync.Cond // parked changed, or the request was withdrawn
	request bool
	parked  int
}

func (p *pauser) init() {
	if p.cond == nil {
		p.cond = sync.NewCond(&p.mu)
	}
}

// park holds the calling vCPU thread while a pause is requested. A kick
// without a pause request (Stop, or a Resume that came first) only clears
// the kick.
func (c *core) park(v *kvm.VCPU) {
	p := &c.pause
	p.mu.Lock()
	p.init()
	if p.request {
		p.parked++
		p.cond.Broadcast()
		for p.request && !c.stopping.Load() {
			p.cond.Wait()
		}
		p.parked--
		p.cond.Broadcast()
	}
	p.mu.Unlock()
	if !c.stopping.Load() {
		v.ClearKick()
	}
}

// errPauseStopped is returned by Pause when the machine stopped meanwhile.
var errPauseStopped = errors.New("vmm: the machine stopped while pausing")

// Pause stops every vCPU outside the guest and waits until all are
// parked (or the machine stops, or timeout passes). The vCPUs' state can
// then be read and set from any goroutine; Resume lets them run again.
func (c *core) Pause(timeout time.Duration) error {
	p := &c.pause
	p.mu.Lock()
	p.init()
	p.request = true
	p.mu.Unlock()
	// Kick until each vCPU has parked: a kick that lands between a vCPU's
	// check of immediate_exit and its entry is caught by the next one.
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		n := p.parked
		p.mu.Unlock()
		if n == len(c.vcpus) {
			return nil
		}
		if c.stopping.Load() {
			c.Resume()
			return errPauseStopped
		}
		if time.Now().After(deadline) {
			c.Resume()
			return errors.New("vmm: the vCPUs did not stop within " + timeout.String())
		}
		for _, v := range c.vcpus {
			v.Kick()
		}
		p.mu.Lock()
		if p.parked < len(c.vcpus) {
			// woken by a parking vCPU, or by the ticker below
			t := time.AfterFunc(10*time.Millisecond, func() {
				p.mu.Lock()
				p.cond.Broadcast()
				p.mu.Unlock()
			})
			p.cond.Wait()
			t.Stop()
		}
		p.mu.Unlock()
	}
}

// Resume lets parked vCPUs run again (stop calls it too: a stopping
// machine's parked vCPUs leave for good).
func (c *core) Resume() {
	p := &c.pause
	p.mu.Lock()
	p.init()
	p.request = false
	p.cond.Broadcast()
	p.mu.Unlock()
}
