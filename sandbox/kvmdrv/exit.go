// This file owns why a VM process ended: its exit status, or the stop line
// and console tail its VMM left in the console log.

package kvmdrv

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/hyperhq/hyperd-go/internal/consolelog"
	"github.com/hyperhq/hyperd-go/sandbox"
	"github.com/hyperhq/hyperd-go/vmm"
)

// stoppedLine is what `hyperd vm run` writes (to the console log) when the
// guest stops: "hyperd vm run: guest stopped: <reason>[: detail] (...)".
var stoppedLine = regexp.MustCompile(`hyperd vm run: guest stopped: ([a-z-]+)`)

// exitError says why a VM process ended: from its exit status when the VM
// was our child (waitErr is cmd.Wait's result, known is false for a VM of
// a previous daemon, found gone by polling), else from the stop line its
// VMM wrote to the console log. A reset whose console shows a kernel panic
// is a panic (the guest runs with panic=-1).
func exitError(waitErr error, known bool, console string) *sandbox.ExitError {
	var reason vmm.StopReason
	how := ""
	if known {
		var ee *exec.ExitError
		switch {
		case waitErr == nil:
			reason, how = vmm.StopPoweroff, "exit status 0"
		case errors.As(waitErr, &ee):
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				reason, how = vmm.StopKilled, "killed by "+ws.Signal().String()
			} else {
				how = waitErr.Error()
				if r, ok := vmm.StopReasonOf(ee.ExitCode()); ok {
					reason = r
				}
			}
		default:
			how = waitErr.Error()
		}
	}
	log := consoleEnd(console, 256<<10)
	vmmOut := filepath.Join(filepath.Dir(console), vmmLog)
	// the stop line is in the console log, and copied to the process's
	// own output (which alone has it if the console log could not be written)
	inConsole := false
	for i, s := range []string{log, consoleEnd(vmmOut, 64<<10)} {
		if m := stoppedLine.FindAllStringSubmatch(s, -1); m != nil {
			inConsole = inConsole || i == 0
			if reason == "" {
				reason = vmm.StopReason(m[len(m)-1][1])
			}
		}
	}
	e := &sandbox.ExitError{}
	switch reason {
	case vmm.StopPoweroff:
		e.Reason, how = sandbox.ExitPoweroff, "the guest powered off ("+how+")"
	case vmm.StopReset:
		e.Reason, how = sandbox.ExitReset, "the guest rebooted ("+how+")"
		if strings.Contains(log, "Kernel panic - not syncing") {
			e.Reason, how = sandbox.ExitPanic, "the guest kernel panicked ("+how+")"
		}
	case vmm.StopTripleFault, vmm.StopCrash:
		e.Reason, how = sandbox.ExitCrash, "the guest crashed: "+string(reason)+" ("+how+")"
	case vmm.StopKilled:
		e.Reason, how = sandbox.ExitKilled, "the VM was stopped from outside ("+how+")"
	default:
		e.Reason = sandbox.ExitVMM
		switch {
		case reason != "":
			how = "the VMM failed: " + string(reason) + " (" + how + ")"
		case how != "":
			how = "the VM process failed (" + how + ")"
		default:
			how = "the VM process ended without saying why (killed, or its VMM crashed)"
		}
	}
	e.Detail = fmt.Sprintf("VM stopped: %s; console tail:\n%s", how, tail(console, 20))
	if !inConsole {
		// the VMM did not get to say why: what the process itself said
		// (a Go panic, a setup error before the console log was open)
		if s := strings.TrimSpace(consoleEnd(vmmOut, 4<<10)); s != "" {
			e.Detail += "\nVM process output:\n" + tail(vmmOut, 20)
		}
	}
	return e
}

// consoleEnd returns the last n bytes of the console log (its rotated
// half included).
func consoleEnd(path string, n int64) string {
	b, _ := consolelog.Tail(path, n)
	return string(b)
}
