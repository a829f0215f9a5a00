// Tests of fault.go: which L1 console lines are a kernel crash report, and
// which suite failures are void.

package nested

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCrashLines(t *testing.T) {
	for _, tc := range []struct {
		name, console, want string
	}{
		{"quiet", "[   24.005770] kvm [211]: vcpu0, guest rIP: 0xffffffff81073744 Unhandled WRMSR(0xc0010007) = 0xffff\n", ""},
		{"stack guard (CI, 2026-12-01)",
			"[  597.160415] kvm [1241]: vcpu0, guest rIP: 0xffffffff81073744 Unhandled WRMSR(0xc0010007) = 0xffff\n" +
				"[  839.681249] BUG: TASK stack guard page was hit at 00000000283d2ec2 (stack is 000000006e8c038c..00000000bdd7b6b0)\n" +
				"[  839.681249] stack guard page: 0000 [#1] PREEMPT SMP NOPTI\n" +
				"[  839.694789] RIP: 0010:exc_page_fault+0x1e/0x170\n" +
				"[  839.703727] Kernel panic - not syncing: corrupted stack end detected inside scheduler\n",
			"[  839.681249] BUG: TASK stack guard page was hit at 00000000283d2ec2 (stack is 000000006e8c038c..00000000bdd7b6b0)\n" +
				"[  839.703727] Kernel panic - not syncing: corrupted stack end detected inside scheduler"},
		{"oops", "[ 12.5] Oops: 0000 [#1] SMP\n[ 12.6] RIP: 0010:x\n", "[ 12.5] Oops: 0000 [#1] SMP"},
		{"gpf", "[ 3.0] general protection fault, probably for non-canonical address\n", "[ 3.0] general protection fault, probably for non-canonical address"},
		{"mid-line is not a report", "l1init: hyperd said BUG: nothing\n", ""},
	} {
		if got := crashLines(tc.console); got != tc.want {
			t.Errorf("%s: crashLines =\n%q\nwant\n%q", tc.name, got, tc.want)
		}
	}
}

func TestEmulatorFault(t *testing.T) {
	lost := fmt.Errorf("nested: x: %w: vCPU 1 halted", ErrLostInterrupt)
	for _, tc := range []struct {
		name  string
		err   error
		crash string
		want  string // substring; "" = the failure stands
	}{
		{"test failure", nil, "", ""},
		{"plain hang", fmt.Errorf("nested: x: %w", ErrHung), "", ""},
		{"other error", errors.New("exit 1"), "", ""},
		{"lost interrupt", lost, "", "L1 stopped"},
		{"crash", nil, "[ 1.0] Kernel panic - not syncing: x", "L1's kernel crashed"},
	} {
		got := emulatorFault(tc.err, tc.crash)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: emulatorFault = %q, want %q", tc.name, got, tc.want)
		}
	}
}
