package guest

import (
	"crypto/rand"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// TestGuestIdentity boots a VM of its own and gives it the identity a VM
// restored from a template gets from its setup (agent/identity.go): the
// guest's wall clock is set from the setup's time (an hour ahead of the
// host here, then back: only the guest's clock moves), the host's entropy
// goes into the guest kernel's RNG and its CRNG is reseeded, again for a
// new generation, and a repeated setup succeeds.
func TestGuestIdentity(t *testing.T) {
	v := bootVM(t, randomHex(8))
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(v.diag())
		}
	})
	p := &pod{a: v.agent}
	entropy := make([]byte, 64)
	rand.Read(entropy)
	// guestNow is the guest's wall clock as a container sees it.
	n := 0
	guestNow := func(t *testing.T) time.Time {
		t.Helper()
		n++
		out, errOut, code := p.sh(t, "clock"+strconv.Itoa(n), "date +%s")
		if code != 0 {
			t.Fatalf("date: exit %d: %s", code, errOut)
		}
		s, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if err != nil {
			t.Fatalf("date: %q", out)
		}
		return time.Unix(s, 0)
	}
	// under TCG a container start takes seconds
	const slack = 60 * time.Second
	near := func(got, want time.Time) bool { d := got.Sub(want); return d > -slack && d < slack }

	ahead := time.Now().Add(time.Hour)
	steps := []struct {
		name  string
		setup protocol.PodSetup
		clock time.Time // the guest's clock after it, zero: not checked
	}{
		{"time an hour ahead, entropy, generation 1", protocol.PodSetup{Hostname: podHostname, Time: ahead.UnixNano(), Entropy: entropy, Generation: 1}, ahead},
		{"the same setup again", protocol.PodSetup{Hostname: podHostname, Time: time.Now().Add(time.Hour).UnixNano(), Entropy: entropy, Generation: 1}, time.Time{}},
		{"a new generation without entropy", protocol.PodSetup{Generation: 2}, time.Time{}},
		{"time back to the host's", protocol.PodSetup{Time: time.Now().UnixNano()}, time.Now()},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) {
			if err := p.a.Setup(ctx(t), s.setup); err != nil {
				t.Fatalf("setup: %v", err)
			}
			if !s.clock.IsZero() {
				if got := guestNow(t); !near(got, s.clock) {
					t.Errorf("guest clock %s after the setup, want about %s", got.UTC(), s.clock.UTC())
				}
			}
		}) {
			break
		}
	}
	t.Run("refused entropy", func(t *testing.T) {
		err := p.a.Setup(ctx(t), protocol.PodSetup{Entropy: make([]byte, protocol.EntropyMax+1)})
		if err == nil || !strings.Contains(err.Error(), "bad_request") {
			t.Errorf("too much entropy: %v, want bad_request", err)
		}
	})
	t.Run("agent quiet", func(t *testing.T) { testInit(t, v) })
	t.Run("shutdown", func(t *testing.T) { testShutdown(t, v, p) })
}
