package pod

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestPodTransitions: every edge of the machine drawn in phase.go is legal
// and every other one is refused.
func TestPodTransitions(t *testing.T) {
	all := []podPhase{podNone, podPending, podRunning, podPaused, podStopping, podSucceeded, podFailed}
	legal := map[[2]podPhase]bool{}
	for _, e := range [][2]podPhase{
		{podNone, podPending},
		{podPending, podPending},
		{podPending, podRunning},
		{podPending, podFailed},
		{podPending, podSucceeded},
		{podRunning, podPaused},
		{podRunning, podStopping},
		{podRunning, podSucceeded},
		{podRunning, podFailed},
		{podPaused, podRunning},
		{podPaused, podStopping},
		{podPaused, podSucceeded},
		{podPaused, podFailed},
		{podStopping, podSucceeded},
		{podStopping, podFailed},
		{podSucceeded, podPending},
		{podSucceeded, podStopping},
		{podSucceeded, podFailed},
		{podFailed, podPending},
		{podFailed, podStopping},
		{podFailed, podFailed},
	} {
		legal[e] = true
	}
	for _, from := range all {
		for _, to := range all {
			if got, want := from.can(to), legal[[2]podPhase{from, to}]; got != want {
				t.Errorf("%q → %q: can = %v, want %v", from, to, got, want)
			}
		}
	}
}

// TestSetPhase: setPhase writes a legal transition into the record's State
// and Phase, and refuses an illegal one loudly, leaving the record as it was.
func TestSetPhase(t *testing.T) {
	tests := []struct {
		name                 string
		state, phase         string // the record before
		to                   podPhase
		ok                   bool
		wantState, wantPhase string
	}{
		{"create", "", "", podPending, true, StatePending, "Pending"},
		{"start", StatePending, "Pending", podRunning, true, StateRunning, "Running"},
		{"restart a stopped pod", StateStopped, "Succeeded", podPending, true, StatePending, "Pending"},
		{"stop keeps the phase", StateRunning, "Running", podStopping, true, StateStopping, "Running"},
		{"stopped", StateStopping, "Running", podSucceeded, true, StateStopped, "Succeeded"},
		{"stop a kept sandbox", StateStopped, "Failed", podStopping, true, StateStopping, "Failed"},
		{"kept sandbox stopped: back to its outcome", StateStopping, "Failed", podFailed, true, StateStopped, "Failed"},
		{"stop keeping the sandbox", StateRunning, "Running", podFailed, true, StateStopped, "Failed"},
		{"start failed", StatePending, "Pending", podFailed, true, StateStopped, "Failed"},
		{"a late failure", StateStopped, "Succeeded", podFailed, true, StateStopped, "Failed"},
		{"restart lost it", StateStopping, "Running", podFailed, true, StateStopped, "Failed"},
		{"running again without a start", StateStopped, "Failed", podRunning, false, StateStopped, "Failed"},
		{"failed never succeeds", StateStopped, "Failed", podSucceeded, false, StateStopped, "Failed"},
		{"start while running", StateRunning, "Running", podPending, false, StateRunning, "Running"},
		{"start while stopping", StateStopping, "Running", podPending, false, StateStopping, "Running"},
		{"back to running while stopping", StateStopping, "Running", podRunning, false, StateStopping, "Running"},
		{"stop a pending pod", StatePending, "Pending", podStopping, false, StatePending, "Pending"},
		{"pause a pending pod", StatePending, "Pending", podPaused, false, StatePending, "Pending"},
		{"a record with no state fails", "", "", podFailed, false, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			d := &Daemon{log: slog.New(slog.NewTextHandler(&logs, nil))}
			p := &podState{rec: PodRecord{ID: "p", State: tc.state, Phase: tc.phase, Reason: "before", Message: "before"}}
			if got := d.setPhase(p, tc.to, "why", "what"); got != tc.ok {
				t.Fatalf("setPhase(%s/%s → %s) = %v, want %v", tc.state, tc.phase, tc.to, got, tc.ok)
			}
			if p.rec.State != tc.wantState || p.rec.Phase != tc.wantPhase {
				t.Errorf("record %s/%s, want %s/%s", p.rec.State, p.rec.Phase, tc.wantState, tc.wantPhase)
			}
			wantReason, wantMsg := "why", "what"
			if !tc.ok {
				wantReason, wantMsg = "before", "before"
			}
			if p.rec.Reason != wantReason || p.rec.Message != wantMsg {
				t.Errorf("reason %q message %q, want %q %q", p.rec.Reason, p.rec.Message, wantReason, wantMsg)
			}
			refused := strings.Contains(logs.String(), "level=ERROR") && strings.Contains(logs.String(), "illegal transition")
			if refused == tc.ok {
				t.Errorf("error logged: %v, want %v (%s)", refused, !tc.ok, logs.String())
			}
			if got := phaseOf(&p.rec); tc.ok && got != tc.to {
				t.Errorf("phaseOf after = %s, want %s", got, tc.to)
			}
		})
	}
}
