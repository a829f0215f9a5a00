package kvmdrv

import (
	"bytes"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// podSetup gives every VM the host's time and entropy of its own, beside
// the pod's hostname, DNS and network.
func TestPodSetupIdentity(t *testing.T) {
	cfg := sandbox.Config{Hostname: "h", DNS: []string{"10.0.0.1"},
		Network: &sandbox.Network{Interfaces: []sandbox.Interface{{Name: "eth0", MAC: "02:00:00:00:00:01", Addrs: []string{"10.0.0.2/24"}}}}}
	before := time.Now()
	a := podSetup(cfg)
	b := podSetup(cfg)
	after := time.Now()
	if a.Hostname != "h" || len(a.DNS) != 1 || len(a.Interfaces) != 1 || a.Interfaces[0].MAC != "02:00:00:00:00:01" {
		t.Errorf("pod part: %+v", a)
	}
	for _, ps := range []protocol.PodSetup{a, b} {
		if ps.Time < before.UnixNano() || ps.Time > after.UnixNano() {
			t.Errorf("time %d, want between %d and %d", ps.Time, before.UnixNano(), after.UnixNano())
		}
		if len(ps.Entropy) != podSetupEntropy || len(ps.Entropy) > protocol.EntropyMax {
			t.Errorf("%d bytes of entropy, want %d", len(ps.Entropy), podSetupEntropy)
		}
		if ps.Generation != 0 {
			t.Errorf("generation %d: the caller sets it", ps.Generation)
		}
	}
	if bytes.Equal(a.Entropy, b.Entropy) || bytes.Equal(a.Entropy, make([]byte, podSetupEntropy)) {
		t.Errorf("entropy %x then %x: want fresh random bytes each time", a.Entropy, b.Entropy)
	}
}
