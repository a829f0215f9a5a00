// This file owns the pod state machine: the phases a pod goes through, the
// transitions allowed between them, and setPhase, the one place a pod's
// phase changes. (Container phases are the original's four strings below;
// they have no machine of their own.)

package pod

// Pod states as the daemon tracks them (PodRecord.State). The original's
// list statuses and info phases are derived from these (see listStatus and
// PodRecord.Phase).
const (
	StatePending  = "pending"  // created, never started (or being started)
	StateRunning  = "running"  // sandbox up
	StatePaused   = "paused"   // sandbox paused
	StateStopping = "stopping" // being stopped
	StateStopped  = "stopped"  // sandbox gone; Phase says Succeeded or Failed
)

// Container phases (the original's).
const (
	PhasePending   = "pending"
	PhaseRunning   = "running"
	PhaseSucceeded = "succeeded"
	PhaseFailed    = "failed"
)

// podPhase is where a pod is in its life. A pod record keeps it in two
// fields: State (the daemon's: pending, running, paused, stopping,
// stopped) and Phase (the original hyperd's, which /pod/info reports:
// Pending, Running, Paused, Succeeded, Failed). podPhase is the pair;
// phaseOf reads it and setPhase, the only writer, writes both.
//
//	             CreatePod
//	                 │
//	                 ▼
//	┌───────────► pending ◄──┐ StartPod of a created pod
//	│                │ ──────┘
//	│                │ its containers started
//	│                ▼
//	│             running ◄────► paused
//	│   StopPod,     │              │
//	│   the last     ├──────────────┤  StopPodKeepSandbox (the outcome
//	│   container    │              │  of the stop; the sandbox is kept
//	│   exited       ▼              │  idle), sandbox died or powered
//	│            stopping           │  off, restart could not reattach
//	│                │ sandbox      │
//	│                │ stopped      │
//	│                ▼              ▼
//	└─────────  succeeded / failed  ◄──── pending: start failed, sandbox
//	 StartPod      │        ▲              died, restart found it booting
//	               ▼        │
//	           stopping ────┘  StopPod (stopVM=yes) of a pod whose
//	                           sandbox idles: back to its outcome
//
// The same, as a table (podTransitions): every phase change is one of
//
//	""        → pending                        CreatePod
//	pending   → pending                        StartPod of a created pod
//	pending   → running                        its containers started
//	pending   → failed                         start failed; sandbox died; restart found it booting
//	pending   → succeeded                      a reused kept sandbox powered off, nothing running
//	running   → paused                         (no driver pauses today)
//	running   → stopping                       StopPod; the last container exited
//	running   → succeeded, failed              StopPodKeepSandbox (sandbox kept idle); sandbox died or powered off; restart lost it
//	paused    → running, stopping, succeeded, failed   as from running
//	stopping  → succeeded, failed              the sandbox stopped; restart found it stopping
//	succeeded → pending, stopping, failed      StartPod; StopPod of a kept sandbox; a late failure
//	failed    → pending, stopping, failed      the same
//
// Anything else is refused (setPhase logs it at error level and leaves the
// record as it was). Whether a stopped pod's sandbox is kept idle is the
// record's SandboxKept, not a phase of its own: such a pod is succeeded or
// failed like any stopped pod (see sandboxIdles).
type podPhase string

const (
	podNone      podPhase = "" // a record not yet created
	podPending   podPhase = "pending"
	podRunning   podPhase = "running"
	podPaused    podPhase = "paused"
	podStopping  podPhase = "stopping"
	podSucceeded podPhase = "succeeded"
	podFailed    podPhase = "failed"
)

var podTransitions = map[podPhase][]podPhase{
	podNone:      {podPending},
	podPending:   {podPending, podRunning, podFailed, podSucceeded},
	podRunning:   {podPaused, podStopping, podSucceeded, podFailed},
	podPaused:    {podRunning, podStopping, podSucceeded, podFailed},
	podStopping:  {podSucceeded, podFailed},
	podSucceeded: {podPending, podStopping, podFailed},
	podFailed:    {podPending, podStopping, podFailed},
}

// can reports whether a pod may go from p to to.
func (p podPhase) can(to podPhase) bool {
	for _, t := range podTransitions[p] {
		if t == to {
			return true
		}
	}
	return false
}

// record is how the phase is written into a PodRecord: its State and its
// Phase ("" for stopping, which keeps the Phase the pod had: Running, or
// the outcome of the stop that kept its sandbox).
func (p podPhase) record() (state, phase string) {
	switch p {
	case podPending:
		return StatePending, "Pending"
	case podRunning:
		return StateRunning, "Running"
	case podPaused:
		return StatePaused, "Paused"
	case podStopping:
		return StateStopping, ""
	case podSucceeded:
		return StateStopped, "Succeeded"
	case podFailed:
		return StateStopped, "Failed"
	}
	return "", ""
}

// phaseOf reads a record's phase. A stopped record whose Phase is not
// Succeeded is failed.
func phaseOf(r *PodRecord) podPhase {
	switch r.State {
	case StatePending:
		return podPending
	case StateRunning:
		return podRunning
	case StatePaused:
		return podPaused
	case StateStopping:
		return podStopping
	case StateStopped:
		return outcome(r.Phase)
	}
	return podNone
}

// outcome is the stopped phase a record's Phase names: succeeded or failed.
func outcome(phase string) podPhase {
	if phase == "Succeeded" {
		return podSucceeded
	}
	return podFailed
}

// sandboxIdles: the pod is stopped but its sandbox is kept, idle, for the
// next start (StopPodKeepSandbox).
func (r *PodRecord) sandboxIdles() bool { return r.SandboxKept && r.State == StateStopped }

// setPhase moves the pod to phase to with reason and msg (the record's
// Reason and Message). An illegal transition is refused: logged at error
// level, the record left as it was, false returned. Caller holds d.mu and
// saves the record.
func (d *Daemon) setPhase(p *podState, to podPhase, reason, msg string) bool {
	from := phaseOf(&p.rec)
	if !from.can(to) {
		d.log.Error("pod phase: illegal transition refused", "pod", p.rec.ID, "from", string(from), "to", string(to),
			"reason", reason, "msg", msg)
		return false
	}
	state, phase := to.record()
	p.rec.State = state
	if phase != "" {
		p.rec.Phase = phase
	}
	p.rec.Reason, p.rec.Message = reason, msg
	return true
}
