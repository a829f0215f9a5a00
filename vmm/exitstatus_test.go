package vmm

import "testing"

func TestExitStatuses(t *testing.T) {
	seen := map[int]StopReason{}
	for _, r := range []StopReason{StopPoweroff, StopReset, StopTripleFault, StopCrash, StopKilled, StopError, StopSnapshot} {
		s := r.ExitStatus()
		if s == 1 || s == 2 {
			t.Errorf("%s exits %d, which is reserved for unexpected/usage errors", r, s)
		}
		if o, dup := seen[s]; dup {
			t.Errorf("%s and %s both exit %d", r, o, s)
		}
		seen[s] = r
		if back, ok := StopReasonOf(s); !ok || back != r {
			t.Errorf("StopReasonOf(%d) = %q, %v; want %s", s, back, ok, r)
		}
	}
	if StopPoweroff.ExitStatus() != 0 {
		t.Error("a powered-off guest must exit 0")
	}
	if _, ok := StopReasonOf(2); ok {
		t.Error("status 2 (usage) maps to a stop reason")
	}
}
