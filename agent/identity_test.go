package agent

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"golang.org/x/sys/unix"
)

func TestClockStep(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		host time.Time
		step bool
	}{
		{"same", now, false},
		{"host slightly ahead", now.Add(999 * time.Millisecond), false},
		{"host slightly behind", now.Add(-999 * time.Millisecond), false},
		{"host a slack ahead", now.Add(protocol.ClockSlack), true},
		{"host a slack behind", now.Add(-protocol.ClockSlack), true},
		{"template clock hours old", now.Add(5 * time.Hour), true},
		{"guest in the future", now.Add(-48 * time.Hour), true},
	} {
		if got := clockStep(now, tt.host); got != tt.step {
			t.Errorf("%s: clockStep = %v, want %v", tt.name, got, tt.step)
		}
	}
}

func TestRNGPlan(t *testing.T) {
	for _, tt := range []struct {
		name             string
		last, gen        uint64
		entropy          int
		wantAdd, wantRes bool
	}{
		{"nothing given", 0, 0, 0, false, false},
		{"entropy without generation", 0, 0, 64, true, true},
		{"entropy without generation, again", 7, 0, 64, true, true},
		{"first generation with entropy (a restored template)", 0, 1, 64, true, true},
		{"new generation with entropy", 1, 2, 64, true, true},
		{"new generation without entropy", 1, 2, 0, false, true},
		{"generation going back is new too", 5, 3, 0, false, true},
		{"same generation again with entropy", 2, 2, 64, false, false},
		{"same generation again without entropy", 2, 2, 0, false, false},
	} {
		add, reseed := rngPlan(tt.last, tt.gen, tt.entropy)
		if add != tt.wantAdd || reseed != tt.wantRes {
			t.Errorf("%s: rngPlan(%d, %d, %d) = add %v reseed %v, want %v %v", tt.name, tt.last, tt.gen, tt.entropy, add, reseed, tt.wantAdd, tt.wantRes)
		}
	}
}

func TestValidateIdentity(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    protocol.PodSetup
		owns bool
		err  string // substring of the bad_request message, "" = valid
	}{
		{"nothing, local", protocol.PodSetup{}, false, ""},
		{"nothing, vm", protocol.PodSetup{}, true, ""},
		{"generation only, local", protocol.PodSetup{Generation: 3}, false, ""},
		{"all, vm", protocol.PodSetup{Time: 1, Entropy: make([]byte, 64), Generation: 3}, true, ""},
		{"most entropy", protocol.PodSetup{Entropy: make([]byte, protocol.EntropyMax)}, true, ""},
		{"too much entropy", protocol.PodSetup{Entropy: make([]byte, protocol.EntropyMax+1)}, true, "at most"},
		{"negative time", protocol.PodSetup{Time: -1}, true, "bad time"},
		{"time, local", protocol.PodSetup{Time: 1}, false, "owns its machine"},
		{"entropy, local", protocol.PodSetup{Entropy: []byte{1}}, false, "owns its machine"},
	} {
		perr := validateIdentity(tt.p, tt.owns)
		switch {
		case tt.err == "" && perr != nil:
			t.Errorf("%s: %v", tt.name, perr)
		case tt.err != "" && (perr == nil || perr.Code != protocol.CodeBadRequest || !strings.Contains(perr.Message, tt.err)):
			t.Errorf("%s: %v, want bad_request with %q", tt.name, perr, tt.err)
		}
	}
}

func TestRandPoolInfo(t *testing.T) {
	data := []byte{1, 2, 3, 4, 5}
	b := randPoolInfo(data, 40)
	if len(b) != 8+len(data) {
		t.Fatalf("%d bytes, want %d", len(b), 8+len(data))
	}
	if c, n := int32(binary.NativeEndian.Uint32(b)), int32(binary.NativeEndian.Uint32(b[4:])); c != 40 || n != 5 {
		t.Errorf("entropy_count %d buf_size %d, want 40 5", c, n)
	}
	if !bytes.Equal(b[8:], data) {
		t.Errorf("buf %x, want %x", b[8:], data)
	}
}

// The ioctls against this host's kernel RNG: a few crypto/rand bytes
// mixed in without credit, a reseed (harmless: the CRNG reseeds from its
// pool on its own schedule anyway), and a device that is not the RNG.
func TestRNGIoctls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (RNDADDENTROPY and RNDRESEEDCRNG need CAP_SYS_ADMIN): run the agent tests as root")
	}
	b := make([]byte, 16)
	rand.Read(b)
	if err := addEntropy(randomDev, b, 0); err != nil {
		t.Errorf("addEntropy: %v", err)
	}
	if err := reseedCRNG(randomDev); err != nil {
		t.Errorf("reseedCRNG: %v", err)
	}
	if err := addEntropy("/dev/null", b, 0); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("addEntropy on /dev/null: %v, want ENOTTY", err)
	}
	if err := reseedCRNG("/dev/null"); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("reseedCRNG on /dev/null: %v, want ENOTTY", err)
	}
}

// podSetup in an agent that owns its machine: the host's time (here the
// machine's own, so the clock is left alone), entropy and generations.
// The entropy is 4 crypto/rand bytes: this runs against the host's RNG.
func TestPodSetupIdentity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (RNDADDENTROPY and RNDRESEEDCRNG need CAP_SYS_ADMIN): run the agent tests as root")
	}
	s := &Server{cfg: Config{PowerOff: func() {}}}
	e := make([]byte, 4)
	rand.Read(e)
	for i, step := range []struct {
		p       protocol.PodSetup
		wantGen uint64
	}{
		{protocol.PodSetup{Time: time.Now().UnixNano(), Entropy: e, Generation: 1}, 1},
		{protocol.PodSetup{Time: time.Now().UnixNano(), Entropy: e, Generation: 1}, 1}, // a repeat
		{protocol.PodSetup{Generation: 2}, 2},
		{protocol.PodSetup{Entropy: e}, 2},
	} {
		before := time.Now()
		if perr := s.podSetup(step.p); perr != nil {
			t.Fatalf("setup %d: %v", i, perr)
		}
		if d := time.Since(before); d < 0 || d > 5*time.Second {
			t.Errorf("setup %d: the clock moved by %v", i, d)
		}
		if s.id.gen != step.wantGen {
			t.Errorf("setup %d: generation %d, want %d", i, s.id.gen, step.wantGen)
		}
	}
}

// A local-mode agent (no PowerOff: it runs on the host) refuses Time and
// Entropy before changing anything, and ignores a Generation.
func TestPodSetupIdentityLocal(t *testing.T) {
	host, _ := os.Hostname()
	for _, p := range []protocol.PodSetup{
		{Hostname: "must-not-be-set", Time: time.Now().Add(time.Hour).UnixNano()},
		{Hostname: "must-not-be-set", Entropy: []byte{1, 2, 3, 4}},
	} {
		s := &Server{}
		perr := s.podSetup(p)
		if perr == nil || perr.Code != protocol.CodeBadRequest || !strings.Contains(perr.Message, "owns its machine") {
			t.Errorf("%+v: %v, want bad_request", p, perr)
		}
		if now, _ := os.Hostname(); now != host {
			t.Fatalf("the refused setup set the hostname to %q", now)
		}
	}
	s := &Server{}
	if perr := s.podSetup(protocol.PodSetup{Generation: 9}); perr != nil {
		t.Errorf("generation only: %v", perr)
	}
	if s.id.gen != 0 {
		t.Errorf("a local agent recorded generation %d", s.id.gen)
	}
}
